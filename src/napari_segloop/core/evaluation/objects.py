"""Objects: connected components or instance ids, and their one-to-one matching at IoU > 0.5.

Objects are 2-D by default: connected components (4-connectivity) of binary
masks, or the ids of instance-label images, taken slice by slice in stacks.
With ``object_dims=3`` they are 3-D: connected over the last three axes
(Z, Y, X) with face connectivity (6-neighbourhood), one object per instance
id in each (Z, Y, X) block; leading axes (time) still separate objects. A
predicted object and a true object match when their IoU is > 0.5; at most
one partner can exceed 0.5, so the matching is unique without an assignment
solver.
"""

from __future__ import annotations

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.results import ObjectMetrics

#: Objects match when their intersection over union is strictly greater than this.
IOU_MATCH = 0.5


def _slice_structure(ndim: int, object_dims: int = 2) -> np.ndarray:
    """Face connectivity within each block of the last ``object_dims`` axes, none across blocks.

    ``object_dims=2``: 4-connectivity within each 2-D slice; 3: 6-connectivity
    within each (Z, Y, X) block (for a 2-D array, 2 is used whatever is asked).
    """
    from scipy import ndimage as ndi

    dims = min(int(object_dims), ndim)
    structure = np.zeros((3,) * ndim, dtype=bool)
    structure[(1,) * (ndim - dims)] = ndi.generate_binary_structure(dims, 1)
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


def label_objects(
    arr: np.ndarray, region: np.ndarray | None = None, *, object_dims: int = 2
) -> tuple[np.ndarray, int]:
    """Return consecutive object ids (0 = background) and the number of objects.

    A binary mask (at most one distinct non-zero value) is split into
    connected components (face connectivity); an instance-label image keeps
    its ids, one object per id in each block.

    Parameters
    ----------
    arr : ndarray of bool or int
        Mask or instance labels, 2-D or a stack (..., Y, X).
    region : ndarray of bool, optional
        Pixels outside are set to background first (objects are clipped).
    object_dims : {2, 3}
        2: objects are 2-D, every slice of a stack has its own objects (even
        where an id repeats across slices), 4-connectivity. 3: an array
        (..., Z, Y, X) has 3-D objects, connected over its last three axes
        (6-connectivity), one per instance id within each (Z, Y, X) block;
        leading axes (time in (T, Z, Y, X)) still separate objects. Ignored
        for a 2-D array.

    Returns
    -------
    labels : ndarray of int32 or int64
        Ids ``1..n``.
    n : int

    Raises
    ------
    InputError
        If ``object_dims`` is not 2 or 3.
    """
    from scipy import ndimage as ndi

    from napari_segloop.core.evaluation.planes import check_object_dims

    dims = check_object_dims(object_dims)
    arr = np.asarray(arr)
    if region is not None:
        arr = np.where(region, arr, 0)
    if _is_binary(arr):
        labels, n = ndi.label(arr != 0, structure=_slice_structure(arr.ndim, dims))
        return labels, int(n)
    ids = arr.astype(np.int64)
    if ids.min() < 0:  # negative ids: shift so that 0 stays background
        ids = np.where(ids != 0, ids - ids.min() + 1, 0)
    block = min(dims, arr.ndim)  # the axes one block of objects spans
    if arr.ndim > block:
        lead = arr.shape[:-block]
        n_blocks = int(np.prod(lead))
        span = int(ids.max()) + 1
        offsets = (np.arange(n_blocks, dtype=np.int64) * span).reshape((*lead,) + (1,) * block)
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


