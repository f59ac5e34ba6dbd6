"""Painted labels turned into training targets and loss weights.

The three ways a user can annotate (see ``docs/fine_tuning.md``):

``scribbles``
    0 = not annotated (ignored by the loss), 1 = foreground, 2 = background.
    A few strokes are enough; nothing is said about the unpainted pixels.
``dense``
    0 = background, any other value = foreground: full masks, or ground truth
    with one id per object. Every pixel of an annotated slice counts.
``correction``
    A copy of the predicted mask that the user edited: the whole copy is the
    target (0 = background, anything else = foreground), and the pixels that
    differ from the model's own mask weigh more.

With K classes (``classes=K``, K >= 3: background and K - 1 object classes)
the same three modes read class values (see ``docs/multiclass.md``):

* scribbles: 0 = not annotated, 1 .. K-1 = the object classes, K = background
  (the binary convention is this with K = 2);
* dense: 0 = background, 1 .. K-1 = the classes; other values are refused;
* correction: an edited class map, as dense; the value K that a class map
  gives pixels left unassigned (below the minimum confidence) is "not
  annotated" and not used.

Targets then hold the class index (0 = background) instead of 0/1.

In a stack only the *annotated slices* are used: a slice with at least one
scribble (mode ``scribbles``) or one foreground pixel (``dense``,
``correction``). An all-zero slice is taken as "not annotated yet", never as
"no objects here".

Everything here is numpy on 2-D planes; nothing imports torch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = [
    "BACKGROUND",
    "FOREGROUND",
    "MODES",
    "Mode",
    "PlaneTarget",
    "annotated_planes",
    "check_labels",
    "class_counts",
    "label_classes",
    "labels_digest",
    "plane_target",
]

Mode = Literal["scribbles", "dense", "correction"]
#: The annotation modes, in the order the dock lists them.
MODES: tuple[str, ...] = ("scribbles", "dense", "correction")
#: Scribble values.
FOREGROUND, BACKGROUND = 1, 2
#: Default extra weight of a pixel the user changed in mode ``correction``.
CHANGED_WEIGHT = 5.0


@dataclass
class PlaneTarget:
    """The training target of one annotated 2-D plane.

    Attributes
    ----------
    target : numpy.ndarray
        float32 ``(H, W)``: 1 for foreground, 0 for background (and for
        unannotated pixels, whose weight is 0).
    weight : numpy.ndarray
        float32 ``(H, W)``: 0 where not annotated, 1 where annotated, more for
        corrected pixels.
    n_foreground, n_background : int
        Annotated pixels of each class.
    """

    target: np.ndarray
    weight: np.ndarray
    n_foreground: int
    n_background: int

    @property
    def annotated(self) -> np.ndarray:
        """Boolean mask of the annotated pixels."""
        return self.weight > 0


def check_mode(mode: str) -> Mode:
    """Return ``mode`` if it is one of :data:`MODES`, else raise :class:`InputError`."""
    if mode not in MODES:
        raise InputError(f"Unknown annotation mode {mode!r}; use one of {', '.join(MODES)}.")
    return mode  # type: ignore[return-value]


def check_labels(labels: np.ndarray, mode: str, name: str = "labels", classes: int = 2) -> None:
    """Check that a labels array can be read in ``mode`` with ``classes`` classes.

    Raises
    ------
    InputError
        Not an integer or boolean array, negative values, or values the mode
        does not define (above 2 for binary scribbles; above K for K-class
        scribbles and corrections, K - 1 for K-class dense labels), with what
        to do instead.
    """
    check_mode(mode)
    arr = np.asarray(labels)
    if arr.dtype.kind not in "biu":
        raise InputError(f"The {name} must be integer labels (a napari Labels layer), not {arr.dtype}.")
    if arr.ndim < 2 or arr.size == 0:
        raise InputError(f"The {name} must be an image of at least 2 dimensions; got shape {arr.shape}.")
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise InputError(f"The {name} have negative values; labels must be 0 or more.")
    top = int(arr.max())
    if classes <= 2:
        if mode == "scribbles" and top > BACKGROUND:
            raise InputError(
                f"Scribbles use 1 = foreground and 2 = background, but the {name} have values up "
                f"to {top}; for full masks or instance labels choose the mode 'dense'."
            )
        return
    if mode == "scribbles" and top > classes:
        raise InputError(
            f"Scribbles for {classes} classes use 1 to {classes - 1} for the classes and {classes} "
            f"for background, but the {name} have values up to {top}."
        )
    if mode == "dense" and top >= classes:
        raise InputError(
            f"Dense labels for {classes} classes use 0 = background and 1 to {classes - 1} for the "
            f"classes, but the {name} have values up to {top}."
        )
    if mode == "correction" and top > classes:
        raise InputError(
            f"A corrected class map for {classes} classes uses 0 to {classes - 1} (and {classes} "
            f"for unassigned pixels), but the {name} have values up to {top}."
        )


def is_annotated(plane: np.ndarray, mode: str, classes: int = 2) -> bool:
    """True when a 2-D labels plane holds any annotation in ``mode``."""
    top = max(2, int(classes))
    if mode == "scribbles":
        return bool(np.any((plane >= 1) & (plane <= top)))
    if mode == "correction" and classes > 2:
        return bool(np.any((plane != 0) & (plane != classes)))
    return bool(np.any(plane))


def annotated_planes(labels: np.ndarray, mode: str, classes: int = 2) -> Iterator[tuple[int, ...]]:
    """Stack positions (``()`` for a 2-D image) of the annotated planes of ``labels``."""
    arr = np.asarray(labels)
    stack = arr.shape[:-2]
    for index in np.ndindex(*stack) if stack else [()]:
        if is_annotated(arr[index], mode, classes):
            yield tuple(int(i) for i in index)


def plane_target(
    plane: np.ndarray,
    mode: str,
    reference: np.ndarray | None = None,
    changed_weight: float = CHANGED_WEIGHT,
    classes: int = 2,
) -> PlaneTarget:
    """Target and weight of one labels plane.

    Parameters
    ----------
    plane : numpy.ndarray
        A 2-D labels plane (integer or bool).
    mode : {"scribbles", "dense", "correction"}
        How to read it.
    reference : numpy.ndarray, optional
        Mode ``correction``: the mask (or, with K classes, the class map)
        before the user's edits; pixels where ``plane`` differs weigh
        ``changed_weight``.
    changed_weight : float
        Weight of a corrected pixel (1 for the others).
    classes : int
        K, the number of classes with background; 2 is the binary case.

    Returns
    -------
    PlaneTarget
    """
    check_mode(mode)
    plane = np.asarray(plane)
    if classes > 2:
        return _class_target(plane, mode, reference, changed_weight, int(classes))
    if mode == "scribbles":
        fg = plane == FOREGROUND
        bg = plane == BACKGROUND
        weight = (fg | bg).astype(np.float32)
        target = fg.astype(np.float32)
        return PlaneTarget(target, weight, int(fg.sum()), int(bg.sum()))
    fg = plane != 0
    target = fg.astype(np.float32)
    weight = np.ones(plane.shape, dtype=np.float32)
    if mode == "correction" and reference is not None:
        changed = fg != (np.asarray(reference) != 0)
        weight[changed] = float(changed_weight)
    n_fg = int(fg.sum())
    return PlaneTarget(target, weight, n_fg, int(fg.size - n_fg))


def _class_target(plane: np.ndarray, mode: str, reference: np.ndarray | None,
                  changed_weight: float, classes: int) -> PlaneTarget:
    """:func:`plane_target` for K >= 3 classes: the target is the class index."""
    values = plane.astype(np.int64, copy=False)
    if mode == "scribbles":
        annotated = (values >= 1) & (values <= classes)
        cls = np.where(values == classes, 0, values)
    elif mode == "correction":
        annotated = values != classes
        cls = np.where(annotated, values, 0)
    else:
        annotated = np.ones(values.shape, bool)
        cls = values
    weight = annotated.astype(np.float32)
    if mode == "correction" and reference is not None:
        changed = annotated & (cls != np.asarray(reference).astype(np.int64))
        weight[changed] = float(changed_weight)
    target = np.where(annotated, cls, 0).astype(np.float32)
    n_fg = int((annotated & (cls > 0)).sum())
    return PlaneTarget(target, weight, n_fg, int(annotated.sum()) - n_fg)


def class_counts(target: np.ndarray, weight: np.ndarray, classes: int) -> np.ndarray:
    """Annotated pixels per class index (``classes`` entries) of one :class:`PlaneTarget`."""
    cls = target[weight > 0].astype(np.int64)
    return np.bincount(cls, minlength=max(2, classes))[:max(2, classes)]


def label_classes(model_classes: int) -> int:
    """K, the classes of the labels (background included) for a model with ``model_classes`` outputs.

    A binary model has one (sigmoid) output and labels with two classes.
    """
    return 2 if int(model_classes) <= 1 else int(model_classes)


def labels_digest(arrays: list[np.ndarray]) -> str:
    """SHA-256 of labels arrays (shape, dtype and values), recorded in a trained bundle."""
    h = hashlib.sha256()
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        h.update(repr((a.shape, a.dtype.str)).encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()
