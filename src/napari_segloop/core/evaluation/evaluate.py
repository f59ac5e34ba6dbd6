"""Evaluate a prediction (probability map, mask or labels) against ground truth.

A region (boolean mask) restricts every metric to the pixels inside it;
objects are clipped to the region. Post-processing, when given, is applied
to the thresholded mask before anything is counted, so that the numbers
describe the mask the user sees.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_segloop.core.evaluation.checks import (
    _check_prediction,
    check_region,
    check_truth,
    prediction_mask,
    truth_foreground,
)
from napari_segloop.core.evaluation.objects import _is_binary, label_objects, match_objects
from napari_segloop.core.evaluation.pixels import pixel_metrics
from napari_segloop.core.evaluation.results import Evaluation, StackEvaluation


def _prepare(prediction: Any, truth: Any, threshold: float | None, region: Any, postprocess: Any):
    pred = _check_prediction(prediction)
    truth_arr = check_truth(truth, pred.shape)
    region_arr = check_region(region, pred.shape)
    pred_fg, used = prediction_mask(pred, threshold)
    pred_obj: np.ndarray = pred
    if postprocess is not None:
        from napari_segloop.core.masks import postprocess as run_postprocess

        pred_obj = run_postprocess(pred_fg.astype(np.uint8), postprocess)
        pred_fg = pred_obj != 0
    elif pred.dtype.kind == "f":
        pred_obj = pred_fg
    notes = []
    if not _is_binary(truth_arr):
        notes.append("The ground truth holds instance ids: foreground is where the id is non-zero.")
    return pred_fg, pred_obj, truth_arr, region_arr, used, notes


def evaluate(
    prediction: Any,
    truth: Any,
    threshold: float | None = None,
    region: Any = None,
    *,
    objects: bool = True,
    postprocess: Any = None,
) -> Evaluation:
    """Evaluate a prediction (2-D image or stack) against ground truth.

    Parameters
    ----------
    prediction : array-like
        A probability map (floating-point; needs ``threshold``), a binary mask
        or instance labels (integers or bool; foreground where non-zero).
    truth : array-like
        A mask or instance labels of the same shape (not floating-point).
    threshold : float, optional
        Foreground where ``prediction > threshold`` (probability maps only).
    region : array-like of bool, optional
        Evaluate only these pixels (same shape, or the shape of one slice).
    objects : bool
        Also compute object metrics (labelling is O(pixels), slower than the
        pixel counts).
    postprocess : PostProcess, optional
        Post-processing applied to the thresholded mask first (min size, holes,
        split touching objects, instances), as the bundle's ``--threshold auto`` does.

    Returns
    -------
    Evaluation
        For a stack: pixel counts of all slices, objects counted slice by slice.

    Raises
    ------
    InputError
        Missing or empty inputs, float truth, shapes that differ (both named),
        a probability map without threshold, NaN probabilities, an empty region.
    """
    pred_fg, pred_obj, truth_arr, region_arr, used, notes = _prepare(
        prediction, truth, threshold, region, postprocess)
    truth_fg = truth_foreground(truth_arr)
    pix = pixel_metrics(pred_fg, truth_fg, region_arr, used)
    obj = None
    if objects:
        tl, nt = label_objects(truth_arr, region_arr)
        pl, n_p = label_objects(pred_obj, region_arr)
        obj = match_objects(tl, pl, nt, n_p)
    if pix.tp + pix.fn == 0:
        notes.append("The ground truth is empty in the evaluated pixels.")
    return Evaluation(pix, obj, tuple(notes))


def evaluate_stack(
    prediction: Any,
    truth: Any,
    threshold: float | None = None,
    region: Any = None,
    *,
    objects: bool = True,
    postprocess: Any = None,
) -> StackEvaluation:
    """Evaluate every 2-D slice of a stack and the whole stack.

    Same parameters as :func:`evaluate`. A 2-D input gives one slice. The
    whole-stack result sums the pixel counts and the object counts of the
    slices (objects are 2-D). A slice whose region is empty gets zero counts
    (accuracy None) instead of an error.

    Returns
    -------
    StackEvaluation
    """
    pred_fg, pred_obj, truth_arr, region_arr, used, notes = _prepare(
        prediction, truth, threshold, region, postprocess)
    shape2 = pred_fg.shape[-2:]
    pf = pred_fg.reshape(-1, *shape2)
    po = np.asarray(pred_obj).reshape(-1, *shape2)
    ta = truth_arr.reshape(-1, *shape2)
    ra = None if region_arr is None else region_arr.reshape(-1, *shape2)
    slices = []
    for i in range(pf.shape[0]):
        r = None if ra is None else ra[i]
        tf = truth_foreground(ta[i])
        pix = pixel_metrics(pf[i], tf, r, used)
        obj = None
        if objects:
            tl, nt = label_objects(ta[i], r)
            pl, n_p = label_objects(po[i], r)
            obj = match_objects(tl, pl, nt, n_p)
        slice_notes = tuple(notes) + (
            ("The ground truth is empty in the evaluated pixels.",) if pix.tp + pix.fn == 0 else ())
        slices.append(Evaluation(pix, obj, slice_notes))
    whole = slices[0]
    for ev in slices[1:]:
        whole = whole + ev
    return StackEvaluation(slices, whole)


