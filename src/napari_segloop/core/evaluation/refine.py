"""The exact best threshold of a map larger than memory: the histogram's best step, then a refining pass.

:class:`~napari_segloop.core.evaluation.histograms.BinnedCurve` knows the
exact counts at the slider's steps only, so its best step can miss the exact
optimum, which may lie between two steps (a step is 0.001 by default). The
in-memory search (:meth:`~napari_segloop.core.evaluation.curve.ThresholdCurve.best_threshold`)
sorts every probability; here no sorted copy of the whole map is needed:

1. Every metric searched (Dice/F1, IoU, accuracy) grows with TP and falls
   with FP. A threshold inside bin ``g`` (between steps ``g - 1`` and ``g``)
   has at most the TP of step ``g - 1`` and at least the FP of step ``g``, so
   the metric of those two counts bounds every threshold in the bin.
2. Only the bins whose bound beats the best step can hold a better
   threshold. One more pass over the blocks keeps the probabilities (and
   truth) of those bins alone (22 bins, 1.2 % of the pixels, on the benchmark map
   of ``benchmarks/bench_large_eval.py``).
3. Those are sorted and scored exactly as in memory, from the counts of the
   step below each bin.

The result is the exact optimum, as the in-memory search finds it (the
same score and mask). When the candidate bins hold more than ``limit``
pixels, the bins with the highest bounds are refined first and the result
says it is not exact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.checks import truth_foreground
from napari_segloop.core.evaluation.curve import BEST_METRICS, BestThreshold, _scores, step_bins
from napari_segloop.core.evaluation.histograms import (
    BLOCK,
    BinnedCurve,
    _check_pair,
    _n_blocks,
    _read,
    _read_probability,
    block_slices,
)
from napari_segloop.core.evaluation.results import PixelMetrics
from napari_segloop.core.events import Progress

__all__ = ["REFINE_LIMIT", "candidate_bins", "exact_best_threshold"]

#: Most probabilities the refining pass keeps (float32 and a flag each: about 100 MB at 20 million).
REFINE_LIMIT = 20_000_000


def candidate_bins(curve: BinnedCurve, metric: str, score: float) -> np.ndarray:
    """The bins between two steps that may hold a threshold scoring more than ``score``, best bound first.

    Bin ``g`` (1 .. steps - 1) holds the values in ``(edges[g-1], edges[g]]``; a
    threshold there scores at most ``metric(TP of step g-1, FP of step g)``.
    """
    steps = curve.steps
    tp = curve._tp_steps
    fp = curve._fp_steps
    tp_hi, fp_lo = tp[: steps - 1], fp[1:steps]
    bound = _scores(metric, tp_hi, fp_lo, curve.n_positive - tp_hi, curve.n_negative - fp_lo)
    width = (curve.negative + curve.positive)[1:steps]
    g = np.flatnonzero((bound > score) & (width > 0))
    order = np.argsort(-bound[g], kind="stable")
    return (g[order] + 1).astype(np.intp)


def exact_best_threshold(prob: Any, truth: Any, curve: BinnedCurve, metric: str = "dice", *,
                         block: int = BLOCK, limit: int = REFINE_LIMIT,
                         ) -> Generator[Progress, None, BestThreshold]:
    """The exact best threshold of ``prob`` against ``truth``: the best step, refined between steps.

    Parameters
    ----------
    prob, truth : array-like
        The map and ground truth ``curve`` was built from (read block by block,
        never whole).
    curve : BinnedCurve
        Their step histogram (:func:`~napari_segloop.core.evaluation.histograms.binned_curve`).
    metric : {"dice", "f1", "iou", "accuracy"}
    block : int
        Block edge in pixels for the refining pass.
    limit : int
        Most probabilities kept for refining (memory: about 5 bytes each).

    Yields
    ------
    Progress
        After each block of the refining pass (none when the best step is
        already the optimum).

    Returns
    -------
    BestThreshold
        ``exact`` is True unless the candidate bins held more than ``limit``
        pixels. ``threshold`` is a probability value of the map, or a slider
        step when that step's mask is optimal; ``metrics`` are exact.
    """
    metric = metric.lower()
    if metric not in BEST_METRICS:
        raise InputError(f"Unknown metric {metric!r}; choose one of {', '.join(BEST_METRICS)}.")
    step_best = curve.best_threshold(metric)
    bins = candidate_bins(curve, metric, step_best.score)
    if bins.size == 0:
        return dataclasses.replace(step_best, exact=True)
    sizes = (curve.negative + curve.positive)[bins]
    kept = int(np.searchsorted(np.cumsum(sizes), limit, side="right"))
    complete = kept == bins.size
    bins = np.sort(bins[:kept])
    if bins.size == 0:
        return step_best
    values, labels = yield from _collect(prob, truth, curve, bins, block)
    best = _best_in_bins(curve, metric, bins, values, labels)
    if best is None or best.score < step_best.score or (
            best.score == step_best.score and best.threshold >= step_best.threshold):
        best = step_best
    return dataclasses.replace(best, exact=complete)


def _collect(prob: Any, truth: Any, curve: BinnedCurve, bins: np.ndarray,
             block: int) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """The probabilities (and truth) of the pixels in ``bins``, one pass over the blocks."""
    shape = _check_pair(prob, truth)
    if shape != curve.shape:
        raise InputError(f"The map has shape {shape}, its curve was made from one of shape {curve.shape}.")
    wanted = np.zeros(curve.steps + 1, dtype=bool)
    wanted[bins] = True
    edges = curve._edges
    # Two comparisons per pixel find the span of the candidate bins; the bins of that small
    # subset alone are then computed (bin g is edges[g-1] < v <= edges[g], compared in float32).
    low, high = edges[int(bins.min()) - 1], edges[int(bins.max())]
    values: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    total = _n_blocks(shape, block, prob)
    yield Progress(0, total, "refining")
    for done, index in enumerate(block_slices(shape, block, prob), start=1):
        v = _read_probability(prob, index).ravel()
        span = v > low
        span &= v <= high
        if span.any():
            sub = v[span]
            keep = wanted[step_bins(sub, edges, curve.value_range)]
            values.append(sub[keep])
            labels.append(truth_foreground(_read(truth, index)).ravel()[span][keep])
        yield Progress(done, total, "refining")
    if not values:
        return np.zeros(0, np.float32), np.zeros(0, bool)
    return np.concatenate(values), np.concatenate(labels)


def _best_in_bins(curve: BinnedCurve, metric: str, bins: np.ndarray, values: np.ndarray,
                  labels: np.ndarray) -> BestThreshold | None:
    """The best threshold among the values of ``bins`` (smallest on ties), scored exactly.

    One bin at a time (each holds a small share of the kept values), so the
    sorted copies and score arrays stay a bin's size.
    """
    if values.size == 0:
        return None
    edges = curve._edges
    # score, threshold, upper, tp, fp, bin, whether the threshold is the bin's largest value
    found: tuple[float, float, float, int, int, int, bool] | None = None
    for g in (int(b) for b in bins):
        inside = (values > edges[g - 1]) & (values <= edges[g])
        if not inside.any():
            continue
        order = np.argsort(values[inside], kind="stable")
        s = values[inside][order]
        pos = np.cumsum(labels[inside][order], dtype=np.int64)
        # The cut after s[i] makes every value of the bin up to s[i] background: counts from the
        # step below the bin (g - 1), minus what the cut removes.
        tp = curve._tp_steps[g - 1] - pos
        fp = curve._fp_steps[g - 1] - (np.arange(1, s.size + 1, dtype=np.int64) - pos)
        score = _scores(metric, tp, fp, curve.n_positive - tp, curve.n_negative - fp)
        score[:-1][s[:-1] == s[1:]] = -np.inf  # only after the last copy of a value
        i = int(np.argmax(score))
        if found is None or score[i] > found[0]:
            last = i + 1 == s.size
            upper = float(edges[g]) if last else float(s[i + 1])
            found = (float(score[i]), float(s[i]), upper, int(tp[i]), int(fp[i]), g, last)
    if found is None:
        return None
    score, t, upper, tp, fp, g, last = found
    if last and g + 1 in bins:  # the next value is the smallest of the next bin, which is known
        above = values[(values > edges[g]) & (values <= edges[g + 1])]
        upper = float(above.min()) if above.size else upper
    pm = PixelMetrics(tp, fp, curve.n_positive - tp, curve.n_negative - fp, t)
    return BestThreshold(t, upper, metric, score, pm, exact=True)
