"""Is an uncertainty map informative? Per-region uncertainty against per-region error.

Used by ``benchmarks/bench_uncertainty.py`` and by the active-learning
simulation: with ground truth, each region's error is the share of its pixels
the thresholded prediction gets wrong, and the uncertainty is informative when
the regions it ranks first are those with the most errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import spearmanr

from napari_segloop.core.active.regions import annotated_cells, cell_means

__all__ = ["Informativeness", "informativeness"]


@dataclass(frozen=True)
class Informativeness:
    """How well region uncertainty predicts region error.

    Attributes
    ----------
    spearman : float
        Spearman rank correlation of region uncertainty with region error
        (NaN when either is constant).
    top_error_ratio : float
        Mean error of the top-ranked ``top_fraction`` of regions divided by the
        mean error of all regions (1: no better than random; NaN when no error).
    mean_error : float
        Mean region error (share of wrong pixels).
    regions : int
        Regions compared.
    """

    spearman: float
    top_error_ratio: float
    mean_error: float
    regions: int


def informativeness(
    uncertainty: np.ndarray,
    probability: np.ndarray,
    truth: np.ndarray,
    side: int,
    threshold: float = 0.5,
    top_fraction: float = 0.1,
    labels: np.ndarray | None = None,
    top: int | None = None,
) -> Informativeness:
    """Compare per-region uncertainty with per-region error on one plane.

    Parameters
    ----------
    uncertainty, probability : np.ndarray
        ``(H, W)`` maps from :func:`~napari_segloop.core.active.uncertainty.uncertainty`.
    truth : np.ndarray
        ``(H, W)`` ground truth (non-zero = foreground).
    side : int
        Region side in pixels.
    threshold : float
        Foreground is ``probability > threshold``.
    top_fraction : float
        Share of the regions counted as "top-ranked" (at least one region).
    labels : np.ndarray, optional
        Scribble-style annotations: annotated regions are left out, as the ranking does.
    top : int, optional
        Number of top-ranked regions (instead of ``top_fraction``).
    """
    scores = cell_means(uncertainty, side).ravel()
    errors = cell_means((np.asarray(probability) > threshold) != (np.asarray(truth) != 0), side).ravel()
    if labels is not None:
        keep = ~annotated_cells(labels, side).ravel()
        scores, errors = scores[keep], errors[keep]
    n = int(scores.size)
    if n < 2 or np.ptp(scores) == 0 or np.ptp(errors) == 0:
        rho = float("nan")
    else:
        rho = float(spearmanr(scores, errors).statistic)
    mean = float(errors.mean()) if n else float("nan")
    k = max(1, int(top) if top is not None else round(n * top_fraction))
    top = np.argsort(-scores, kind="stable")[:k]
    ratio = float(errors[top].mean() / mean) if n and mean > 0 else float("nan")
    return Informativeness(rho, ratio, mean, n)
