"""What the docks keep of a K-class prediction, and the jobs that turn it into layers (Qt-free).

A K-class model gives ``(K, ...)`` softmax probabilities. The docks show
them as

* ``<image> probability``: the probability of **one** class (the user picks
  which in the Classes dock), shaped like the image, so the Threshold and
  Confusion docks work on it unchanged (a binary view of that class);
* ``<image> classes``: the class map (arg-max, value K where the winning
  probability is below the minimum confidence), a Labels layer with one
  colour per class.

The jobs here run in thread workers; they read arrays, never layers.
"""

from __future__ import annotations

import colorsys
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_segloop.core.evaluation.multiclass import (
    ClassMetrics,
    class_confusion_image,
    class_map,
    evaluate_classes,
)
from napari_segloop.core.events import Progress

__all__ = ["ClassPrediction", "ClassScores", "class_colors", "class_map_job", "class_scores_job"]

#: Colour of unassigned pixels (value K) in ``<image> classes``.
UNASSIGNED_COLOR = (0.55, 0.55, 0.55, 1.0)


@dataclass
class ClassPrediction:
    """A K-class prediction of one image, as a worker returns it.

    Attributes
    ----------
    probabilities : numpy.ndarray
        float32 ``(K, *shape)``.
    class_map : numpy.ndarray
        uint8 ``shape``: class indices, K where unassigned.
    names : list of str
        Class names, background first.
    min_confidence : float
        The minimum confidence ``class_map`` was made with.
    slices : set of tuple of int
        Stack positions predicted one by one ("current slice" runs).
    complete : bool
        True when every plane was predicted (a whole-image run, or slices
        written into one); False when only ``slices`` were.
    """

    probabilities: np.ndarray
    class_map: np.ndarray
    names: list[str]
    min_confidence: float = 0.0
    slices: set[tuple[int, ...]] = field(default_factory=set)
    complete: bool = True

    @property
    def classes(self) -> int:
        """K."""
        return int(self.probabilities.shape[0])

    def merged_into(self, previous: ClassPrediction | None, shape: tuple[int, ...],
                    index: tuple[int, ...]) -> ClassPrediction:
        """This one-slice prediction written into ``previous`` (or a zero-filled map of ``shape``)."""
        k = self.classes
        reuse = (previous is not None and previous.probabilities.shape == (k, *shape)
                 and previous.names == self.names)
        probs = previous.probabilities if reuse else np.zeros((k, *shape), np.float32)
        cmap = previous.class_map if reuse else np.zeros(shape, self.class_map.dtype)
        probs[(slice(None), *index)] = self.probabilities
        cmap[index] = self.class_map
        slices = (set(previous.slices) if reuse else set()) | {index}
        complete = bool(reuse and previous.complete)
        return ClassPrediction(probs, cmap, self.names, self.min_confidence, slices, complete)

    def scored_region(self) -> np.ndarray | None:
        """The predicted planes as a boolean mask of the class map's shape (None when complete)."""
        if self.complete:
            return None
        region = np.zeros(self.class_map.shape, bool)
        for index in self.slices:
            region[index] = True
        return region


@dataclass(frozen=True)
class ClassScores:
    """What :func:`class_scores_job` returns: the scores and the TP/FP/FN image of one class."""

    metrics: ClassMetrics
    shown: int
    confusion: np.ndarray


#: Okabe-Ito colours for the first classes (colour-blind safe); never the scribble background's blue.
CLASS_PALETTE = ("#E69F00", "#009E73", "#CC79A7", "#D55E00", "#F0E442", "#56B4E9")


def _rgba(hex_color: str) -> tuple[float, float, float, float]:
    h = hex_color.lstrip("#")
    return (int(h[0:2], 16) / 255, int(h[2:4], 16) / 255, int(h[4:6], 16) / 255, 1.0)


def class_colors(classes: int) -> dict[int | None, tuple[float, float, float, float]]:
    """Label colours of a class map: background transparent, one colour per class, unassigned grey."""
    colors: dict[int | None, tuple[float, float, float, float]] = {0: (0.0, 0.0, 0.0, 0.0)}
    extra = max(1, classes - 1 - len(CLASS_PALETTE))
    for c in range(1, classes):
        if c <= len(CLASS_PALETTE):
            colors[c] = _rgba(CLASS_PALETTE[c - 1])
            continue
        # Beyond the palette: evenly spaced hues, skipping the blues.
        k = c - 1 - len(CLASS_PALETTE)
        hue = (0.7 + 0.75 * k / extra) % 1.0
        r, g, b = colorsys.hsv_to_rgb(hue, 0.7, 0.95)
        colors[c] = (r, g, b, 1.0)
    colors[classes] = UNASSIGNED_COLOR
    colors[None] = (0.0, 0.0, 0.0, 0.0)
    return colors


def class_map_job(probabilities: np.ndarray, min_confidence: float) -> Generator[Any, None, np.ndarray]:
    """The class map of ``probabilities`` at ``min_confidence`` (a worker's generator)."""
    yield Progress(0, 1, "class map")
    return class_map(probabilities, min_confidence)


def class_scores_job(class_map_data: np.ndarray, truth: Any, classes: int, names: list[str],
                     shown: int, region: np.ndarray | None = None) -> Generator[Any, None, ClassScores]:
    """K x K confusion and per-class scores, and the TP/FP/FN codes of class ``shown``.

    Reads ``truth`` (a layer's array, possibly lazy) here, in the worker.
    """
    yield Progress(0, 2, "reading the ground truth")
    gt = np.asarray(truth)
    yield Progress(1, 2, "scoring")
    metrics = evaluate_classes(class_map_data, gt, classes, region, names=tuple(names))
    codes = class_confusion_image(class_map_data, gt, shown)
    if region is not None:
        codes[~np.asarray(region, bool)] = 0
    return ClassScores(metrics, shown, codes)
