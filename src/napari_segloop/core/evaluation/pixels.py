"""Pixel confusion counts of a boolean prediction against boolean truth."""

from __future__ import annotations

import numpy as np

from napari_segloop.core.evaluation.results import PixelMetrics


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


