"""Pixel and object metrics of a segmentation against ground truth, and the confusion image.

The rule used everywhere (GUI, CLI, metrics): a pixel is foreground where
``probability > threshold``; the comparison is made in float32, the precision
of probability maps (a float64 map is converted to float32 first, so every
path of the product gives the same mask for the same threshold).

Ground truth is a binary mask or an instance-label image: for pixel metrics,
foreground is wherever it is non-zero. Floating-point ground truth is refused.

Conventions (documented in ``docs/metrics.md``):

* A ratio whose denominator is zero is ``1.0`` when the prediction and the
  ground truth are *both* empty in the evaluated pixels (perfect agreement),
  and ``None`` (JSON ``null``, an empty CSV cell) otherwise. Dice and IoU are
  therefore always numbers; precision is ``None`` when nothing is predicted
  but there is ground truth, recall is ``None`` when something is predicted
  but the ground truth is empty. No metric is ever NaN.
* Objects are 2-D: connected components (4-connectivity) of binary masks, or
  the ids of instance-label images, taken slice by slice in stacks. A
  predicted object and a true object match when their IoU is > 0.5; at most
  one partner can exceed 0.5, so the matching is unique without an
  assignment solver.
* A region (boolean mask) restricts every metric to the pixels inside it;
  objects are clipped to the region.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.atomic import atomic_path
from napari_segloop.core.errors import InputError

__all__ = [
    "CONFUSION_COLORS",
    "CONFUSION_HEX",
    "CONFUSION_NAMES",
    "FN",
    "FP",
    "IOU_MATCH",
    "METRIC_COLUMNS",
    "TN",
    "TP",
    "Evaluation",
    "ObjectMetrics",
    "PixelMetrics",
    "StackEvaluation",
    "as_probability",
    "check_region",
    "check_truth",
    "confusion_image",
    "evaluate",
    "evaluate_stack",
    "label_objects",
    "match_objects",
    "metrics_csv_text",
    "pixel_metrics",
    "prediction_mask",
    "truth_foreground",
    "write_metrics_csv",
]

#: Confusion codes of :func:`confusion_image`.
TN, TP, FP, FN = 0, 1, 2, 3

#: Human-readable name of each confusion code (for legends).
CONFUSION_NAMES: dict[int, str] = {
    TN: "true negative",
    TP: "true positive",
    FP: "false positive",
    FN: "false negative",
}

#: Okabe-Ito (Wong 2011) colours of the confusion codes, as hex. Of all triples of
#: the palette, yellow / vermillion / blue keeps the largest worst-case CIELAB
#: distance between the three under simulated deuteranopia, protanopia and
#: tritanopia. True negatives are transparent.
CONFUSION_HEX: dict[int, str] = {TN: "#00000000", TP: "#F0E442", FP: "#D55E00", FN: "#0072B2"}

#: RGBA colours in [0, 1] for a napari ``DirectLabelColormap`` (code -> colour).
CONFUSION_COLORS: dict[int, tuple[float, float, float, float]] = {
    TN: (0.0, 0.0, 0.0, 0.0),
    TP: (240 / 255, 228 / 255, 66 / 255, 1.0),
    FP: (213 / 255, 94 / 255, 0.0, 1.0),
    FN: (0.0, 114 / 255, 178 / 255, 1.0),
}

#: Objects match when their intersection over union is strictly greater than this.
IOU_MATCH = 0.5

#: Column order of metric rows (CSV export, tables). Unknown extra keys follow.
METRIC_COLUMNS: tuple[str, ...] = (
    "name", "slice", "threshold", "tp", "fp", "fn", "tn", "n_pixels",
    "dice", "iou", "precision", "recall", "accuracy",
    "n_true_objects", "n_pred_objects", "matched_objects", "missed_objects", "spurious_objects",
    "object_precision", "object_recall", "object_f1", "mean_matched_iou", "error",
)



def _ratio(num: int | float, den: int | float, both_empty: bool) -> float | None:
    """``num / den``; for ``den == 0``: 1.0 if prediction and truth are both empty, else None."""
    if den == 0:
        return 1.0 if both_empty else None
    return float(num) / float(den)


# --------------------------------------------------------------------------- pixel metrics


@dataclass(frozen=True)
class PixelMetrics:
    """Confusion counts of a binary prediction against ground truth, with derived metrics.

    Parameters
    ----------
    tp, fp, fn, tn : int
        True positive, false positive, false negative and true negative pixel counts.
    threshold : float or None
        The threshold that produced the prediction (None for a given mask).

    Notes
    -----
    Counts add up over slices or images (``a + b``), so pooled ("micro")
    metrics of a stack or a folder come from summed counts. Undefined ratios
    follow the module's convention: ``1.0`` if prediction and truth are both
    empty, else ``None``.
    """

    tp: int
    fp: int
    fn: int
    tn: int
    threshold: float | None = None

    @property
    def n_pixels(self) -> int:
        """Number of evaluated pixels."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def _both_empty(self) -> bool:
        return self.tp == 0 and self.fp == 0 and self.fn == 0

    @property
    def dice(self) -> float:
        """Dice coefficient = F1 = 2 TP / (2 TP + FP + FN); 1.0 for two empty masks."""
        return _ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn, True)  # type: ignore[return-value]

    f1 = dice

    @property
    def iou(self) -> float:
        """Intersection over union (Jaccard) = TP / (TP + FP + FN); 1.0 for two empty masks."""
        return _ratio(self.tp, self.tp + self.fp + self.fn, True)  # type: ignore[return-value]

    @property
    def precision(self) -> float | None:
        """TP / (TP + FP); None when nothing is predicted but the truth is not empty."""
        return _ratio(self.tp, self.tp + self.fp, self._both_empty)

    @property
    def recall(self) -> float | None:
        """TP / (TP + FN) (sensitivity); None when the truth is empty but the prediction is not."""
        return _ratio(self.tp, self.tp + self.fn, self._both_empty)

    @property
    def accuracy(self) -> float | None:
        """(TP + TN) / number of pixels; None when no pixel is evaluated."""
        n = self.n_pixels
        return None if n == 0 else (self.tp + self.tn) / n

    def __add__(self, other: PixelMetrics) -> PixelMetrics:
        if not isinstance(other, PixelMetrics):
            return NotImplemented
        same = self.threshold if self.threshold == other.threshold else None
        return PixelMetrics(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                            self.tn + other.tn, same)

    def to_dict(self) -> dict[str, Any]:
        """Return the counts and metrics as JSON-ready values (None for undefined)."""
        return {
            "threshold": None if self.threshold is None else float(self.threshold),
            "tp": int(self.tp), "fp": int(self.fp), "fn": int(self.fn), "tn": int(self.tn),
            "n_pixels": int(self.n_pixels),
            "dice": self.dice, "iou": self.iou, "precision": self.precision,
            "recall": self.recall, "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class ObjectMetrics:
    """Object-level agreement: objects matched one-to-one at IoU > 0.5.

    Parameters
    ----------
    n_true, n_pred : int
        Number of ground-truth and predicted objects.
    n_matched : int
        Number of matched pairs (object-level true positives).
    iou_sum : float
        Sum of the IoU of the matched pairs (kept so that results add up).
    """

    n_true: int
    n_pred: int
    n_matched: int
    iou_sum: float = 0.0

    @property
    def missed(self) -> int:
        """True objects without a match (object-level false negatives)."""
        return self.n_true - self.n_matched

    @property
    def spurious(self) -> int:
        """Predicted objects without a match (object-level false positives)."""
        return self.n_pred - self.n_matched

    @property
    def _both_empty(self) -> bool:
        return self.n_true == 0 and self.n_pred == 0

    @property
    def precision(self) -> float | None:
        """Matched / predicted objects; 1.0 if there are no objects at all, None if only truth has some."""
        return _ratio(self.n_matched, self.n_pred, self._both_empty)

    @property
    def recall(self) -> float | None:
        """Matched / true objects; 1.0 if there are no objects at all, None if only predictions exist."""
        return _ratio(self.n_matched, self.n_true, self._both_empty)

    @property
    def f1(self) -> float:
        """2 matched / (true + predicted objects); 1.0 if there are no objects at all."""
        return _ratio(2 * self.n_matched, self.n_true + self.n_pred, True)  # type: ignore[return-value]

    @property
    def mean_matched_iou(self) -> float | None:
        """Mean IoU of the matched pairs; None without a match."""
        return None if self.n_matched == 0 else self.iou_sum / self.n_matched

    def __add__(self, other: ObjectMetrics) -> ObjectMetrics:
        if not isinstance(other, ObjectMetrics):
            return NotImplemented
        return ObjectMetrics(self.n_true + other.n_true, self.n_pred + other.n_pred,
                             self.n_matched + other.n_matched, self.iou_sum + other.iou_sum)

    def to_dict(self) -> dict[str, Any]:
        """Return counts and metrics as JSON-ready values (None for undefined)."""
        return {
            "n_true_objects": int(self.n_true), "n_pred_objects": int(self.n_pred),
            "matched_objects": int(self.n_matched), "missed_objects": int(self.missed),
            "spurious_objects": int(self.spurious),
            "object_precision": self.precision, "object_recall": self.recall,
            "object_f1": self.f1, "mean_matched_iou": self.mean_matched_iou,
        }


_OBJECT_KEYS = ("n_true_objects", "n_pred_objects", "matched_objects", "missed_objects",
                "spurious_objects", "object_precision", "object_recall", "object_f1",
                "mean_matched_iou")


@dataclass(frozen=True)
class Evaluation:
    """Pixel and (optionally) object metrics of one image, slice or stack.

    Attributes
    ----------
    pixel : PixelMetrics
    objects : ObjectMetrics or None
        None when object metrics were not requested.
    notes : tuple of str
        Remarks for the user (instance ids read as foreground, empty truth, ...).
    """

    pixel: PixelMetrics
    objects: ObjectMetrics | None = None
    notes: tuple[str, ...] = ()

    @property
    def threshold(self) -> float | None:
        """The threshold used, or None for a given mask."""
        return self.pixel.threshold

    def __add__(self, other: Evaluation) -> Evaluation:
        if not isinstance(other, Evaluation):
            return NotImplemented
        objects = None
        if self.objects is not None and other.objects is not None:
            objects = self.objects + other.objects
        notes = tuple(dict.fromkeys(self.notes + other.notes))
        return Evaluation(self.pixel + other.pixel, objects, notes)

    def to_dict(self) -> dict[str, Any]:
        """One flat, JSON-ready row: pixel metrics, then object metrics (None when not computed)."""
        row = self.pixel.to_dict()
        if self.objects is not None:
            row.update(self.objects.to_dict())
        else:
            row.update(dict.fromkeys(_OBJECT_KEYS))
        return row


@dataclass(frozen=True)
class StackEvaluation:
    """Per-slice and whole-stack results of :func:`evaluate_stack`.

    Attributes
    ----------
    slices : list of Evaluation
        One per 2-D slice, in C order of the leading axes.
    whole : Evaluation
        The whole stack: summed pixel counts and summed object counts.
    """

    slices: list[Evaluation] = field(default_factory=list)
    whole: Evaluation | None = None

    def rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Rows for a table or CSV: one per slice (``slice`` = index), then the whole stack (``"all"``)."""
        out = []
        for i, ev in enumerate(self.slices):
            out.append({"name": name, "slice": i, **ev.to_dict()})
        if self.whole is not None:
            out.append({"name": name, "slice": "all", **self.whole.to_dict()})
        return out


# --------------------------------------------------------------------------- input checks


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


# --------------------------------------------------------------------------- pixel counts


def pixel_metrics(
    pred: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None, threshold: float | None = None
) -> PixelMetrics:
    """Count TP, FP, FN and TN of a boolean prediction against boolean truth.

    Parameters
    ----------
    pred, truth : ndarray of bool
        Foreground of the prediction and of the truth, of the same shape.
    region : ndarray of bool, optional
        Only pixels inside it are counted.
    threshold : float, optional
        Recorded in the result.
    """
    if region is not None:
        pred = pred[region]
        truth = truth[region]
        n = int(pred.size)
    else:
        n = int(pred.size)
    n_pred = int(np.count_nonzero(pred))
    n_true = int(np.count_nonzero(truth))
    tp = int(np.count_nonzero(np.logical_and(pred, truth)))
    fp = n_pred - tp
    fn = n_true - tp
    return PixelMetrics(tp, fp, fn, n - tp - fp - fn, threshold)


# --------------------------------------------------------------------------- objects


def _slice_structure(ndim: int) -> np.ndarray:
    """4-connectivity within each 2-D slice, no connection between slices."""
    from scipy import ndimage as ndi

    structure = np.zeros((3,) * ndim, dtype=bool)
    structure[(1,) * (ndim - 2)] = ndi.generate_binary_structure(2, 1)
    return structure


def _is_binary(arr: np.ndarray) -> bool:
    """True if ``arr`` has at most one distinct non-zero value (a mask, not instance ids)."""
    if arr.dtype == bool:
        return True
    nonzero = np.count_nonzero(arr)
    if nonzero == 0:
        return True
    mx, mn = arr.max(), arr.min()
    if mn >= 0 and mx <= 1:
        return True
    if mn < 0 and mx > 0:
        return False
    ref = mx if mx != 0 else mn
    return int(np.count_nonzero(arr == ref)) == nonzero


def label_objects(arr: np.ndarray, region: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Return consecutive object ids (0 = background) and the number of objects.

    A binary mask (at most one distinct non-zero value) is split into
    connected components (4-connectivity); an instance-label image keeps its
    ids. Objects are 2-D: in a stack every slice has its own objects, even
    where an id repeats across slices.

    Parameters
    ----------
    arr : ndarray of bool or int
        Mask or instance labels, 2-D or a stack (..., Y, X).
    region : ndarray of bool, optional
        Pixels outside are set to background first (objects are clipped).

    Returns
    -------
    labels : ndarray of int32 or int64
        Ids ``1..n``.
    n : int
    """
    from scipy import ndimage as ndi

    arr = np.asarray(arr)
    if region is not None:
        arr = np.where(region, arr, 0)
    if _is_binary(arr):
        labels, n = ndi.label(arr != 0, structure=_slice_structure(arr.ndim))
        return labels, int(n)
    ids = arr.astype(np.int64)
    if ids.min() < 0:  # negative ids: shift so that 0 stays background
        ids = np.where(ids != 0, ids - ids.min() + 1, 0)
    if arr.ndim > 2:
        n_slices = int(np.prod(arr.shape[:-2]))
        span = int(ids.max()) + 1
        offsets = (np.arange(n_slices, dtype=np.int64) * span).reshape((*arr.shape[:-2], 1, 1))
        ids = np.where(ids != 0, ids + offsets, 0)
    return _consecutive(ids)


def _consecutive(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Map non-negative ids to 1..n in order (0 stays 0)."""
    mx = int(ids.max()) if ids.size else 0
    if mx <= max(2 * ids.size, 1 << 20):
        present = np.bincount(ids.ravel(), minlength=mx + 1)
        present[0] = 0
        lut = np.zeros(mx + 1, dtype=np.int64)
        keep = np.flatnonzero(present)
        lut[keep] = np.arange(1, keep.size + 1)
        out = lut[ids]
        n = int(keep.size)
    else:
        uniq, inverse = np.unique(ids.ravel(), return_inverse=True)
        if uniq[0] != 0:
            inverse = inverse + 1
        out = inverse.reshape(ids.shape)
        n = int(uniq.size - (1 if uniq[0] == 0 else 0))
    dtype = np.int32 if n < np.iinfo(np.int32).max else np.int64
    return out.astype(dtype, copy=False), n


def match_objects(
    truth_labels: np.ndarray,
    pred_labels: np.ndarray,
    n_true: int | None = None,
    n_pred: int | None = None,
    iou_threshold: float = IOU_MATCH,
) -> ObjectMetrics:
    """Match objects of two label images at IoU > ``iou_threshold``.

    The overlap of every (true, predicted) pair is read from one contingency
    table built with ``np.bincount`` (or ``np.unique`` when the table would
    be large), in O(pixels); there is no loop over objects.

    Parameters
    ----------
    truth_labels, pred_labels : ndarray of int
        Consecutive ids ``1..n`` (0 = background), as from :func:`label_objects`.
    n_true, n_pred : int, optional
        Number of objects (default: the maximum id).
    iou_threshold : float
        Pairs match when their IoU is strictly greater. With the default 0.5
        the matching is unique: an object cannot overlap two others by more
        than half of each union.
    """
    t = np.asarray(truth_labels).ravel()
    p = np.asarray(pred_labels).ravel()
    if t.shape != p.shape:
        raise InputError(f"Label images of different sizes: {t.size} and {p.size} pixels.")
    nt = int(t.max()) if n_true is None and t.size else int(n_true or 0)
    n_p = int(p.max()) if n_pred is None and p.size else int(n_pred or 0)
    if nt == 0 or n_p == 0:
        return ObjectMetrics(nt, n_p, 0, 0.0)
    area_t = np.bincount(t, minlength=nt + 1)
    area_p = np.bincount(p, minlength=n_p + 1)
    both = (t > 0) & (p > 0)
    tt = t[both].astype(np.int64)
    pp = p[both].astype(np.int64)
    key = tt * (n_p + 1) + pp
    cells = (nt + 1) * (n_p + 1)
    if cells <= max(4 * key.size, 1 << 22):
        table = np.bincount(key, minlength=cells)
        keys = np.flatnonzero(table)
        inter = table[keys]
    else:
        keys, inter = np.unique(key, return_counts=True)
    ti, pi = np.divmod(keys, n_p + 1)
    union = area_t[ti] + area_p[pi] - inter
    iou = inter / union
    matched = iou > iou_threshold
    if iou_threshold < 0.5:
        # Not unique any more: keep each object's best partner, greedily by IoU.
        order = np.argsort(-iou[matched], kind="stable")
        ti_m, pi_m, iou_m = ti[matched][order], pi[matched][order], iou[matched][order]
        used_t: set[int] = set()
        used_p: set[int] = set()
        total, count = 0.0, 0
        for a, b, v in zip(ti_m.tolist(), pi_m.tolist(), iou_m.tolist(), strict=True):
            if a not in used_t and b not in used_p:
                used_t.add(a)
                used_p.add(b)
                total += v
                count += 1
        return ObjectMetrics(nt, n_p, count, total)
    return ObjectMetrics(nt, n_p, int(np.count_nonzero(matched)), float(iou[matched].sum()))


# --------------------------------------------------------------------------- evaluation


def _prepare(prediction: Any, truth: Any, threshold: float | None, region: Any, postprocess: Any):
    pred = _check_prediction(prediction)
    truth_arr = check_truth(truth, pred.shape)
    region_arr = check_region(region, pred.shape)
    pred_fg, used = prediction_mask(pred, threshold)
    pred_obj: np.ndarray = pred
    if postprocess is not None:
        from napari_segloop.core.threshold import postprocess as run_postprocess

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


def confusion_image(
    prediction: Any,
    truth: Any,
    threshold: float | None = None,
    region: Any = None,
    out: np.ndarray | None = None,
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

    Returns
    -------
    ndarray of uint8
        Same shape as the prediction; colours in :data:`CONFUSION_COLORS`.
    """
    pred = _check_prediction(prediction)
    truth_arr = check_truth(truth, pred.shape)
    region_arr = check_region(region, pred.shape, allow_empty=True)
    pred_fg, _ = prediction_mask(pred, threshold)
    if out is None:
        out = np.empty(pred.shape, dtype=np.uint8)
    elif out.shape != pred.shape or out.dtype != np.uint8:
        raise InputError(f"The output buffer must be uint8 of shape {_shape_text(pred.shape)}.")
    # code = 2 * pred XOR 3 * truth: TP 2^3 = 1, FP 2, FN 3, TN 0 (no lookup table: 3x faster)
    truth_fg = np.ascontiguousarray(truth_foreground(truth_arr))
    np.multiply(truth_fg.view(np.uint8), 3, out=out)
    np.bitwise_xor(out, np.left_shift(np.ascontiguousarray(pred_fg).view(np.uint8), 1), out=out)
    if region_arr is not None:
        out[~region_arr] = TN
    return out


# --------------------------------------------------------------------------- CSV


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "" if v != v else repr(v)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    ordered = [c for c in METRIC_COLUMNS if c in present]
    return ordered + [c for c in present if c not in METRIC_COLUMNS]


def metrics_csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Return rows of metrics as CSV text (header first; None becomes an empty cell).

    Parameters
    ----------
    rows : iterable of mapping
        E.g. ``Evaluation.to_dict()`` with a ``name``, or ``StackEvaluation.rows()``.
    columns : sequence of str, optional
        Column order; default: the known :data:`METRIC_COLUMNS` present, then the others.
    """
    rows = list(rows)
    cols = _columns(rows, columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def write_metrics_csv(
    path: str | os.PathLike, rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None
) -> Path:
    """Write rows of metrics to a CSV file atomically (see :func:`metrics_csv_text`).

    Raises
    ------
    InputError
        If the folder does not exist or the file cannot be written.
    """
    p = Path(path)
    if not p.parent.is_dir():
        raise InputError(f"{p}: the folder {p.parent} does not exist.")
    text = metrics_csv_text(rows, columns)
    try:
        with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        raise InputError(f"{p}: cannot write ({exc.strerror or exc}).") from exc
    return p
