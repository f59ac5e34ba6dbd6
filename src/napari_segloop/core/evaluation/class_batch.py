"""K-class evaluation of files and folders (``segloop evaluate --classes K``).

Each pair is a class map (integer; K = unassigned) or K-class probabilities
(float, class axis first, as ``segloop predict`` writes them) and a ground
truth of class ids. Rows give per-class Dice, IoU, precision and recall; the
summary pools the pixels of all pairs (one confusion matrix), so a small
image weighs what its pixels weigh.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.evaluation.batch import pair_files
from napari_segloop.core.evaluation.multiclass import ClassMetrics, evaluate_classes
from napari_segloop.core.events import Event, Notice, Progress

__all__ = ["ClassReport", "evaluate_class_files"]


@dataclass
class ClassReport:
    """Per-pair :class:`ClassMetrics`, their pooled total and the pairs that failed."""

    pairs: list[tuple[str, ClassMetrics]] = field(default_factory=list)
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def total(self) -> ClassMetrics | None:
        """All pairs pooled (None when every pair failed)."""
        if not self.pairs:
            return None
        out = self.pairs[0][1]
        for _, m in self.pairs[1:]:
            out = out + m
        return out

    def rows(self) -> list[dict[str, Any]]:
        """CSV rows: one per pair (``image``) and class, then the pooled ones (``image`` "all pairs")."""
        out: list[dict[str, Any]] = []
        items = list(self.pairs)
        if len(items) > 1 and self.total is not None:
            items.append(("all pairs", self.total))
        for name, m in items:
            summary = m.summary()
            for row in m.rows():
                out.append({"image": name, **row, "miou": summary["miou"]})
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every pair, the pooled total and the failures."""
        total = self.total
        return {"pairs": [{"name": n, **m.to_dict()} for n, m in self.pairs],
                "total": total.to_dict() if total is not None else None,
                "errors": self.failures}


def _prediction(arr: np.ndarray, truth_shape: tuple[int, ...], classes: int) -> np.ndarray:
    if arr.dtype.kind == "f":
        if arr.shape != (classes, *truth_shape):
            raise InputError(f"The probabilities have shape {arr.shape}; with {classes} classes and "
                             f"ground truth {truth_shape} they must be {(classes, *truth_shape)}.")
        return arr
    if arr.shape != truth_shape:
        raise InputError(f"The class map {arr.shape} and the ground truth {truth_shape} differ in shape.")
    return arr


def evaluate_class_files(
    prediction: Path, truth: Path, classes: int, *, min_confidence: float = 0.0,
    region: np.ndarray | None = None, pair_by: str = "stem", names: tuple[str, ...] | None = None,
    postprocess: Any = None, object_dims: int = 2,
) -> Generator[Event, None, ClassReport]:
    """Score class maps (or class probabilities) against class-id ground truth, file by file.

    Parameters
    ----------
    prediction, truth : Path
        Two files or two folders (paired as ``segloop evaluate`` pairs them).
    classes : int
        K (3 or more; 2 is the binary evaluation).
    min_confidence : float
        For probability files: pixels below it are unassigned.
    region : numpy.ndarray, optional
        Only where it is non-zero.
    pair_by : {"stem", "order"}
    names : tuple of str, optional
        Class names.
    postprocess : PostProcess, optional
        Applied to each class map, class by class
        (:func:`~napari_segloop.core.masks.postprocess_classes`), as
        ``segloop predict --threshold auto`` applies it.
    object_dims : {2, 3}
        Objects of stacks for the post-processing.

    Yields
    ------
    Progress, Notice
        One progress per pair; a notice per failed pair.
    """
    from napari_segloop.core.evaluation.multiclass import class_map
    from napari_segloop.core.io.images import read_image
    from napari_segloop.core.masks import postprocess_classes

    if classes < 2:
        raise InputError(f"--classes must be at least 2; got {classes}.")
    pairs, errors, notes = pair_files(prediction, truth, pair_by)
    for text in notes:
        yield Notice(text)
    report = ClassReport()
    for text in errors:
        report.failures.append({"image": "", "error": text})
        yield Notice(text, "error")
    for k, (name, pred_path, truth_path) in enumerate(pairs):
        yield Progress(k, len(pairs), name)
        try:
            gt = read_image(truth_path)
            pred = _prediction(read_image(pred_path), gt.shape, classes)
            if postprocess is not None:
                if pred.dtype.kind == "f":
                    pred = class_map(pred, min_confidence)
                pred = postprocess_classes(pred, classes, postprocess, object_dims=object_dims)
            sel = None if region is None else np.asarray(region) != 0
            report.pairs.append((name, evaluate_classes(pred, gt, classes, sel, min_confidence, names)))
        except SegloopError as exc:
            text = f"{pred_path.name}: {exc}"
            report.failures.append({"image": name, "error": text})
            yield Notice(text, "error")
    yield Progress(len(pairs), len(pairs), "done")
    return report
