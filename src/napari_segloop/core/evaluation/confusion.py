"""The confusion image: one code per pixel (0 TN, 1 TP, 2 FP, 3 FN).

The core knows codes and names; the colours a viewer shows them in belong to
the widgets (:mod:`napari_segloop.widgets.colors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.checks import (
    _check_prediction,
    _shape_text,
    check_region,
    check_truth,
    prediction_mask,
    truth_foreground,
)
from napari_segloop.core.evaluation.planes import check_planes, select_planes

#: Confusion codes of :func:`confusion_image`.
TN, TP, FP, FN = 0, 1, 2, 3

#: Human-readable name of each confusion code (for legends).
CONFUSION_NAMES: dict[int, str] = {
    TN: "true negative",
    TP: "true positive",
    FP: "false positive",
    FN: "false negative",
}


def confusion_image(
    prediction: Any,
    truth: Any,
    threshold: float | None = None,
    region: Any = None,
    out: np.ndarray | None = None,
    *,
    planes: Sequence[int] | None = None,
) -> np.ndarray:
    """Return the confusion codes image (uint8): 0 TN, 1 TP, 2 FP, 3 FN.

    Parameters
    ----------
    prediction : array-like
        Probability map (with ``threshold``), or a mask / instance labels.
    truth : array-like
        Mask or instance labels of the same shape (foreground where non-zero).
    threshold : float, optional
        For a probability map: foreground where ``prob > threshold``.
    region : array-like of bool, optional
        Pixels outside are 0 (transparent).
    out : ndarray of uint8, optional
        Written in place and returned (saves an allocation per slider move).
    planes : sequence of int, optional
        Flat indices (C order over the leading axes) of the scored planes of a
        partly predicted stack: every other plane is 0 (nothing drawn), and
        only these planes are computed. None: all planes.

    Returns
    -------
    ndarray of uint8
        Same shape as the prediction; colours in :data:`CONFUSION_COLORS`.
    """
    pred = _check_prediction(prediction)
    truth_arr = check_truth(truth, pred.shape)
    region_arr = check_region(region, pred.shape, allow_empty=True)
    if out is None:
        out = np.empty(pred.shape, dtype=np.uint8)
    elif out.shape != pred.shape or out.dtype != np.uint8:
        raise InputError(f"The output buffer must be uint8 of shape {_shape_text(pred.shape)}.")
    if planes is None:
        return _codes(pred, truth_arr, threshold, region_arr, out)
    chosen = check_planes(planes, pred.shape)
    sub_region = None if region_arr is None else select_planes(region_arr, chosen)
    codes = _codes(select_planes(pred, chosen), select_planes(truth_arr, chosen), threshold, sub_region)
    out.fill(TN)
    if pred.ndim == 2:
        out[...] = codes[0]
    else:
        out[np.unravel_index(np.asarray(chosen), pred.shape[:-2])] = codes
    return out


def _codes(pred: np.ndarray, truth: np.ndarray, threshold: float | None, region: np.ndarray | None,
           out: np.ndarray | None = None) -> np.ndarray:
    """Confusion codes of a prediction against checked truth of the same shape."""
    pred_fg, _ = prediction_mask(pred, threshold)
    if out is None:
        out = np.empty(pred.shape, dtype=np.uint8)
    # code = 2 * pred XOR 3 * truth: TP 2^3 = 1, FP 2, FN 3, TN 0 (no lookup table: 3x faster)
    truth_fg = np.ascontiguousarray(truth_foreground(truth))
    np.multiply(truth_fg.view(np.uint8), 3, out=out)
    np.bitwise_xor(out, np.left_shift(np.ascontiguousarray(pred_fg).view(np.uint8), 1), out=out)
    if region is not None:
        out[~region] = TN
    return out
