"""Thresholds and post-processing of probability maps.

The one rule used everywhere in the product (GUI, CLI, metrics): a pixel is
foreground where ``probability > threshold``.
"""

from __future__ import annotations

import numpy as np

from napari_segloop.core.bundle import PostProcess


def apply_threshold(prob: np.ndarray, threshold: float, out: np.ndarray | None = None) -> np.ndarray:
    """Return the binary mask ``prob > threshold`` as uint8 (0/1)."""
    if out is None:
        out = np.empty(prob.shape, dtype=np.uint8)
    np.greater(prob, threshold, out=out)
    return out


def postprocess_2d(mask: np.ndarray, pp: PostProcess) -> np.ndarray:
    """Apply min-size removal, hole filling and instance labelling to a 2-D mask.

    Returns uint8 0/1 for a binary result, or int32 instance ids when
    ``pp.instances`` is set.
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
    if pp.instances:
        return measure.label(binary, connectivity=1).astype(np.int32)
    return binary.astype(np.uint8)


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
