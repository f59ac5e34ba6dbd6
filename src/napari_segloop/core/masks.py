"""From probabilities to the mask the user sees: the one foreground rule and post-processing.

The rule used everywhere in the product (GUI, CLI, metrics, training): a
pixel is foreground where ``probability > threshold``, compared in the map's
precision. :class:`PostProcess` (stored in every bundle) then removes small
objects, fills holes, splits touching objects and numbers instances;
:func:`make_mask` applies both, and every overlay, metric and file the
product writes describes its result.

Objects are 2-D by default (every slice of a stack is post-processed on its
own). With ``object_dims=3`` a stack (..., Z, Y, X) has 3-D objects: minimum
size counts voxels, instances and split touching objects are 3-D (face
connectivity), each (Z, Y, X) block on its own (leading axes such as time
separate objects). Hole filling stays per 2-D slice: a nucleus cut by the
top or bottom of the stack is open there and has no 3-D hole, while its
slices show the holes the user means.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class PostProcess:
    """Post-processing applied after thresholding (``--threshold auto``).

    Parameters
    ----------
    min_size : int
        Remove objects smaller than this many pixels (voxels for 3-D objects).
    fill_holes : bool
        Fill holes of objects (per 2-D slice).
    instances : bool
        Number objects (int32 instance ids) instead of a 0/1 mask.
    split_touching : bool
        Separate touching objects with a distance-transform watershed
        (:func:`split_touching`; absent from older ``segloop.json`` files: False).
    object_diameter : float or None
        Typical object diameter in pixels, the scale :func:`split_touching`
        works at. None: the model's ``object_size`` where the bundle has one,
        else estimated from the mask (see :func:`resolve_object_diameter`);
        absent from older ``segloop.json`` files.
    """

    min_size: int = 0
    fill_holes: bool = False
    instances: bool = False
    split_touching: bool = False
    object_diameter: float | None = None

    def steps(self) -> list[str]:
        """The steps switched on, in words (``["remove < 15 px", "fill holes"]``), for messages."""
        out = []
        if self.min_size:
            out.append(f"remove < {self.min_size} px")
        if self.fill_holes:
            out.append("fill holes")
        if self.split_touching:
            out.append("split touching objects")
        if self.instances:
            out.append("instances")
        return out


def preload() -> None:
    """Import the libraries post-processing uses, on the calling thread.

    Call it on the main thread before workers post-process in parallel:
    scikit-image's lazily loaded submodules are not safe to import from two
    threads at once (one may see a partially initialised
    ``skimage.morphology``).
    """
    import scipy.ndimage
    import scipy.spatial  # noqa: F401
    import skimage.filters
    import skimage.measure
    import skimage.morphology
    import skimage.segmentation  # noqa: F401


def apply_threshold(prob: np.ndarray, threshold: float, out: np.ndarray | None = None) -> np.ndarray:
    """Return the binary mask ``prob > threshold`` as uint8 (0/1).

    The threshold is compared in the map's precision (float32 for probability
    maps), whatever its own type, as the metrics do.
    """
    if out is None:
        out = np.empty(prob.shape, dtype=np.uint8)
    if prob.dtype.kind == "f":
        threshold = prob.dtype.type(threshold)
    np.greater(prob, threshold, out=out)
    return out


def _remove_small(binary: np.ndarray, min_size: int) -> np.ndarray:
    """Remove face-connected objects of fewer than ``min_size`` pixels (any number of axes)."""
    from skimage import morphology

    if _skimage_uses_max_size():
        return morphology.remove_small_objects(binary, max_size=int(min_size) - 1)
    return morphology.remove_small_objects(binary, min_size=int(min_size))


def _fill_holes_per_slice(binary: np.ndarray) -> np.ndarray:
    """Fill the holes of every 2-D slice of ``binary`` (..., Y, X)."""
    from scipy import ndimage as ndi

    if binary.ndim == 2:
        return ndi.binary_fill_holes(binary)
    flat = binary.reshape(-1, *binary.shape[-2:])
    return np.stack([ndi.binary_fill_holes(s) for s in flat]).reshape(binary.shape)


def _postprocess_block(mask: np.ndarray, pp: PostProcess) -> np.ndarray:
    """Post-process one 2-D image or one (Z, Y, X) block with objects over all its axes."""
    from skimage import measure

    binary = mask.astype(bool, copy=False)
    if pp.fill_holes:
        binary = _fill_holes_per_slice(binary)
    if pp.min_size and pp.min_size > 0:
        binary = _remove_small(binary, pp.min_size)
    if getattr(pp, "split_touching", False):
        labels = split_touching(binary, watershed_line=not pp.instances,
                                object_diameter=getattr(pp, "object_diameter", None))
        return labels if pp.instances else (labels > 0).astype(np.uint8)
    if pp.instances:
        return measure.label(binary, connectivity=1).astype(np.int32)
    return binary.astype(np.uint8)


def postprocess_2d(mask: np.ndarray, pp: PostProcess) -> np.ndarray:
    """Apply min-size removal, hole filling, splitting of touching objects and instance labelling.

    Returns uint8 0/1 for a binary result, or int32 instance ids when
    ``pp.instances`` is set. With ``pp.split_touching`` (see
    :func:`split_touching`), a binary result keeps a one-pixel line between
    split objects.
    """
    return _postprocess_block(mask, pp)


#: Lowest depth, in pixels, of a seed of :func:`split_touching`: a peak of the distance to the
#: background must rise this much above the saddle joining it to a higher peak.
SPLIT_MIN_DEPTH = 0.5

#: Depth of a seed as a fraction of the object diameter (whichever of this and
#: :data:`SPLIT_MIN_DEPTH` is larger).
SPLIT_DEPTH_FRACTION = 0.04

#: Seeds closer than this fraction of the object diameter to a higher seed are dropped.
SPLIT_MIN_SEPARATION = 0.5


def split_touching(mask: np.ndarray, min_depth: float = SPLIT_MIN_DEPTH,
                   watershed_line: bool = False, *,
                   object_diameter: float | None = None) -> np.ndarray:
    """Split touching roundish objects of a 2-D mask or a 3-D block with a distance-transform watershed.

    Seeds are maxima of the Euclidean distance to the background that rise
    at least ``max(min_depth, SPLIT_DEPTH_FRACTION * diameter)`` above the
    saddle joining them to a higher maximum (h-maxima), and that lie at least
    ``SPLIT_MIN_SEPARATION * diameter`` (half a diameter) from a higher seed.
    Two round nuclei of about that diameter joined by a neck get a seed each;
    one elongated nucleus (up to an aspect ratio of about 2.5, with a jagged
    outline) keeps one: the bumps of its outline make shallow maxima, and
    maxima along its axis closer than half a diameter to its centre. The
    watershed of the negated distance, restricted to the mask, grows the
    seeds; a component without a seed stays whole.

    Parameters
    ----------
    mask : ndarray
        2-D mask, or a 3-D (Z, Y, X) block (non-zero = foreground; 3-D objects
        need isotropic voxels for the distances to be right).
    min_depth : float
        Lowest depth of a seed, in pixels.
    watershed_line : bool
        Leave a one-pixel background line between split objects (so that a
        binary result keeps them apart).
    object_diameter : float, optional
        Typical object diameter in pixels; None: estimated from the mask
        (:func:`estimate_object_diameter`).

    Returns
    -------
    ndarray of int32
        Instance labels (0 = background).

    Raises
    ------
    InputError
        If ``object_diameter`` is not a finite number > 0.
    """
    from scipy import ndimage as ndi
    from skimage import morphology, segmentation

    binary = np.asarray(mask).astype(bool, copy=False)
    if not binary.any():
        return np.zeros(binary.shape, dtype=np.int32)
    if object_diameter is None:
        diameter = estimate_object_diameter(binary, object_dims=min(binary.ndim, 3)) or 1.0
    else:
        diameter = check_object_diameter(object_diameter)
    dist = ndi.distance_transform_edt(binary)
    depth = max(float(min_depth), SPLIT_DEPTH_FRACTION * diameter)
    peaks = morphology.h_maxima(dist, depth).astype(bool)
    seeds = _separated_seeds(peaks, dist, SPLIT_MIN_SEPARATION * diameter)
    labels = segmentation.watershed(-dist, seeds, mask=binary, watershed_line=watershed_line)
    unseeded = binary & (labels == 0)
    if watershed_line:
        # watershed lines are 0 too: only whole components without any seed are added back
        comp, n = ndi.label(binary)
        has_seed = np.zeros(n + 1, dtype=bool)
        has_seed[np.unique(comp[labels > 0])] = True
        unseeded = ~has_seed[comp] & binary
    if unseeded.any():
        extra, _ = ndi.label(unseeded)
        labels = np.where(extra > 0, extra + int(labels.max()), labels)
    return labels.astype(np.int32)


def check_object_diameter(value: Any, what: str = "object diameter") -> float:
    """Return ``value`` as a float, or raise :class:`InputError` unless it is a finite number > 0."""
    from napari_segloop.core.errors import InputError

    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"The {what} must be a number of pixels > 0, not {value!r}.") from None
    if isinstance(value, bool) or not math.isfinite(number) or number <= 0:
        raise InputError(f"The {what} must be a number of pixels > 0, not {value!r}.")
    return number


def _separated_seeds(peaks: np.ndarray, height: np.ndarray, min_distance: float) -> np.ndarray:
    """One seed pixel per peak region, dropping those within ``min_distance`` of a higher seed.

    Greedy, highest first (ties in C order), with a k-d tree: O(n log n) in the number of peaks.
    """
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    regions, n = ndi.label(peaks, structure=np.ones((3,) * peaks.ndim, dtype=bool))
    seeds = np.zeros(peaks.shape, dtype=np.int32)
    if n == 0:
        return seeds
    index = np.arange(1, n + 1)
    where = np.array(ndi.maximum_position(height, regions, index), dtype=np.int64).reshape(n, -1)
    value = np.asarray(ndi.maximum(height, regions, index), dtype=np.float64)
    order = np.argsort(-value, kind="stable")
    keep = np.ones(n, dtype=bool)
    if min_distance > 0 and n > 1:
        tree = cKDTree(where)
        for i in order:
            if keep[i]:
                near = tree.query_ball_point(where[i], r=min_distance * (1 - 1e-9))
                keep[near] = False
                keep[i] = True
    kept = order[keep[order]]
    seeds[tuple(where[kept].T)] = np.arange(1, kept.size + 1, dtype=np.int32)
    return seeds


def estimate_object_diameter(mask: np.ndarray, object_dims: int = 2, min_size: int = 0) -> float | None:
    """The median equivalent diameter of the connected components of a mask.

    Parameters
    ----------
    mask : ndarray
        Mask (non-zero = foreground), 2-D or a stack.
    object_dims : {2, 3}
        2: components of every 2-D slice, diameter ``sqrt(4 area / pi)``; 3:
        components of every (Z, Y, X) block, diameter ``(6 volume / pi) ** (1/3)``.
    min_size : int
        Components smaller than this (and than ``2 ** object_dims`` pixels,
        specks) are left out, unless nothing else is left.

    Returns
    -------
    float or None
        None for an empty mask.
    """
    from scipy import ndimage as ndi

    from napari_segloop.core.evaluation.objects import _slice_structure
    from napari_segloop.core.evaluation.planes import check_object_dims

    binary = np.asarray(mask).astype(bool, copy=False)
    if not binary.any():
        return None
    dims = min(check_object_dims(object_dims), binary.ndim)
    labels, _ = ndi.label(binary, structure=_slice_structure(binary.ndim, dims))
    sizes = np.bincount(labels.ravel())[1:]
    big = sizes[sizes >= max(int(min_size), 2 ** dims)]
    sizes = big if big.size else sizes
    if dims == 3:
        diameters = np.cbrt(6.0 * sizes / math.pi)
    else:
        diameters = np.sqrt(4.0 * sizes / math.pi)
    return float(np.median(diameters))


def resolve_object_diameter(
    pp: PostProcess | None,
    settings: Any = None,
    mask: np.ndarray | None = None,
    *,
    scale: float | None = None,
    object_dims: int = 2,
) -> float | None:
    """The object diameter post-processing works at: given, from the model, or from the mask.

    In this order: ``pp.object_diameter`` when set; else the bundle's
    ``object_size`` (the diameter at the network's input) divided by the
    resize factor applied before the model (``scale``, default the bundle's
    ``scale_factor``), which is the diameter in the image; else the median
    object diameter of ``mask`` (:func:`estimate_object_diameter`); else None.

    Parameters
    ----------
    pp : PostProcess or None
    settings : BundleSettings, optional
        The model's settings (``object_size``, ``scale_factor``).
    mask : ndarray, optional
        The thresholded mask, to estimate the diameter from.
    scale : float, optional
        The resize factor actually applied before the model (e.g.
        ``PredictOptions.scale_factor(bundle)``, which follows a user's object size).
    object_dims : {2, 3}
        How the mask's objects are counted for the estimate.

    Returns
    -------
    float or None
    """
    given = getattr(pp, "object_diameter", None) if pp is not None else None
    if given is not None:
        return float(given)
    size = getattr(settings, "object_size", None) if settings is not None else None
    if size:
        factor = float(scale) if scale is not None else float(getattr(settings, "scale_factor", 1.0) or 1.0)
        return float(size) / factor
    if mask is not None:
        min_size = int(getattr(pp, "min_size", 0) or 0) if pp is not None else 0
        return estimate_object_diameter(mask, object_dims, min_size)
    return None


def _skimage_uses_max_size() -> bool:
    import inspect

    from skimage import morphology

    return "max_size" in inspect.signature(morphology.remove_small_objects).parameters


def postprocess(mask: np.ndarray, pp: PostProcess, *, object_dims: int = 2) -> np.ndarray:
    """Post-process a 2-D mask or a stack (instance ids unique per stack).

    Parameters
    ----------
    mask : ndarray
        Mask (non-zero = foreground), 2-D or a stack (..., Y, X).
    pp : PostProcess
    object_dims : {2, 3}
        2: each 2-D slice on its own. 3: each (Z, Y, X) block (the last three
        axes) with 3-D objects: minimum size in voxels, 3-D instances and
        splitting; holes are still filled per slice (a nucleus open at the
        top or bottom of the stack has no 3-D hole). Ignored for a 2-D mask.

    Returns
    -------
    ndarray
        uint8 0/1, or int32 instance ids when ``pp.instances`` is set.
    """
    from napari_segloop.core.evaluation.planes import check_object_dims

    dims = check_object_dims(object_dims)
    if getattr(pp, "split_touching", False) and getattr(pp, "object_diameter", None) is None:
        # one diameter for the whole stack, estimated once
        pp = dataclasses.replace(pp, object_diameter=resolve_object_diameter(
            pp, mask=mask, object_dims=dims))
    if mask.ndim == 2:
        return _postprocess_block(mask, pp)
    block = 3 if dims == 3 else 2
    flat = mask.reshape(-1, *mask.shape[-block:])
    results = [_postprocess_block(m, pp) for m in flat]
    if pp.instances:
        offset = 0
        for r in results:
            r[r > 0] += offset
            offset = max(offset, int(r.max()))
        out = np.stack(results).astype(np.int32)
    else:
        out = np.stack(results)
    return out.reshape(mask.shape)


def make_mask(prob: np.ndarray, threshold: float, pp: PostProcess | None = None, *,
              object_dims: int = 2) -> np.ndarray:
    """The mask the user sees: ``prob > threshold``, then ``pp`` (when given).

    Parameters
    ----------
    prob : ndarray of float
        Probability map, 2-D or a stack.
    threshold : float
        Foreground where ``prob > threshold``.
    pp : PostProcess, optional
        Post-processing; None (or nothing switched on) keeps the raw mask.
    object_dims : {2, 3}
        2-D objects (each slice on its own) or 3-D objects over the last
        three axes of a stack (see :func:`postprocess`).

    Returns
    -------
    ndarray
        uint8 0/1, or int32 instance ids when ``pp.instances`` is set.
    """
    mask = apply_threshold(prob, threshold)
    if pp is None or not (pp.min_size or pp.fill_holes or pp.instances or pp.split_touching):
        return mask
    return postprocess(mask, pp, object_dims=object_dims)


def postprocess_classes(class_map: np.ndarray, classes: int, pp: PostProcess | None, *,
                        object_dims: int = 2) -> np.ndarray:
    """Post-process a K-class map class by class (minimum size, fill holes).

    Each object class 1 .. K-1 is cleaned on its own with ``pp``'s minimum
    size and hole filling: its objects smaller than ``min_size`` become
    background (0), and background or unassigned holes inside its objects
    become that class (pixels of another class inside, such as the interior
    inside a border, stay as they are; a hole inside objects of two classes
    goes to the innermost). Instances and splitting are binary-mask steps and
    are not applied to a class map.

    Parameters
    ----------
    class_map : ndarray
        Class indices (0 background, K unassigned), 2-D or a stack.
    classes : int
        K.
    pp : PostProcess, optional
    object_dims : {2, 3}
        As for :func:`postprocess`.

    Returns
    -------
    ndarray
        A new class map of the same dtype (or ``class_map`` itself when nothing
        is switched on).
    """
    if pp is None or not (pp.min_size or pp.fill_holes):
        return class_map
    from scipy import ndimage as ndi

    step = dataclasses.replace(pp, instances=False, split_touching=False)
    out = class_map.copy()
    # Only background and unassigned pixels can become a class: a ring of one class around
    # another (a border around an interior) keeps its inside. A hole inside objects of several
    # classes goes to the innermost one: the class whose filled object there is smallest.
    free = (class_map == 0) | (class_map == classes)
    best_size = np.full(class_map.shape, np.iinfo(np.int64).max, np.int64)
    best_class = np.zeros(class_map.shape, class_map.dtype)
    for c in range(1, classes):
        mask = class_map == c
        if not mask.any():
            continue
        kept = postprocess(mask.astype(np.uint8), step, object_dims=object_dims) > 0
        out[mask & ~kept] = 0
        holes = kept & ~mask & free
        if holes.any():
            # The size of the filled object around each hole: the smallest is the innermost.
            lab, _ = ndi.label(kept)
            size = np.bincount(lab.ravel())[lab]
            better = holes & (size < best_size)
            best_size[better] = size[better]
            best_class[better] = c
    filled = best_class > 0
    out[filled] = best_class[filled]
    return out
