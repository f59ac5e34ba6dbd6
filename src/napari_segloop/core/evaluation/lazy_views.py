"""The mask and the confusion image of a map larger than memory, as lazy pyramids.

Nothing is computed here: each level is a dask expression over the
probability map's level (and the ground truth, strided to that level's
grid), evaluated only for the tiles napari draws. The scores come from
:mod:`napari_segloop.core.evaluation.histograms`; these views only show
them. Level 0 is exact (``prob > t`` in float32, the codes of
:func:`~napari_segloop.core.evaluation.confusion.confusion_image`); coarser
levels threshold the map's own coarser levels (2x2 means for the OME-Zarr
maps this package writes), so an overview shows the mask of the averaged
map, as a preview.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["confusion_levels", "mask_levels"]


def _dask(array: Any) -> Any:
    import dask.array as da

    if isinstance(array, da.Array):
        return array
    chunks = getattr(array, "chunks", None)
    if chunks is None or not all(isinstance(c, int) for c in chunks):
        chunks = "auto"
    return da.from_array(array, chunks=chunks, asarray=True)


def _above(level: Any, threshold: float) -> Any:
    lazy = _dask(level)
    if lazy.dtype != np.float32:
        lazy = lazy.astype(np.float32)
    return lazy > np.float32(threshold)


def mask_levels(levels: Sequence[Any], threshold: float) -> list[Any]:
    """``prob > threshold`` at every level, as uint8 dask arrays (1 foreground)."""
    return [_above(level, threshold).astype(np.uint8) for level in levels]


def _truth_at(truth: Any, shape: tuple[int, ...], full: tuple[int, ...]) -> Any:
    """The ground truth on the grid of a level of ``shape`` (every f-th pixel), cropped to it."""
    import dask.array as da

    lazy = _dask(truth)
    if tuple(lazy.shape) == tuple(shape):
        return lazy
    fy = max(1, round(full[-2] / shape[-2]))
    fx = max(1, round(full[-1] / shape[-1]))
    strided = lazy[..., ::fy, ::fx][..., : shape[-2], : shape[-1]]
    short = [(0, 0)] * (len(shape) - 2) + [(0, shape[-2] - strided.shape[-2]),
                                          (0, shape[-1] - strided.shape[-1])]
    if any(p[1] for p in short):
        strided = da.pad(strided, short, mode="edge")
    return strided


def confusion_levels(levels: Sequence[Any], truth: Any, threshold: float,
                     truth_levels: Sequence[Any] | None = None) -> list[Any]:
    """The confusion codes (0 TN, 1 TP, 2 FP, 3 FN) at every level, as uint8 dask arrays.

    Parameters
    ----------
    levels : sequence of arrays
        The probability map's levels, largest first.
    truth : array
        The ground truth at full resolution (foreground where non-zero).
    threshold : float
    truth_levels : sequence of arrays, optional
        The ground truth's own pyramid, used where a level has the shape of
        the probability level (else ``truth`` is strided).
    """
    full = tuple(int(n) for n in levels[0].shape)
    own = {tuple(int(n) for n in t.shape): t for t in (truth_levels or ())}
    out = []
    for level in levels:
        shape = tuple(int(n) for n in level.shape)
        fg = _truth_at(own.get(shape, truth), shape, full) != 0
        predicted = _above(level, threshold)
        # code = 2 * pred XOR 3 * truth: TP 2^3 = 1, FP 2, FN 3, TN 0 (as confusion_image).
        out.append((predicted.astype(np.uint8) * np.uint8(2)) ^ (fg.astype(np.uint8) * np.uint8(3)))
    return out
