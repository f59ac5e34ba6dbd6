"""Threshold curves and pixel scores of probability maps larger than memory, block by block.

A zarr- or dask-backed probability map of a whole slide does not fit in
memory twice, and the exact threshold search of
:class:`~napari_segloop.core.evaluation.curve.ThresholdCurve` keeps a sorted
copy of every probability. Here the same answers come from one pass over
the map in blocks (aligned to its chunks), with memory bounded by one block:

* :func:`binned_curve` accumulates the step histogram of
  :func:`~napari_segloop.core.evaluation.curve.step_histogram` over the
  blocks into a :class:`BinnedCurve`: exact TP/FP/FN/TN at every slider step
  (the slider's thresholds are its bin edges), the Dice / precision / recall
  curve, the best slider step and Otsu's threshold of the histogram;
* :func:`count_pixels` counts TP/FP/FN/TN of ``prob > t`` exactly, for any
  threshold (one more pass, when the threshold is not a slider step).

Both are generators that yield :class:`~napari_segloop.core.events.Progress`
after each block (a worker can stop between blocks) and return their result.
The exact best threshold between the steps takes one more pass
(:mod:`~napari_segloop.core.evaluation.refine`). What is not done here, and
why: object metrics and post-processing need whole objects, which a block
does not hold.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.checks import as_probability, check_truth, truth_foreground
from napari_segloop.core.evaluation.curve import (
    BEST_METRICS,
    DEFAULT_STEPS,
    BestThreshold,
    StepCounts,
    _scores,
    slider_edges,
    step_histogram,
)
from napari_segloop.core.evaluation.results import PixelMetrics
from napari_segloop.core.events import Progress

__all__ = ["BLOCK", "BinnedCurve", "binned_curve", "block_slices", "count_pixels"]

#: Edge of the blocks read at a time (rounded up to the map's chunks): 2048² float32 is 16 MB.
BLOCK = 2048

#: What the scores of a map larger than memory leave out (shown with them).
BLOCK_NOTE = ("Scored block by block (a map larger than memory): pixel metrics of the raw threshold; "
              "object metrics and post-processing are not computed here.")


def _chunk_edges(array: Any) -> tuple[int, int] | None:
    """The chunk edges of the last two axes of a zarr or dask array (None: not chunked)."""
    chunks = getattr(array, "chunks", None)
    if chunks is None:
        return None
    try:
        last = chunks[-2:]
        return tuple(int(c[0]) if isinstance(c, tuple) else int(c) for c in last)  # type: ignore[return-value]
    except (TypeError, IndexError, ValueError):
        return None


def block_slices(shape: tuple[int, ...], block: int = BLOCK, like: Any = None) -> Iterator[tuple[slice, ...]]:
    """Index tuples that tile ``shape``: one plane of the leading axes at a time, ``block``² in the last two.

    ``block`` is rounded up to a multiple of ``like``'s chunks (a zarr or dask
    array), so each block reads whole chunks once.
    """
    shape = tuple(int(n) for n in shape)
    if len(shape) < 2:
        raise InputError(f"A probability map has at least two axes, not shape {shape}.")
    edges = _chunk_edges(getattr(like, "array", like)) if like is not None else None
    by, bx = int(block), int(block)
    if edges is not None:
        cy, cx = (max(1, e) for e in edges)
        by, bx = -(-by // cy) * cy, -(-bx // cx) * cx
    h, w = shape[-2:]
    for lead in np.ndindex(*shape[:-2]):
        for y in range(0, h, by):
            for x in range(0, w, bx):
                yield (*lead, slice(y, min(y + by, h)), slice(x, min(x + bx, w)))


def _n_blocks(shape: tuple[int, ...], block: int, like: Any) -> int:
    return sum(1 for _ in block_slices(shape, block, like))


def _read(array: Any, index: tuple[slice, ...]) -> np.ndarray:
    """One block of an array, or of a :class:`~napari_segloop.core.io.lazy.LazyImage` (clear read errors)."""
    read = getattr(array, "read", None)
    return read(index) if callable(read) else np.asarray(array[index])


def _read_probability(prob: Any, index: tuple[slice, ...]) -> np.ndarray:
    try:
        return as_probability(_read(prob, index))
    except InputError as exc:
        start = tuple(s.start if isinstance(s, slice) else s for s in index)
        raise InputError(f"{exc} (in the block starting at index {start})") from None


def _check_pair(prob: Any, truth: Any) -> tuple[int, ...]:
    shape = tuple(int(n) for n in prob.shape)
    if np.dtype(prob.dtype).kind != "f":
        raise InputError(f"The probability map has dtype {np.dtype(prob.dtype)}: a probability map holds "
                         "floating-point values in [0, 1].")
    if truth is not None:
        check_truth(np.broadcast_to(np.zeros((), dtype=np.dtype(truth.dtype)), tuple(truth.shape)), shape)
    return shape


class BinnedCurve(StepCounts):
    """The threshold curve of a map larger than memory, from its step histogram.

    Made by :func:`binned_curve`. Exact at the slider's steps (the same
    counts as :class:`~napari_segloop.core.evaluation.curve.ThresholdCurve`);
    between them it does not answer (:meth:`counts` raises): count those
    with :func:`count_pixels`.

    Attributes
    ----------
    negative, positive : ndarray of int64
        Background and foreground pixels per bin (``steps + 1`` each).
    planes : None
        Every plane counts (the interface of ``ThresholdCurve``).
    """

    exact_ready = False
    planes: tuple[int, ...] | None = None

    def __init__(self, negative: np.ndarray, positive: np.ndarray, *, steps: int,
                 value_range: tuple[float, float], shape: tuple[int, ...]) -> None:
        super().__init__(negative, positive, steps=steps, value_range=value_range, shape=shape)
        self.negative = np.asarray(negative, dtype=np.int64)
        self.positive = np.asarray(positive, dtype=np.int64)
        self._known: dict[float, tuple[int, int, int, int]] = {}

    def prepare_exact(self) -> None:
        """Nothing to prepare: there is no sorted copy of a map larger than memory."""

    def remember(self, metrics: PixelMetrics) -> None:
        """Keep the exact counts of one more threshold (one counted off the steps, e.g. the exact best)."""
        self._known[float(np.float32(metrics.threshold))] = (metrics.tp, metrics.fp, metrics.fn, metrics.tn)

    def known(self, threshold: float) -> bool:
        """True at a slider step or a threshold given to :meth:`remember`."""
        return self.step_of(threshold) is not None or float(np.float32(threshold)) in self._known

    def counts(self, threshold: float) -> tuple[int, int, int, int]:
        """Exact (TP, FP, FN, TN) of ``prob > threshold`` at a slider step (or a remembered threshold).

        Raises
        ------
        InputError
            ``threshold`` is neither one of the slider's steps nor remembered.
        """
        step = self.step_of(threshold)
        if step is None and (counts := self._known.get(float(np.float32(threshold)))) is not None:
            return counts
        if step is None:
            raise InputError(f"Threshold {threshold:.6g} lies between the slider's steps of a map scored "
                             "from histograms: count it with count_pixels.")
        return self.counts_at_step(step)

    def metrics(self, threshold: float) -> PixelMetrics:
        """All pixel metrics of ``prob > threshold`` at a slider step (see :meth:`counts`)."""
        tp, fp, fn, tn = self.counts(threshold)
        return PixelMetrics(tp, fp, fn, tn, float(threshold))

    def best_threshold(self, metric: str = "dice") -> BestThreshold:
        """The best slider step for ``metric`` (the first on ties): ``exact`` is False.

        ``upper`` is the next step. The exact optimum over every probability
        value may be another threshold, even a few steps away where the Dice
        curve is flat, with a slightly higher score (a step is 0.001 with the
        default 1001 steps): :func:`~napari_segloop.core.evaluation.refine.exact_best_threshold`
        finds it with one more pass.
        """
        metric = metric.lower()
        if metric not in BEST_METRICS:
            raise InputError(f"Unknown metric {metric!r}; choose one of {', '.join(BEST_METRICS)}.")
        step = self.best_step(metric)
        tp, fp, fn, tn = self.counts_at_step(step)
        score = float(_scores(metric, np.array([tp]), np.array([fp]), np.array([fn]), np.array([tn]))[0])
        upper = self.threshold_at(step + 1) if step + 1 < self.steps else float("inf")
        return BestThreshold(self.threshold_at(step), upper, metric, score,
                             PixelMetrics(tp, fp, fn, tn, self.threshold_at(step)), exact=False)

    def otsu(self) -> float:
        """Otsu's threshold of the histogram of every probability (ground truth ignored).

        :func:`skimage.filters.threshold_otsu` on the bins; the threshold
        returned is the upper edge of the last background bin, so the mask
        ``prob > t`` splits the bins as Otsu did. For a map whose values all
        fall in one bin, that bin's edge.
        """
        from skimage.filters import threshold_otsu

        counts = self.negative + self.positive
        edges = self._edges.astype(np.float64)
        # Bin g holds edges[g-1] < v <= edges[g]; its centre for Otsu's between-class variance.
        centres = np.empty(self.steps + 1, dtype=np.float64)
        centres[0], centres[-1] = edges[0], edges[-1]
        centres[1:-1] = (edges[:-1] + edges[1:]) / 2
        used = np.flatnonzero(counts)
        if used.size <= 1:
            g = int(used[0]) if used.size else 0
            return self.threshold_at(min(g, self.steps - 1))
        lo, hi = int(used[0]), int(used[-1]) + 1
        t = threshold_otsu(hist=(counts[lo:hi], centres[lo:hi]))
        g = lo + int(np.searchsorted(centres[lo:hi], t, side="left"))
        return self.threshold_at(min(g, self.steps - 1))


def binned_curve(prob: Any, truth: Any = None, *, steps: int = DEFAULT_STEPS,
                 value_range: tuple[float, float] = (0.0, 1.0),
                 block: int = BLOCK) -> Generator[Progress, None, BinnedCurve]:
    """Accumulate the step histogram of ``prob`` (against ``truth``) block by block.

    Parameters
    ----------
    prob : array-like of float
        A zarr, dask or numpy array (read one block at a time, never whole).
    truth : array-like of int or bool, optional
        Ground truth of the same shape, foreground where non-zero; None: a
        histogram of the probabilities only (for :meth:`BinnedCurve.otsu`).
    steps, value_range
        The slider (see :class:`~napari_segloop.core.evaluation.curve.ThresholdCurve`).
    block : int
        Block edge in pixels (rounded up to ``prob``'s chunks).

    Yields
    ------
    Progress
        After each block.

    Returns
    -------
    BinnedCurve

    Raises
    ------
    InputError
        Not a floating-point map, NaN or infinite values (with the block),
        a ground truth of another shape or a floating-point one.
    """
    shape = _check_pair(prob, truth)
    edges = slider_edges(steps, value_range)
    lo_hi = (float(value_range[0]), float(value_range[1]))
    negative = np.zeros(int(steps) + 1, dtype=np.int64)
    positive = np.zeros(int(steps) + 1, dtype=np.int64)
    total = _n_blocks(shape, block, prob)
    yield Progress(0, total, "histogram")
    for done, index in enumerate(block_slices(shape, block, prob), start=1):
        values = _read_probability(prob, index)
        labels = None if truth is None else truth_foreground(_read(truth, index))
        neg, pos = step_histogram(values, labels, edges, lo_hi)
        negative += neg
        positive += pos
        yield Progress(done, total, "histogram")
    return BinnedCurve(negative, positive, steps=int(steps), value_range=lo_hi, shape=shape)


def count_pixels(prob: Any, truth: Any, threshold: float, *,
                 block: int = BLOCK) -> Generator[Progress, None, PixelMetrics]:
    """Exact TP/FP/FN/TN of ``prob > threshold`` against ``truth``, block by block.

    The threshold is compared in float32, as everywhere (see
    :mod:`napari_segloop.core.evaluation.curve`).

    Yields
    ------
    Progress
        After each block.

    Returns
    -------
    PixelMetrics
    """
    if truth is None:
        raise InputError("No ground truth given: choose a labels layer or file with the true objects.")
    shape = _check_pair(prob, truth)
    t32 = np.float32(threshold)
    tp = fp = fn = tn = 0
    total = _n_blocks(shape, block, prob)
    yield Progress(0, total, "counting")
    for done, index in enumerate(block_slices(shape, block, prob), start=1):
        mask = _read_probability(prob, index) > t32
        fg = truth_foreground(_read(truth, index))
        both = int(np.count_nonzero(mask & fg))
        n_mask, n_fg = int(np.count_nonzero(mask)), int(np.count_nonzero(fg))
        tp += both
        fp += n_mask - both
        fn += n_fg - both
        tn += mask.size - n_mask - n_fg + both
        yield Progress(done, total, "counting")
    return PixelMetrics(tp, fp, fn, tn, float(threshold))
