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


#: Values this far outside [0, 1] are still probabilities (float32 rounding of a sigmoid).
PROBABILITY_TOLERANCE = 1e-6


def _range_hint(lo: float, hi: float) -> str:
    """What to do with a float map of values from ``lo`` to ``hi`` that are not probabilities."""
    if lo < 0:
        return "logits? apply a sigmoid (1 / (1 + exp(-x))) and save the result as float32"
    if hi <= 255:
        return "0..255 values? divide by 255 and save the result as float32"
    return "divide by the largest possible value and save the result as float32"


def as_probability(prob: Any, name: str = "probability map", *, unit_range: bool = False) -> np.ndarray:
    """Validate a probability map and return it as float32 (no copy if it already is).

    A probability map holds finite floating-point values: NaN or infinite
    values are always refused (they break Otsu's threshold, the threshold
    search and JSON reports). With ``unit_range`` (what every evaluation
    against a threshold uses: ``segloop evaluate``,
    :func:`prediction_mask`), values must also lie in [0, 1] up to
    :data:`PROBABILITY_TOLERANCE`: 0..255 floats or logits thresholded at 0.5
    would give a meaningless mask. Without it, any finite range is accepted
    (a :class:`~napari_segloop.core.evaluation.curve.ThresholdCurve` over an
    explicit ``value_range``).

    Raises
    ------
    InputError
        If it is missing, empty, not floating-point, contains NaN or infinite
        values (the message gives their count and the first one's pixel), has
        values beyond float32's range, or (with ``unit_range``) has values
        outside [0, 1] (the message gives the range and what to do).
    """
    arr = _check_prediction(prob, name)
    if arr.dtype.kind != "f":
        hint = (" (divide by 255 and save it as float32)" if arr.dtype == np.uint8
                else " (divide by 65535 and save it as float32)" if arr.dtype == np.uint16 else "")
        raise InputError(
            f"The {name} has integer pixels ({arr.dtype}); a probability map is floating-point in "
            f"[0, 1]{hint}."
        )
    # min and max are NaN or infinite exactly when some value is (no temporary array); taken
    # before the float32 conversion, so that float64 values beyond float32's range are told as such.
    lo, hi = float(arr.min()), float(arr.max())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(arr)
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(bad)) - n_nan
        found = " and ".join(text for n, text in ((n_nan, f"{n_nan} NaN"), (n_inf, f"{n_inf} infinite"))
                             if n)
        if found:
            first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), arr.shape))
            raise InputError(
                f"The {name} contains {found} value(s) of {arr.size} (the first at pixel "
                f"{_shape_text(first)}); a probability map holds finite values in [0, 1], predict "
                "it again."
            )
    if unit_range and (lo < -PROBABILITY_TOLERANCE or hi > 1 + PROBABILITY_TOLERANCE):
        raise InputError(
            f"The {name} has values from {lo:.4g} to {hi:.4g}, which are not probabilities in "
            f"[0, 1] ({_range_hint(lo, hi)})."
        )
    if max(abs(lo), abs(hi)) > float(np.finfo(np.float32).max):
        raise InputError(
            f"The {name} has values from {lo:.4g} to {hi:.4g}, beyond the range of float32; a "
            "probability map holds finite values in [0, 1]."
        )
    return arr.astype(np.float32, copy=False)


#: An integer prediction with at least this many distinct non-zero values may be a scaled
#: probability map (see :func:`integer_map_notice`).
AMBIGUOUS_LEVELS = 16
#: ... when more than this share of neighbouring foreground pixels differ: in instance labels
#: neighbours differ only where two objects touch, in a scaled probability map almost everywhere.
AMBIGUOUS_CHANGES = 0.2
_SAMPLE_ROWS = 2048


def integer_map_notice(prediction: Any, name: str = "prediction") -> str | None:
    """A remark for an integer prediction that looks like a probability map scaled to 0..255.

    Integer predictions are masks or instance labels (every non-zero pixel is
    foreground). A map with many distinct levels that change from pixel to
    pixel (not in flat regions as labels do) is probably a probability map
    saved as integers: the remark says how it is read and how to convert it.
    Measured on a sample of at most about 2,048 rows of each plane's first
    columns (cheap for large stacks).

    Returns
    -------
    str or None
        The remark, or None when the prediction looks like a mask or labels.
    """
    arr = np.asarray(prediction)
    if arr.dtype.kind not in "iu" or arr.ndim < 2:
        return None
    plane = arr.reshape(-1, *arr.shape[-2:])
    step = max(1, plane.shape[0] // 8)
    sample = np.asarray(plane[::step, :_SAMPLE_ROWS, :_SAMPLE_ROWS])
    nonzero = sample != 0
    if not nonzero.any():
        return None
    levels = np.unique(sample[nonzero])
    if levels.size < AMBIGUOUS_LEVELS:
        return None
    both = nonzero[..., 1:] & nonzero[..., :-1]
    n_pairs = int(np.count_nonzero(both))
    if n_pairs == 0:
        return None
    changes = int(np.count_nonzero(both & (sample[..., 1:] != sample[..., :-1]))) / n_pairs
    if changes <= AMBIGUOUS_CHANGES:
        return None
    top = 255 if int(levels[-1]) <= 255 else 65535
    return (
        f"the {name} has integer pixels ({arr.dtype}) with at least {levels.size} levels up to "
        f"{int(levels[-1])}: it is read as a mask or instance labels (every non-zero pixel is "
        f"foreground); if it is a probability map, divide it by {top} and save it as float32 "
        "(probability maps are floating-point in [0, 1])."
    )


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

    A floating-point prediction is a probability map (finite, in [0, 1]:
    :func:`as_probability`): foreground where ``prob > threshold`` (compared
    in float32); the threshold is required. An
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
        prob = as_probability(arr, unit_range=True)
        return np.greater(prob, np.float32(threshold)), float(threshold)
    return truth_foreground(arr), None


