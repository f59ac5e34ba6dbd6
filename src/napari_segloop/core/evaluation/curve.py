"""Automatic thresholds and cached counts for a live threshold slider.

:class:`ThresholdCurve` is built once from a probability map and ground truth
(optionally restricted to a region) and then answers, for any threshold, the
exact TP/FP/FN/TN counts of the mask ``prob > threshold``:

* at a slider step, in O(1), from cumulative histograms of the probabilities
  of ground-truth foreground and background pixels, whose bin edges are the
  slider's steps (computed exactly, in float32, at construction);
* at any other threshold, in O(log n), with ``np.searchsorted`` in the sorted
  probabilities (sorted once, lazily, on first use or by
  :meth:`ThresholdCurve.prepare_exact`);
* the exact best-Dice threshold over every distinct probability value
  (:meth:`ThresholdCurve.best_threshold`), and the Dice / precision / recall
  curve over the slider steps for a plot (:meth:`ThresholdCurve.curve`).

Thresholds are compared in float32 (``np.float32(t)``), the precision of
probability maps: this is what ``np.greater(prob, t)`` does with a Python
float in NumPy 2, so every result here equals ``np.count_nonzero(prob > t)``.

Also here: :func:`otsu_threshold` (no ground truth needed). Reading or saving
the threshold stored in a bundle is bundle I/O
(:mod:`napari_segloop.core.bundle.folder`).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.checks import as_probability, check_region, check_truth, truth_foreground
from napari_segloop.core.evaluation.planes import check_planes, select_planes, select_region
from napari_segloop.core.evaluation.results import PixelMetrics

__all__ = [
    "BEST_METRICS",
    "DEFAULT_STEPS",
    "BestThreshold",
    "CurveData",
    "StepCounts",
    "ThresholdCurve",
    "otsu_threshold",
    "slider_edges",
    "step_bins",
    "step_histogram",
]

#: Default number of slider positions over [0, 1] (a step of 0.001).
DEFAULT_STEPS = 1001

#: Metrics :meth:`ThresholdCurve.best_threshold` can maximise.
BEST_METRICS = ("dice", "f1", "iou", "accuracy")

_CHUNK = 1 << 20


@dataclass(frozen=True)
class BestThreshold:
    """The threshold that maximises a metric, and what it gives.

    Attributes
    ----------
    threshold : float
        The smallest optimal threshold: one of the probability values (or the
        lower end of the search range), exactly representable in float32, so
        ``prob > threshold`` reproduces the optimum exactly.
    upper : float
        Every ``t`` with ``threshold <= t < upper`` gives the same mask (the
        next distinct probability value; ``inf`` if none). Midway is a
        rounder value for display.
    metric : str
        The metric maximised.
    score : float
        Its value at ``threshold``.
    metrics : PixelMetrics
        All pixel metrics at ``threshold``.
    exact : bool
        True for the optimum over every probability value; False for the
        best slider step of a map scored from histograms (then ``upper`` is
        the next step, and the exact optimum, with a slightly higher score,
        may lie between steps, not necessarily next to it).
    """

    threshold: float
    upper: float
    metric: str
    score: float
    metrics: PixelMetrics
    exact: bool = True


@dataclass(frozen=True)
class CurveData:
    """Metrics against the threshold over the slider steps, for a plot.

    Ratios are float64 arrays with NaN where undefined (precision when nothing
    is predicted but the truth is not empty, recall when the truth is empty
    and something is predicted): a plot leaves a gap there. Dice and IoU of
    two empty masks are 1.0, as everywhere.
    """

    thresholds: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray
    tn: np.ndarray
    dice: np.ndarray
    iou: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    accuracy: np.ndarray

    def as_dict(self) -> dict[str, list[float | None]]:
        """JSON-ready lists (NaN becomes None)."""
        out: dict[str, list[Any]] = {}
        for name in ("thresholds", "tp", "fp", "fn", "tn", "dice", "iou", "precision", "recall",
                     "accuracy"):
            arr = getattr(self, name)
            if arr.dtype.kind == "f":
                out[name] = [None if v != v else float(v) for v in arr.tolist()]
            else:
                out[name] = [int(v) for v in arr.tolist()]
        return out


def _sort_keys(values: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, bool]:
    """uint64 keys ``(order-preserving bits of the float32 value) << 1 | label``, and whether any is negative.

    Sorting the keys sorts the probabilities and carries each pixel's label
    along, in one pass of NumPy's (SIMD) integer sort, without an argsort.
    """
    keys = values.view(np.uint32).astype(np.uint64)
    keys ^= np.uint64(0x80000000)
    negative = np.signbit(values)
    has_negative = bool(negative.any())
    if has_negative:  # negative floats: flip all 32 bits to reverse their order
        keys[negative] ^= np.uint64(0x7FFFFFFF)
    keys <<= np.uint64(1)
    keys |= labels
    return keys, has_negative


def _split_sorted_keys(keys: np.ndarray, has_negative: bool) -> tuple[np.ndarray, np.ndarray]:
    """From sorted keys: the sorted float32 values and the cumulative count of labels (length n + 1)."""
    n = keys.size
    count_type = np.int32 if n < np.iinfo(np.int32).max else np.int64
    cumpos = np.zeros(n + 1, dtype=count_type)
    little = sys.byteorder == "little"
    low = keys.view(np.uint8)[::8] if little else keys.view(np.uint8)[7::8]
    np.cumsum(low & np.uint8(1), out=cumpos[1:], dtype=count_type)
    keys >>= np.uint64(1)
    bits = np.ascontiguousarray(keys.view(np.uint32)[::2] if little else keys.view(np.uint32)[1::2])
    if has_negative:
        negative = (bits >> np.uint32(31)) == 0
        bits[negative] ^= np.uint32(0x7FFFFFFF)
    bits ^= np.uint32(0x80000000)
    return bits.view(np.float32), cumpos


def _scores(metric: str, tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, tn: np.ndarray) -> np.ndarray:
    tp = tp.astype(np.float64)
    fp = fp.astype(np.float64)
    fn = fn.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric in ("dice", "f1"):
            den = 2 * tp + fp + fn
            return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), 1.0)
        if metric == "iou":
            den = tp + fp + fn
            return np.where(den > 0, tp / np.where(den > 0, den, 1), 1.0)
        n = tp + fp + fn + tn
        return np.where(n > 0, (tp + tn) / np.where(n > 0, n, 1), 0.0)


def step_histogram(values: np.ndarray, labels: np.ndarray | None, edges: np.ndarray,
                   value_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the number of edges below its value, counted for background and foreground.

    One O(n) pass (in chunks of a million pixels). ``edges`` are float32
    and evenly spaced over ``value_range``; a pixel with value ``v`` lands in
    bin ``g`` with ``edges[g - 1] < v <= edges[g]`` (0 below the first edge,
    ``len(edges)`` above the last), computed exactly in float32, so a pixel
    is foreground at step ``k`` (``v > edges[k]``) exactly when ``g > k``.
    Histograms of several blocks add up to the histogram of their union.

    Parameters
    ----------
    values : ndarray of float32
        Probabilities (flat or any shape), finite.
    labels : ndarray of bool or None
        Ground-truth foreground of each value (None: all background).
    edges : ndarray of float32
    value_range : (float, float)
        ``(edges[0], edges[-1])`` as Python floats.

    Returns
    -------
    negative, positive : ndarray of int64
        ``len(edges) + 1`` counts each: background and foreground pixels per bin.
    """
    steps = int(edges.size)
    values = np.asarray(values, dtype=np.float32).ravel()
    flat_labels = None if labels is None else np.asarray(labels, dtype=bool).ravel()
    hist = np.zeros(2 * (steps + 1), dtype=np.int64)
    for start in range(0, values.size, _CHUNK):
        g = step_bins(values[start:start + _CHUNK], edges, value_range)
        if flat_labels is not None:
            g += (steps + 1) * flat_labels[start:start + _CHUNK]
        hist += np.bincount(g, minlength=2 * (steps + 1))
    return hist[: steps + 1], hist[steps + 1:]


def step_bins(values: np.ndarray, edges: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """The bin of each value (flat): ``g`` with ``edges[g - 1] < v <= edges[g]``, exactly in float32.

    0 below the first edge, ``len(edges)`` above the last (see :func:`step_histogram`).

    Raises
    ------
    InputError
        A NaN value.
    """
    steps = int(edges.size)
    v = np.asarray(values, dtype=np.float32).ravel()
    if np.isnan(v).any():
        raise InputError("The probability map contains NaN values.")
    # guarded[i] = edges[i - 1], with -inf and +inf at the ends.
    guarded = np.empty(steps + 2, dtype=np.float32)
    guarded[0], guarded[-1] = -np.inf, np.inf
    guarded[1:-1] = edges
    lo, hi = float(value_range[0]), float(value_range[1])
    x = np.subtract(v, np.float32(lo))
    np.multiply(x, np.float32((steps - 1) / (hi - lo)), out=x)
    np.ceil(x, out=x)
    np.clip(x, 0, steps, out=x)
    g = x.astype(np.intp)
    # Make g exactly the number of edges < v (float32 rounding leaves it off by one
    # at most near an edge): need edges[g-1] < v <= edges[g].
    while True:
        down = guarded[g] >= v
        down &= g > 0
        if not down.any():
            break
        g -= down
    while True:
        up = guarded[g + 1] < v
        if not up.any():
            break
        g += up
    return g


def slider_edges(steps: int, value_range: tuple[float, float]) -> np.ndarray:
    """The float32 thresholds of ``steps`` slider positions over ``value_range`` (checked)."""
    steps = int(steps)
    lo, hi = float(value_range[0]), float(value_range[1])
    if steps < 2:
        raise InputError(f"A threshold slider needs at least 2 steps, not {steps}.")
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise InputError(f"The threshold range ({lo:g}, {hi:g}) is not an interval.")
    return np.linspace(lo, hi, steps).astype(np.float32)


class StepCounts:
    """Exact TP/FP/FN/TN of ``prob > t`` at every slider step, from a step histogram.

    The queries shared by :class:`ThresholdCurve` (in memory, exact at any
    threshold) and :class:`~napari_segloop.core.evaluation.histograms.BinnedCurve`
    (accumulated block by block over a map larger than memory).

    Parameters
    ----------
    negative, positive : ndarray of int
        Background and foreground counts per bin (see :func:`step_histogram`).
    steps : int
    value_range : (float, float)
    shape : tuple of int
        The probability map's shape.
    """

    def __init__(self, negative: np.ndarray, positive: np.ndarray, *, steps: int,
                 value_range: tuple[float, float], shape: tuple[int, ...]) -> None:
        self._edges = slider_edges(steps, value_range)
        self.steps = int(steps)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self._scale = (self.steps - 1) / (self.value_range[1] - self.value_range[0])
        self.shape: tuple[int, ...] = tuple(int(n) for n in shape)
        neg = np.asarray(negative, dtype=np.int64)
        pos = np.asarray(positive, dtype=np.int64)
        self.n_positive = int(pos.sum())
        self.n_negative = int(neg.sum())
        self.n_pixels = self.n_positive + self.n_negative
        # A pixel is foreground at step k when more than k edges lie below it.
        self._tp_steps = (self.n_positive - np.cumsum(pos)[: self.steps]).astype(np.int64)
        self._fp_steps = (self.n_negative - np.cumsum(neg)[: self.steps]).astype(np.int64)

    @property
    def thresholds(self) -> np.ndarray:
        """The slider's thresholds (float64 copies of float32 values), ``steps`` of them."""
        return self._edges.astype(np.float64)

    def threshold_at(self, step: int) -> float:
        """The threshold of slider position ``step`` (0 .. steps - 1)."""
        return float(self._edges[int(step)])

    def step_of(self, threshold: float) -> int | None:
        """The slider position whose threshold equals ``threshold`` in float32, or None."""
        t32 = np.float32(threshold)
        k = round((float(t32) - self.value_range[0]) * self._scale)
        for j in (k, k - 1, k + 1):
            if 0 <= j < self.steps and self._edges[j] == t32:
                return j
        j = int(np.searchsorted(self._edges, t32, side="left"))
        if j < self.steps and self._edges[j] == t32:
            return j
        return None

    def known(self, threshold: float) -> bool:
        """True when :meth:`counts` answers ``threshold`` at once (a slider step here)."""
        return self.step_of(threshold) is not None

    def counts_at_step(self, step: int) -> tuple[int, int, int, int]:
        """Exact (TP, FP, FN, TN) at slider position ``step``, in O(1)."""
        tp = int(self._tp_steps[step])
        fp = int(self._fp_steps[step])
        return tp, fp, self.n_positive - tp, self.n_negative - fp

    def metrics_at_step(self, step: int) -> PixelMetrics:
        """All pixel metrics at slider position ``step``, in O(1)."""
        tp, fp, fn, tn = self.counts_at_step(step)
        return PixelMetrics(tp, fp, fn, tn, float(self._edges[step]))

    def best_step(self, metric: str = "dice") -> int:
        """The slider position with the best ``metric`` (the first one on ties), in O(steps)."""
        metric = metric.lower()
        if metric not in BEST_METRICS:
            raise InputError(f"Unknown metric {metric!r}; choose one of {', '.join(BEST_METRICS)}.")
        tp, fp = self._tp_steps, self._fp_steps
        return int(np.argmax(_scores(metric, tp, fp, self.n_positive - tp, self.n_negative - fp)))

    def curve(self) -> CurveData:
        """Dice, IoU, precision, recall and accuracy at every slider step (for the plot)."""
        tp = self._tp_steps.copy()
        fp = self._fp_steps.copy()
        fn = self.n_positive - tp
        tn = self.n_negative - fp
        both_empty = (tp == 0) & (fp == 0) & (fn == 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            tpf = tp.astype(np.float64)
            precision = np.where(tp + fp > 0, tpf / (tp + fp), np.where(both_empty, 1.0, np.nan))
            recall = np.where(tp + fn > 0, tpf / (tp + fn), np.where(both_empty, 1.0, np.nan))
            accuracy = (tpf + tn) / self.n_pixels if self.n_pixels else np.full(tp.shape, np.nan)
        return CurveData(
            thresholds=self.thresholds, tp=tp, fp=fp, fn=fn, tn=tn,
            dice=_scores("dice", tp, fp, fn, tn), iou=_scores("iou", tp, fp, fn, tn),
            precision=precision, recall=recall, accuracy=np.asarray(accuracy, dtype=np.float64),
        )


class ThresholdCurve(StepCounts):
    """Cached counts of ``prob > t`` against ground truth, for every threshold.

    Build it once per probability map and ground truth (in a worker thread:
    it is O(pixels)), then query it for every slider move.

    Parameters
    ----------
    prob : array-like of float
        Probability map (any shape; float64 is converted to float32).
    truth : array-like of int or bool
        Mask or instance labels of the same shape; foreground where non-zero.
    region : array-like of bool, optional
        Only these pixels count (the prediction's shape, or one slice's).
    steps : int
        Number of slider positions, evenly spaced over ``value_range``
        (default 1001: a step of 0.001 over [0, 1]).
    value_range : (float, float)
        The slider's range; also the range :meth:`best_threshold` searches.
    planes : sequence of int, optional
        Flat indices (C order over the leading axes) of the planes that count
        (the predicted planes of a partly predicted stack); None: all. The
        same as building the curve from ``select_planes(prob, planes)`` and
        ``select_planes(truth, planes)`` (and of the region, unless it is one
        slice's).

    Attributes
    ----------
    shape : tuple of int
        The probability map's shape (the whole stack, also with ``planes``).
    planes : tuple of int or None
        The planes that count (None: all).

    Raises
    ------
    InputError
        Invalid inputs (see :func:`napari_segloop.core.evaluation.evaluate`), NaN
        probabilities, an empty region, fewer than 2 steps, invalid planes.

    Notes
    -----
    The instance is a snapshot: it copies what it needs, so later edits of
    the arrays (painting the ground truth) need a new instance. Queries are
    thread-safe.
    """

    def __init__(
        self,
        prob: Any,
        truth: Any,
        region: Any = None,
        *,
        steps: int = DEFAULT_STEPS,
        value_range: tuple[float, float] = (0.0, 1.0),
        planes: Sequence[int] | None = None,
    ) -> None:
        prob_arr = as_probability(prob)
        truth_arr = check_truth(truth, prob_arr.shape)
        full_shape = tuple(prob_arr.shape)
        self.planes: tuple[int, ...] | None = None
        if planes is None:
            region_arr = check_region(region, prob_arr.shape)
        else:
            self.planes = check_planes(planes, full_shape)
            region_arr = check_region(region, full_shape, allow_empty=True)
            prob_arr = select_planes(prob_arr, self.planes)
            truth_arr = select_planes(truth_arr, self.planes)
            region_arr = select_region(region_arr, self.planes)
        fg = truth_foreground(truth_arr)
        if region_arr is None:
            values = np.array(prob_arr, dtype=np.float32, copy=True).ravel()
            labels = np.array(fg, dtype=bool, copy=True).ravel()
        else:
            values = prob_arr[region_arr]
            labels = fg[region_arr]
        edges = slider_edges(steps, value_range)
        negative, positive = step_histogram(values, labels, edges,
                                            (float(value_range[0]), float(value_range[1])))
        super().__init__(negative, positive, steps=steps, value_range=value_range, shape=full_shape)
        self._values: np.ndarray | None = values
        self._labels: np.ndarray | None = labels
        self._sorted: np.ndarray | None = None
        self._cumpos: np.ndarray | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ exact, any threshold

    @property
    def exact_ready(self) -> bool:
        """True once the sorted probabilities exist (queries off the steps are then O(log n))."""
        return self._sorted is not None

    def prepare_exact(self) -> None:
        """Sort the probabilities once (O(n log n)); call it in a worker to keep the GUI responsive."""
        if self._sorted is not None:
            return
        with self._lock:
            if self._sorted is not None:
                return
            values, labels = self._values, self._labels
            assert values is not None and labels is not None
            keys, has_negative = _sort_keys(values, labels)
            keys.sort()
            self._sorted, self._cumpos = _split_sorted_keys(keys, has_negative)
            del keys
            self._values = self._labels = None

    def counts(self, threshold: float) -> tuple[int, int, int, int]:
        """Exact (TP, FP, FN, TN) of ``prob > threshold``.

        O(1) when ``threshold`` is a slider step; otherwise O(log n) in the
        sorted probabilities (sorted on first use).
        """
        step = self.step_of(threshold)
        if step is not None:
            return self.counts_at_step(step)
        self.prepare_exact()
        assert self._sorted is not None and self._cumpos is not None
        below = int(np.searchsorted(self._sorted, np.float32(threshold), side="right"))
        pos_below = int(self._cumpos[below])
        tp = self.n_positive - pos_below
        fp = self.n_negative - (below - pos_below)
        return tp, fp, self.n_positive - tp, self.n_negative - fp

    def metrics(self, threshold: float) -> PixelMetrics:
        """All pixel metrics of ``prob > threshold`` (exact; O(1) at slider steps)."""
        tp, fp, fn, tn = self.counts(threshold)
        return PixelMetrics(tp, fp, fn, tn, float(threshold))

    # ------------------------------------------------------------------ best threshold, curve

    def best_threshold(self, metric: str = "dice") -> BestThreshold:
        """The exact optimum of ``metric`` over every threshold in ``value_range``.

        The mask ``prob > t`` only changes when ``t`` crosses a probability
        value, so the distinct masks are those of ``t = low end of the range``
        and of ``t = each distinct probability value`` in the range. All of
        them are scored from cumulative counts along the sorted probabilities
        (one sort, then O(n)); the smallest optimal threshold is returned.

        Parameters
        ----------
        metric : {"dice", "f1", "iou", "accuracy"}
            Dice and F1 are the same; IoU has the same optimum as Dice.
        """
        metric = metric.lower()
        if metric not in BEST_METRICS:
            raise InputError(f"Unknown metric {metric!r}; choose one of {', '.join(BEST_METRICS)}.")
        self.prepare_exact()
        s, cumpos = self._sorted, self._cumpos
        assert s is not None and cumpos is not None
        lo32, hi32 = np.float32(self.value_range[0]), np.float32(self.value_range[1])
        n, n_pos, n_neg = s.size, self.n_positive, self.n_negative
        # A "cut" i makes the i smallest probabilities background. The cut of t = lo is the
        # number of values <= lo; the cut of a distinct value u in (lo, hi] is the index just
        # past its last occurrence: cuts i with s[i - 1] != s[i] (or i == n).
        i_lo = int(np.searchsorted(s, lo32, side="right"))
        i_hi = int(np.searchsorted(s, hi32, side="right"))

        def score_at(cuts: np.ndarray) -> np.ndarray:
            pb = cumpos[cuts].astype(np.int64)
            return _scores(metric, n_pos - pb, n_neg - (cuts - pb), pb, cuts - pb)

        best_i = i_lo
        best_score = float(score_at(np.array([i_lo], dtype=np.int64))[0])
        # Scan the other cuts in chunks (no full-size temporaries); the first maximum wins,
        # which is the smallest optimal threshold.
        stop = min(i_hi, n - 1)
        for start in range(i_lo + 1, stop + 1, _CHUNK):
            end = min(start + _CHUNK, stop + 1)
            valid = s[start:end] != s[start - 1:end - 1]
            if not valid.any():
                continue
            score = score_at(np.arange(start, end, dtype=np.int64))
            score[~valid] = -np.inf
            k = int(np.argmax(score))
            if score[k] > best_score:
                best_score, best_i = float(score[k]), start + k
        if i_hi == n and n > i_lo:  # the cut past the largest value: an empty mask
            last = float(score_at(np.array([n], dtype=np.int64))[0])
            if last > best_score:
                best_score, best_i = last, n
        t = lo32 if best_i == i_lo else s[best_i - 1]
        upper = float(s[best_i]) if best_i < n else float("inf")
        pb = int(cumpos[best_i])
        pm = PixelMetrics(n_pos - pb, n_neg - (best_i - pb), pb, best_i - pb, float(t))
        return BestThreshold(float(t), upper, metric, best_score, pm)


def otsu_threshold(prob: Any, region: Any = None, nbins: int = 256, *,
                   planes: Sequence[int] | None = None) -> float:
    """Otsu's threshold of the probabilities (no ground truth needed).

    Uses :func:`skimage.filters.threshold_otsu`, whose result splits
    foreground as ``prob > threshold``, the rule used everywhere.

    Parameters
    ----------
    prob : array-like of float
        Probability map.
    region : array-like of bool, optional
        Only these pixels are used.
    nbins : int
        Histogram bins.
    planes : sequence of int, optional
        Only these planes (flat indices over the leading axes) are used, e.g.
        the predicted planes of a partly predicted stack; None: all.

    Returns
    -------
    float
        For a constant map, that constant (an empty mask).
    """
    from skimage.filters import threshold_otsu

    arr = as_probability(prob)
    if planes is None:
        region_arr = check_region(region, arr.shape)
    else:
        chosen = check_planes(planes, arr.shape)
        region_arr = check_region(region, arr.shape, allow_empty=True)
        arr = select_planes(arr, chosen)
        region_arr = select_region(region_arr, chosen)
    values = arr[region_arr] if region_arr is not None else arr
    return float(threshold_otsu(values, nbins=int(nbins)))
