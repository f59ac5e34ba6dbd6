"""The best threshold of a *post-processed* mask: a search over thresholds.

Without post-processing the best-Dice threshold is exact (one sorted pass,
:meth:`~napari_segloop.core.evaluation.curve.ThresholdCurve.best_threshold`).
Post-processing (minimum size, filled holes, split objects) changes the mask
in ways no sorted pass can follow, so the Dice of the mask the user sees is
evaluated at a coarse grid of thresholds, plus the raw optimum, and then on a
finer grid around the best of those. Each evaluation runs the same
:func:`~napari_segloop.core.masks.make_mask` as ``segloop predict``, so with
"split touching" and no object diameter given, each threshold's mask is split
at the diameter measured on that mask, as the screen would show it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_segloop.core.events import Progress
from napari_segloop.core.masks import PostProcess, make_mask

#: Thresholds of the coarse grid (steps of 0.05 inside (0, 1)).
COARSE = tuple(round(0.05 * i, 2) for i in range(1, 20))
#: Step of the fine grid around the best coarse threshold.
FINE_STEP = 0.01


@dataclass(frozen=True)
class ProcessedBest:
    """The best threshold found for a post-processed mask.

    Attributes
    ----------
    threshold : float
    score : float
        The mask's Dice at ``threshold``.
    points : list of (float, float)
        Every (threshold, Dice) evaluated, sorted by threshold.
    """

    threshold: float
    score: float
    points: list[tuple[float, float]] = field(default_factory=list)


def _scorer(prob: np.ndarray, truth: np.ndarray, postprocess: PostProcess, region: Any, planes: Any,
            object_dims: int) -> Any:
    """``score(t)``: pixel metrics of the post-processed mask at ``t`` (cached per threshold)."""
    from napari_segloop.core.evaluation.evaluate import evaluate

    cache: dict[float, Any] = {}

    def score(t: float) -> Any:
        t = float(np.clip(t, 0.0, 1.0))
        if t not in cache:
            mask = make_mask(prob, t, postprocess, object_dims=object_dims)
            cache[t] = evaluate(mask, truth, None, region, objects=False, planes=planes).pixel
        return cache[t]

    return score


def processed_curve(
    prob: np.ndarray,
    truth: np.ndarray,
    postprocess: PostProcess,
    *,
    region: Any = None,
    planes: Any = None,
    object_dims: int = 2,
    thresholds: tuple[float, ...] = COARSE,
) -> Generator[Progress, None, list[tuple[float, Any]]]:
    """Pixel metrics of the post-processed mask at a few thresholds (the plot's post-processed curve).

    Yields
    ------
    Progress
        After each threshold (a worker can stop there).

    Returns
    -------
    list of (float, PixelMetrics)
        Sorted by threshold.
    """
    score = _scorer(prob, truth, postprocess, region, planes, object_dims)
    points = []
    for i, t in enumerate(thresholds):
        points.append((float(t), score(t)))
        yield Progress(i + 1, len(thresholds), "curve of the post-processed mask")
    return points


def best_processed_threshold(
    prob: np.ndarray,
    truth: np.ndarray,
    postprocess: PostProcess,
    *,
    region: Any = None,
    planes: Any = None,
    object_dims: int = 2,
    start: float | None = None,
) -> Generator[Progress, None, ProcessedBest]:
    """Search the threshold with the highest Dice of ``make_mask(prob, t, postprocess)``.

    Parameters
    ----------
    prob : ndarray of float
        Probability map (2-D or a stack).
    truth : ndarray
        Ground truth of the same shape (foreground where non-zero).
    postprocess : PostProcess
        The post-processing of the mask.
    region : ndarray of bool, optional
        Evaluated pixels.
    planes : sequence of int, optional
        Only these planes of a stack are scored.
    object_dims : int
        2 or 3 (see :func:`~napari_segloop.core.masks.make_mask`).
    start : float, optional
        A threshold to try as well (the raw exact optimum).

    Yields
    ------
    Progress
        After each evaluated threshold (a worker can stop there).

    Returns
    -------
    ProcessedBest
    """
    score = _scorer(prob, truth, postprocess, region, planes, object_dims)
    scores: dict[float, float] = {}

    def dice(t: float) -> float:
        t = float(np.clip(t, 0.0, 1.0))
        if t not in scores:
            scores[t] = float(score(t).dice)
        return scores[t]

    coarse = sorted(set(COARSE) | ({float(start)} if start is not None else set()))
    total = len(coarse) + 10
    for i, t in enumerate(coarse):
        dice(t)
        yield Progress(i + 1, total, "best threshold of the post-processed mask")
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    fine = [best + k * FINE_STEP for k in range(-5, 6) if k]
    for j, t in enumerate(fine):
        if 0.0 < t < 1.0:
            dice(round(t, 6))
        yield Progress(len(coarse) + j + 1, total, "best threshold of the post-processed mask")
    best = max(scores, key=lambda t: (scores[t], -abs(t - 0.5)))
    return ProcessedBest(best, scores[best], sorted(scores.items()))
