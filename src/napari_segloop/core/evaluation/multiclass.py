"""Several classes: the class map of a softmax model, the K x K confusion matrix, per-class scores.

Conventions (the same in the docks, the CLI and training, see ``docs/multiclass.md``):

* a model with K classes has K softmax outputs; class index 0 is background,
  1 .. K-1 the object classes;
* a **class map** holds the class index of every pixel, and ``K`` where the
  winning probability is below the minimum confidence ("unassigned");
* ground truth is a class map without unassigned pixels (0 .. K-1).

The confusion matrix has one row per true class and one column per predicted
class, plus a last column for unassigned pixels: an unassigned pixel is a miss
(a false negative) of its true class and a false positive of no class. The
binary evaluation (:mod:`.pixels`) is not touched by any of this.

numpy only; nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = [
    "ClassMetrics",
    "check_class_truth",
    "class_confusion_image",
    "class_map",
    "confusion_matrix",
    "evaluate_classes",
    "per_class_scores",
]


def class_map(probabilities: Any, min_confidence: float = 0.0) -> np.ndarray:
    """The arg-max of ``(K, ...)`` class probabilities, ``K`` where the winner is below ``min_confidence``.

    Parameters
    ----------
    probabilities : array-like
        ``(K, ...)`` float class probabilities (softmax outputs), K >= 2.
    min_confidence : float
        Pixels whose highest probability is below this value are left
        unassigned (value K). 0 assigns every pixel.

    Returns
    -------
    numpy.ndarray
        uint8 class indices (uint16 beyond 255 classes), shaped like one channel.
    """
    prob = np.asarray(probabilities)
    if prob.ndim < 3 or prob.shape[0] < 2:
        raise InputError(f"Class probabilities must be (K, ...) with K >= 2 classes; got {prob.shape}.")
    if not 0.0 <= float(min_confidence) <= 1.0:
        raise InputError(f"The minimum confidence must be in [0, 1]; got {min_confidence}.")
    k = prob.shape[0]
    dtype = np.uint8 if k < 255 else np.uint16
    out = np.argmax(prob, axis=0).astype(dtype)
    if min_confidence > 0:
        out[np.max(prob, axis=0) < float(min_confidence)] = k
    return out


def check_class_truth(truth: Any, classes: int, name: str = "ground truth") -> np.ndarray:
    """Return ``truth`` as an integer array after checking it holds class ids ``0 .. classes-1``."""
    arr = np.asarray(truth)
    if arr.dtype.kind not in "biu":
        raise InputError(f"The {name} must hold integer class ids, not {arr.dtype}.")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= classes):
        raise InputError(
            f"The {name} has values {int(arr.min())} to {int(arr.max())}, but a {classes}-class model "
            f"uses 0 = background and 1 to {classes - 1} for the classes."
        )
    return arr


def confusion_matrix(prediction: Any, truth: Any, classes: int, region: Any = None) -> np.ndarray:
    """The ``(K, K + 1)`` confusion matrix: rows true class, columns predicted class, last unassigned.

    Parameters
    ----------
    prediction : array-like
        A class map (values 0 .. K, K unassigned).
    truth : array-like
        Class ids 0 .. K-1, of the same shape.
    classes : int
        K.
    region : array-like of bool, optional
        Only these pixels count.

    Returns
    -------
    numpy.ndarray
        int64 counts.
    """
    pred = np.asarray(prediction)
    true = check_class_truth(truth, classes)
    if pred.shape != true.shape:
        raise InputError(f"The class map {pred.shape} and the ground truth {true.shape} differ in shape.")
    if pred.size and (int(pred.min()) < 0 or int(pred.max()) > classes):
        raise InputError(f"The class map has values up to {int(pred.max())}; a {classes}-class map "
                         f"holds 0 to {classes - 1} and {classes} for unassigned pixels.")
    if region is not None:
        sel = np.asarray(region, dtype=bool)
        if sel.shape != true.shape:
            raise InputError(f"The region {sel.shape} and the ground truth {true.shape} differ in shape.")
        pred, true = pred[sel], true[sel]
    codes = true.astype(np.int64).ravel() * (classes + 1) + pred.astype(np.int64).ravel()
    return np.bincount(codes, minlength=classes * (classes + 1)).reshape(classes, classes + 1)


def per_class_scores(confusion: np.ndarray) -> dict[str, Any]:
    """Per-class Dice, IoU, precision and recall, and their means, from a confusion matrix.

    Parameters
    ----------
    confusion : numpy.ndarray
        ``(K, K)`` or ``(K, K + 1)`` (last column unassigned) counts.

    Returns
    -------
    dict
        ``dice``, ``iou``, ``precision``, ``recall`` (arrays of K, NaN where the
        class is in neither the truth nor the prediction), ``support`` (true
        pixels per class), ``mean_dice`` and ``mean_iou`` (over the object
        classes 1 .. K-1 that occur), ``miou`` (over all K classes that occur,
        background included: the usual mIoU), ``accuracy``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    k = cm.shape[0]
    tp = np.diag(cm[:, :k])
    fp = cm[:, :k].sum(axis=0) - tp
    fn = cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)

    def mean(values: np.ndarray) -> float:
        finite = values[np.isfinite(values)]
        return float(finite.mean()) if finite.size else 1.0

    total = cm.sum()
    return {
        "dice": dice, "iou": iou, "precision": precision, "recall": recall,
        "support": cm.sum(axis=1).astype(np.int64),
        "mean_dice": mean(dice[1:]), "mean_iou": mean(iou[1:]), "miou": mean(iou),
        "accuracy": float(tp.sum() / total) if total else 1.0,
    }


@dataclass(frozen=True)
class ClassMetrics:
    """The multi-class scores of one image (or of pooled images).

    Attributes
    ----------
    confusion : numpy.ndarray
        ``(K, K + 1)`` counts (:func:`confusion_matrix`).
    names : tuple of str
        Class names (``"background"``, ``"class 1"``, ... unless given).
    """

    confusion: np.ndarray
    names: tuple[str, ...]

    @property
    def classes(self) -> int:
        """K."""
        return int(self.confusion.shape[0])

    @property
    def scores(self) -> dict[str, Any]:
        """:func:`per_class_scores` of the confusion matrix."""
        return per_class_scores(self.confusion)

    @property
    def miou(self) -> float:
        """Mean IoU over all classes, background included."""
        return float(self.scores["miou"])

    @property
    def unassigned(self) -> int:
        """Pixels left unassigned (below the minimum confidence)."""
        return int(self.confusion[:, -1].sum()) if self.confusion.shape[1] > self.classes else 0

    def __add__(self, other: ClassMetrics) -> ClassMetrics:
        """Pool the counts of two images."""
        if other.confusion.shape != self.confusion.shape:
            raise InputError(f"Cannot pool {self.classes}-class and {other.classes}-class scores.")
        return ClassMetrics(self.confusion + other.confusion, self.names)

    def rows(self) -> list[dict[str, Any]]:
        """One row per class: name, support, Dice, IoU, precision, recall (None: undefined)."""
        s = self.scores

        def value(key: str, c: int) -> float | None:
            v = float(s[key][c])
            return None if np.isnan(v) else v

        return [{"class": c, "name": self.names[c], "support": int(s["support"][c]),
                 **{key: value(key, c) for key in ("dice", "iou", "precision", "recall")}}
                for c in range(self.classes)]

    def summary(self) -> dict[str, float]:
        """mIoU, mean Dice and IoU of the object classes, pixel accuracy, unassigned share."""
        s = self.scores
        total = float(self.confusion.sum())
        return {"miou": float(s["miou"]), "mean_dice": float(s["mean_dice"]),
                "mean_iou": float(s["mean_iou"]), "accuracy": float(s["accuracy"]),
                "unassigned": self.unassigned / total if total else 0.0}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the summary, per-class rows and the matrix."""
        return {**self.summary(), "classes": self.rows(), "confusion": self.confusion.tolist()}


def default_names(classes: int) -> tuple[str, ...]:
    """``("background", "class 1", ..., "class K-1")``."""
    return ("background", *(f"class {c}" for c in range(1, classes)))


def evaluate_classes(prediction: Any, truth: Any, classes: int, region: Any = None,
                     min_confidence: float = 0.0, names: tuple[str, ...] | None = None) -> ClassMetrics:
    """Score a class map, or ``(K, ...)`` class probabilities, against class-id ground truth.

    Parameters
    ----------
    prediction : array-like
        A class map (integer, shaped like ``truth``) or class probabilities
        (float, ``(K, *truth.shape)``; turned into a class map with
        ``min_confidence``).
    truth : array-like
        Class ids 0 .. K-1.
    classes : int
        K.
    region : array-like of bool, optional
        Only these pixels count.
    min_confidence : float
        For probabilities: see :func:`class_map`.
    names : tuple of str, optional
        Class names for the rows.
    """
    pred = np.asarray(prediction)
    if pred.dtype.kind == "f":
        if pred.shape[0] != classes:
            raise InputError(f"The probabilities have {pred.shape[0]} channels; the model has "
                             f"{classes} classes.")
        pred = class_map(pred, min_confidence)
    cm = confusion_matrix(pred, truth, classes, region)
    names = tuple(names) if names else default_names(classes)
    if len(names) != classes:
        raise InputError(f"{len(names)} class names were given for {classes} classes.")
    return ClassMetrics(cm, names)


def class_confusion_image(prediction: Any, truth: Any, cls: int) -> np.ndarray:
    """TP/FP/FN codes (as :func:`~.confusion.confusion_image`) of one class of a class map."""
    from napari_segloop.core.evaluation.confusion import confusion_image

    return confusion_image(np.asarray(prediction) == cls, np.asarray(truth) == cls)
