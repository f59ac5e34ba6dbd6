"""Result types of an evaluation: pixel counts, object matches, whole evaluations.

Conventions (documented in ``docs/metrics.md``): a ratio whose denominator is
zero is ``1.0`` when the prediction and the ground truth are *both* empty in
the evaluated pixels (perfect agreement), and ``None`` (JSON ``null``, an
empty CSV cell) otherwise. Dice and IoU are therefore always numbers; no
metric is ever NaN. Every result adds up (``a + b``), so pooled metrics of a
stack or a folder come from summed counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
        One per scored 2-D slice, in C order of the leading axes. With 3-D
        objects their ``objects`` are None (a 3-D object has no per-slice score).
    whole : Evaluation
        The whole stack (its scored planes): summed pixel counts, and summed
        2-D object counts or the 3-D object metrics.
    planes : tuple of int
        The flat plane index (C order over the leading axes) of each slice;
        given as None (the default), it is set to ``(0, ..., len(slices) - 1)``:
        every plane.
    """

    slices: list[Evaluation] = field(default_factory=list)
    whole: Evaluation | None = None
    planes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        planes = tuple(range(len(self.slices))) if self.planes is None else tuple(
            int(p) for p in self.planes)
        if len(planes) != len(self.slices):
            raise ValueError(f"{len(planes)} plane indices for {len(self.slices)} slices.")
        object.__setattr__(self, "planes", planes)

    def rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Rows for a table or CSV: one per slice, then the whole stack (``slice`` = ``"all"``).

        The ``slice`` of a slice's row is its flat plane index (:attr:`planes`).
        """
        out = []
        for plane, ev in zip(self.planes, self.slices, strict=True):
            out.append({"name": name, "slice": plane, **ev.to_dict()})
        if self.whole is not None:
            out.append({"name": name, "slice": "all", **self.whole.to_dict()})
        return out
