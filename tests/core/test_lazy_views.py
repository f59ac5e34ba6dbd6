"""Lazy mask and confusion pyramids of maps larger than memory (core.evaluation.lazy_views)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import zarr

from napari_segloop.core.evaluation import confusion_image
from napari_segloop.core.evaluation.lazy_views import confusion_levels, mask_levels
from napari_segloop.core.io.omezarr import downsample, pyramid_shapes


def pyramid(prob, chunk):
    levels = [prob]
    for shape in pyramid_shapes(prob.shape, chunk)[1:]:
        levels.append(downsample(levels[-1], "probability", shape[-2:]))
    return levels


def test_level_zero_is_the_exact_mask_and_confusion_and_coarse_levels_fit_their_grid():
    rng = np.random.default_rng(0)
    prob = rng.random((301, 199), dtype=np.float32)
    truth = (rng.random(prob.shape) < 0.4).astype(np.int32) * 7
    z = zarr.create_array(store={}, shape=prob.shape, chunks=(64, 64), dtype=np.float32)
    z[...] = prob
    levels = [z, *pyramid(prob, 64)[1:]]
    masks = mask_levels(levels, 0.5)
    codes = confusion_levels(levels, truth, 0.5)
    assert all(isinstance(m, da.Array) for m in masks + codes)
    assert [m.shape for m in masks] == [c.shape for c in codes] == [tuple(lv.shape) for lv in levels]
    np.testing.assert_array_equal(masks[0].compute(), (prob > np.float32(0.5)).astype(np.uint8))
    np.testing.assert_array_equal(codes[0].compute(), confusion_image(prob > 0.5, truth))
    # A coarse level scores the coarse map against every second truth pixel.
    coarse = confusion_levels(levels, truth, 0.5)[1].compute()
    np.testing.assert_array_equal(coarse, confusion_image(levels[1] > np.float32(0.5), truth[::2, ::2]))
    assert masks[0].dtype == codes[0].dtype == np.uint8


def test_a_truth_pyramid_of_the_same_grid_is_used_as_it_is():
    prob = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    levels = pyramid(prob, 16)
    truth_levels = [np.ones(lv.shape, np.uint8) for lv in levels]
    codes = confusion_levels(levels, np.zeros(prob.shape, np.uint8), 0.5, truth_levels=truth_levels)
    for c, lv in zip(codes, levels, strict=True):
        assert set(np.unique(c.compute())) <= {1, 3}  # truth everywhere: TP or FN
        assert c.shape == lv.shape
