"""Evaluate a prediction (probability map, mask or labels) against ground truth.

A region (boolean mask) restricts every metric to the pixels inside it;
objects are clipped to the region. Post-processing, when given, is applied
to the thresholded mask before anything is counted, so that the numbers
describe the mask the user sees.

Objects are 2-D (``object_dims=2``, the default: every slice of a stack has
its own objects) or 3-D (``object_dims=3``: connected over the last three
axes (Z, Y, X) of a stack, leading axes such as time still separate them).
``planes`` (flat indices of 2-D planes, see
:mod:`napari_segloop.core.evaluation.planes`) scores only those planes of a
partly predicted stack; 3-D objects are then labelled per run of consecutive
planes, so an object is clipped to the scored planes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
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
from napari_segloop.core.evaluation.planes import (
    check_object_dims,
    check_planes,
    plane_runs,
    select_planes,
    select_region,
)
from napari_segloop.core.evaluation.results import Evaluation, ObjectMetrics, StackEvaluation

_EMPTY_TRUTH = "The ground truth is empty in the evaluated pixels."


@dataclasses.dataclass
class _Prepared:
    """Checked inputs of an evaluation (restricted to the scored planes when some are given)."""

    pred_fg: np.ndarray
    pred_obj: np.ndarray
    truth: np.ndarray
    region: np.ndarray | None
    threshold: float | None
    notes: list[str]
    object_dims: int
    #: flat indices of the scored planes; None: every plane, arrays in their own shape
    planes: tuple[int, ...] | None
    #: with ``planes`` and 3-D objects: [start, stop) of each run of planes in the sub-stack
    runs: list[tuple[int, int]] | None


def _run_bounds(chosen: tuple[int, ...], shape: tuple[int, ...], object_dims: int) -> list[tuple[int, int]]:
    """Positions [start, stop) in the sub-stack of :func:`select_planes` of each run of planes."""
    bounds, start = [], 0
    for run in plane_runs(chosen, shape, object_dims):
        bounds.append((start, start + len(run)))
        start += len(run)
    return bounds


def _prepare(prediction: Any, truth: Any, threshold: float | None, region: Any, postprocess: Any,
             object_dims: int = 2, planes: Sequence[int] | None = None) -> _Prepared:
    dims = check_object_dims(object_dims)
    pred = _check_prediction(prediction)
    truth_arr = check_truth(truth, pred.shape)
    shape = tuple(pred.shape)
    dims = dims if pred.ndim >= 3 else 2  # a 2-D image has 2-D objects
    chosen: tuple[int, ...] | None = None
    runs: list[tuple[int, int]] | None = None
    if planes is None:
        region_arr = check_region(region, shape)
    else:
        chosen = check_planes(planes, shape)
        region_arr = check_region(region, shape, allow_empty=True)
        pred = select_planes(pred, chosen)
        truth_arr = select_planes(truth_arr, chosen)
        region_arr = select_region(region_arr, chosen)
        if dims == 3:
            runs = _run_bounds(chosen, shape, 3)
    pred_fg, used = prediction_mask(pred, threshold)
    pred_obj: np.ndarray = pred
    if postprocess is not None:
        from napari_segloop.core.masks import postprocess as run_postprocess
        from napari_segloop.core.masks import resolve_object_diameter

        if postprocess.split_touching and postprocess.object_diameter is None:
            # one diameter for the whole prediction, as make_mask does
            postprocess = dataclasses.replace(postprocess, object_diameter=resolve_object_diameter(
                postprocess, mask=pred_fg, object_dims=dims))
        fg8 = pred_fg.astype(np.uint8)
        if runs is None:
            pred_obj = run_postprocess(fg8, postprocess, object_dims=dims)
        else:
            pred_obj = np.concatenate([run_postprocess(fg8[a:b], postprocess, object_dims=3)
                                       for a, b in runs])
        pred_fg = pred_obj != 0
    elif pred.dtype.kind == "f":
        pred_obj = pred_fg
    notes = []
    if not _is_binary(truth_arr):
        notes.append("The ground truth holds instance ids: foreground is where the id is non-zero.")
    return _Prepared(pred_fg, pred_obj, truth_arr, region_arr, used, notes, dims, chosen, runs)


def _objects(truth: np.ndarray, pred: np.ndarray, region: np.ndarray | None, object_dims: int,
             runs: list[tuple[int, int]] | None = None) -> ObjectMetrics:
    """Label and match the objects of ``truth`` and ``pred`` (per run of planes when given)."""
    if runs is None:
        tl, nt = label_objects(truth, region, object_dims=object_dims)
        pl, n_p = label_objects(pred, region, object_dims=object_dims)
        return match_objects(tl, pl, nt, n_p)
    total = ObjectMetrics(0, 0, 0, 0.0)
    for a, b in runs:
        r = None if region is None else region[a:b]
        total = total + _objects(truth[a:b], pred[a:b], r, object_dims)
    return total


def evaluate(
    prediction: Any,
    truth: Any,
    threshold: float | None = None,
    region: Any = None,
    *,
    objects: bool = True,
    postprocess: Any = None,
    object_dims: int = 2,
    planes: Sequence[int] | None = None,
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
    object_dims : {2, 3}
        2: objects are 2-D, counted slice by slice in a stack. 3: objects of
        a stack (..., Z, Y, X) are 3-D, labelled, post-processed and matched
        over the last three axes (see :func:`label_objects`). Ignored for a
        2-D image.
    planes : sequence of int, optional
        Flat indices (C order over the leading axes) of the 2-D planes to
        score; None: all. Pixels and objects count only there; 3-D objects
        are labelled per run of consecutive planes (clipped to them).

    Returns
    -------
    Evaluation
        For a stack: pixel counts of all (scored) slices, objects counted slice
        by slice (``object_dims=2``) or in 3-D.

    Raises
    ------
    InputError
        Missing or empty inputs, float truth, shapes that differ (both named),
        a probability map without threshold, NaN probabilities, an empty region,
        invalid ``object_dims`` or plane indices.
    """
    prep = _prepare(prediction, truth, threshold, region, postprocess, object_dims, planes)
    truth_fg = truth_foreground(prep.truth)
    pix = pixel_metrics(prep.pred_fg, truth_fg, prep.region, prep.threshold)
    obj = None
    if objects:
        obj = _objects(prep.truth, prep.pred_obj, prep.region, prep.object_dims, prep.runs)
    notes = list(prep.notes)
    if pix.tp + pix.fn == 0:
        notes.append(_EMPTY_TRUTH)
    return Evaluation(pix, obj, tuple(notes))


def evaluate_stack(
    prediction: Any,
    truth: Any,
    threshold: float | None = None,
    region: Any = None,
    *,
    objects: bool = True,
    postprocess: Any = None,
    object_dims: int = 2,
    planes: Sequence[int] | None = None,
) -> StackEvaluation:
    """Evaluate every 2-D slice of a stack and the whole stack.

    Same parameters as :func:`evaluate`. A 2-D input gives one slice. A
    slice whose region is empty gets zero counts (accuracy None) instead of
    an error.

    With ``object_dims=2`` the whole-stack result sums the pixel counts and
    the object counts of the slices. With ``object_dims=3`` (a stack of at
    least three axes) a 3-D object has no per-slice score: the slices keep
    their pixel metrics with ``objects=None``, and ``whole.objects`` holds
    the 3-D object metrics (summed over leading blocks such as time frames,
    and over runs of planes when ``planes`` is given).

    Returns
    -------
    StackEvaluation
        Its ``planes`` are the flat indices its ``slices`` refer to.
    """
    prep = _prepare(prediction, truth, threshold, region, postprocess, object_dims, planes)
    shape2 = prep.pred_fg.shape[-2:]
    pf = prep.pred_fg.reshape(-1, *shape2)
    po = np.asarray(prep.pred_obj).reshape(-1, *shape2)
    ta = prep.truth.reshape(-1, *shape2)
    ra = None if prep.region is None else prep.region.reshape(-1, *shape2)
    per_slice_objects = objects and prep.object_dims == 2
    slices = []
    for i in range(pf.shape[0]):
        r = None if ra is None else ra[i]
        tf = truth_foreground(ta[i])
        pix = pixel_metrics(pf[i], tf, r, prep.threshold)
        obj = _objects(ta[i], po[i], r, 2) if per_slice_objects else None
        slice_notes = tuple(prep.notes) + ((_EMPTY_TRUTH,) if pix.tp + pix.fn == 0 else ())
        slices.append(Evaluation(pix, obj, slice_notes))
    whole = slices[0]
    for ev in slices[1:]:
        whole = whole + ev
    if objects and prep.object_dims == 3:
        obj3 = _objects(prep.truth, prep.pred_obj, prep.region, 3, prep.runs)
        whole = Evaluation(whole.pixel, obj3, whole.notes)
    chosen = prep.planes if prep.planes is not None else tuple(range(len(slices)))
    return StackEvaluation(slices, whole, chosen)
