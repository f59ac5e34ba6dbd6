"""From probabilities to the mask the user sees: the one foreground rule and post-processing.

The rule used everywhere in the product (GUI, CLI, metrics, training): a
pixel is foreground where ``probability > threshold``, compared in the map's
precision. :class:`PostProcess` (stored in every bundle) then removes small
objects, fills holes, splits touching objects and numbers instances;
:func:`make_mask` applies both, and every overlay, metric and file the
product writes describes its result.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class PostProcess:
    """Post-processing applied after thresholding (``--threshold auto``).

    ``split_touching`` separates touching objects with a distance-transform
    watershed (absent from older ``segloop.json`` files: False).
    """

    min_size: int = 0
    fill_holes: bool = False
    instances: bool = False
    split_touching: bool = False





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


def postprocess_2d(mask: np.ndarray, pp: PostProcess) -> np.ndarray:
    """Apply min-size removal, hole filling, splitting of touching objects and instance labelling.

    Returns uint8 0/1 for a binary result, or int32 instance ids when
    ``pp.instances`` is set. With ``pp.split_touching`` (see
    :func:`split_touching`), a binary result keeps a one-pixel line between
    split objects.
    """
    from scipy import ndimage as ndi
    from skimage import measure, morphology

    binary = mask.astype(bool, copy=False)
    if pp.fill_holes:
        binary = ndi.binary_fill_holes(binary)
    if pp.min_size and pp.min_size > 0:
        binary = morphology.remove_small_objects(binary, max_size=int(pp.min_size) - 1) \
            if _skimage_uses_max_size() else morphology.remove_small_objects(
                binary, min_size=int(pp.min_size))
    if getattr(pp, "split_touching", False):
        labels = split_touching(binary, watershed_line=not pp.instances)
        return labels if pp.instances else (labels > 0).astype(np.uint8)
    if pp.instances:
        return measure.label(binary, connectivity=1).astype(np.int32)
    return binary.astype(np.uint8)


#: A peak of the distance to the background must rise this many pixels above the saddle
#: joining it to a higher peak to seed an object of its own in :func:`split_touching`.
SPLIT_MIN_DEPTH = 2.0


def split_touching(mask: np.ndarray, min_depth: float = SPLIT_MIN_DEPTH,
                   watershed_line: bool = False) -> np.ndarray:
    """Split touching roundish objects of a 2-D mask with a distance-transform watershed.

    Seeds are the h-maxima (depth ``min_depth``) of the Euclidean distance to
    the background: two nuclei joined by a neck narrower than their radii by
    at least ``min_depth`` pixels get a seed each, while jagged outlines do not
    create spurious seeds. The watershed of the negated distance, restricted
    to the mask, grows the seeds; a component without a seed stays whole.

    Parameters
    ----------
    mask : ndarray
        2-D mask (non-zero = foreground).
    min_depth : float
        Depth of a seed, in pixels.
    watershed_line : bool
        Leave a one-pixel background line between split objects (so that a
        binary result keeps them apart).

    Returns
    -------
    ndarray of int32
        Instance labels (0 = background).
    """
    from scipy import ndimage as ndi
    from skimage import measure, morphology, segmentation

    binary = np.asarray(mask).astype(bool, copy=False)
    if not binary.any():
        return np.zeros(binary.shape, dtype=np.int32)
    dist = ndi.distance_transform_edt(binary)
    seeds = measure.label(morphology.h_maxima(dist, float(min_depth)) > 0, connectivity=2)
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


def _skimage_uses_max_size() -> bool:
    import inspect

    from skimage import morphology

    return "max_size" in inspect.signature(morphology.remove_small_objects).parameters


def postprocess(mask: np.ndarray, pp: PostProcess) -> np.ndarray:
    """Post-process a 2-D mask or each 2-D slice of a stack (instance ids unique per stack)."""
    if mask.ndim == 2:
        return postprocess_2d(mask, pp)
    flat = mask.reshape(-1, *mask.shape[-2:])
    results = [postprocess_2d(m, pp) for m in flat]
    if pp.instances:
        offset = 0
        for r in results:
            r[r > 0] += offset
            offset = max(offset, int(r.max()))
        out = np.stack(results).astype(np.int32)
    else:
        out = np.stack(results)
    return out.reshape(mask.shape)


def make_mask(prob: np.ndarray, threshold: float, pp: PostProcess | None = None) -> np.ndarray:
    """The mask the user sees: ``prob > threshold``, then ``pp`` (when given).

    Parameters
    ----------
    prob : ndarray of float
        Probability map, 2-D or a stack.
    threshold : float
        Foreground where ``prob > threshold``.
    pp : PostProcess, optional
        Post-processing; None (or nothing switched on) keeps the raw mask.

    Returns
    -------
    ndarray
        uint8 0/1, or int32 instance ids when ``pp.instances`` is set.
    """
    mask = apply_threshold(prob, threshold)
    if pp is None or not (pp.min_size or pp.fill_holes or pp.instances or pp.split_touching):
        return mask
    return postprocess(mask, pp)
