"""Input checks shared by every evaluation: ground truth, probability maps, regions.

The rule used everywhere (GUI, CLI, metrics): a pixel is foreground where
``probability > threshold``; the comparison is made in float32, the precision
of probability maps (a float64 map is converted to float32 first, so every
path of the product gives the same mask for the same threshold).

Ground truth is a binary mask or an instance-label image: foreground is
wherever it is non-zero. Floating-point ground truth is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError


def _shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_truth(truth: Any, shape: Sequence[int] | None = None, name: str = "ground truth") -> np.ndarray:
    """Validate a ground-truth array and return it as a numpy array (no copy when possible).

    Parameters
    ----------
    truth : array-like
        A binary mask (bool or integers) or instance labels (integer ids, 0 = background).
    shape : tuple of int, optional
        The shape it must have (the prediction's).
    name : str
        How to call it in messages.

    Raises
    ------
    InputError
        If it is missing, empty, not numeric, floating-point, or of another shape.
    """
    if truth is None:
        raise InputError(f"No {name} given: choose a labels layer or file with the true objects.")
    arr = np.asarray(truth)
    if arr.size == 0 or arr.ndim < 2:
        raise InputError(f"The {name} is empty or not an image (shape {_shape_text(arr.shape)}).")
    if arr.dtype.kind == "f" or arr.dtype.kind == "c":
        raise InputError(
            f"The {name} has floating-point pixels ({arr.dtype}); give a mask or integer "
            "instance labels (0 = background)."
        )
    if arr.dtype.kind not in "biu":
        raise InputError(f"The {name} has pixel type {arr.dtype}; give a mask or integer labels.")
    if shape is not None and tuple(arr.shape) != tuple(shape):
        raise InputError(
            f"The {name} has shape {_shape_text(arr.shape)} but the prediction has shape "
            f"{_shape_text(shape)}; they must be equal (nothing is cropped or broadcast)."
        )
    return arr


def truth_foreground(truth: np.ndarray) -> np.ndarray:
    """Return the boolean foreground of a mask or instance-label image (non-zero pixels)."""
    arr = np.asarray(truth)
    if arr.dtype == bool:
        return arr
    return arr != 0


def _check_prediction(prediction: Any, name: str = "prediction") -> np.ndarray:
    if prediction is None:
        raise InputError(f"No {name} given: choose a probability map or a mask.")
    arr = np.asarray(prediction)
    if arr.size == 0 or arr.ndim < 2:
        raise InputError(f"The {name} is empty or not an image (shape {_shape_text(arr.shape)}).")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"The {name} has pixel type {arr.dtype}, which is not numeric.")
    return arr


def as_probability(prob: Any, name: str = "probability map") -> np.ndarray:
    """Validate a probability map and return it as float32 (no copy if it already is).

    Raises
    ------
    InputError
        If it is missing, empty, not floating-point, or contains NaN.
    """
    arr = _check_prediction(prob, name)
    if arr.dtype.kind != "f":
        raise InputError(
            f"The {name} has integer pixels ({arr.dtype}); a probability map is floating-point in [0, 1]."
        )
    arr = arr.astype(np.float32, copy=False)
    if np.isnan(arr).any():
        raise InputError(f"The {name} contains NaN values; predict it again.")
    return arr


def check_region(region: Any, shape: Sequence[int], allow_empty: bool = False) -> np.ndarray | None:
    """Validate an evaluation region and return it as a boolean array of ``shape``.

    Parameters
    ----------
    region : array-like or None
        Boolean (or integer, non-zero = inside) mask of the pixels to evaluate,
        of the prediction's shape, or of its last two axes to use the same
        region in every slice of a stack. None: everything.
    shape : tuple of int
        The prediction's shape.
    allow_empty : bool
        Accept a region without any pixel.

    Raises
    ------
    InputError
        If the region has another shape, is floating-point, or (unless allowed) is empty.
    """
    if region is None:
        return None
    arr = np.asarray(region)
    if arr.dtype.kind not in "biu":
        raise InputError(f"The evaluation region must be a boolean mask, not {arr.dtype}.")
    shape = tuple(shape)
    if tuple(arr.shape) == shape[-2:] and len(shape) > 2:
        arr = np.broadcast_to(arr, shape)
    elif tuple(arr.shape) != shape:
        raise InputError(
            f"The evaluation region has shape {_shape_text(arr.shape)} but the prediction has "
            f"shape {_shape_text(shape)}; give a region of the same shape (or of one slice)."
        )
    arr = arr if arr.dtype == bool else arr != 0
    if not allow_empty and not arr.any():
        raise InputError("The evaluation region contains no pixels.")
    return arr


def prediction_mask(prediction: Any, threshold: float | None = None) -> tuple[np.ndarray, float | None]:
    """Return the boolean foreground of a prediction and the threshold actually used.

    A floating-point prediction is a probability map: foreground where
    ``prob > threshold`` (compared in float32); the threshold is required. An
    integer or boolean prediction is a mask or instance labels: foreground
    where non-zero, and ``threshold`` is ignored (returned as None).

    Raises
    ------
    InputError
        If a probability map comes without a threshold, or is invalid.
    """
    arr = _check_prediction(prediction)
    if arr.dtype.kind == "f":
        if threshold is None:
            raise InputError("The prediction is a probability map: give a threshold.")
        prob = as_probability(arr)
        return np.greater(prob, np.float32(threshold)), float(threshold)
    return truth_foreground(arr), None


