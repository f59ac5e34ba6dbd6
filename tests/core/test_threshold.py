"""One threshold rule everywhere (prob > t), and post-processing of 2-D masks and stacks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.bundle import PostProcess
from napari_segloop.core.masks import apply_threshold, postprocess, postprocess_2d


def test_a_pixel_exactly_at_the_threshold_is_background():
    prob = np.array([[0.0, 0.49, 0.5, 0.5000001, 1.0]], dtype=np.float32)
    mask = apply_threshold(prob, 0.5)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, [[0, 0, 0, 1, 1]])


def test_threshold_extremes():
    prob = np.array([0.0, 0.3, 1.0], dtype=np.float32)
    np.testing.assert_array_equal(apply_threshold(prob, 0.0), [0, 1, 1])
    np.testing.assert_array_equal(apply_threshold(prob, 1.0), [0, 0, 0])


def test_mask_shrinks_as_the_threshold_rises():
    prob = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    counts = [int(apply_threshold(prob, t).sum()) for t in np.linspace(0, 1, 11)]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > 0 and counts[-1] == 0


def test_threshold_writes_into_a_given_buffer():
    prob = np.array([[0.2, 0.8]], dtype=np.float32)
    out = np.full((1, 2), 7, dtype=np.uint8)
    result = apply_threshold(prob, 0.5, out=out)
    assert result is out
    np.testing.assert_array_equal(out, [[0, 1]])


def _mask_with_objects() -> np.ndarray:
    m = np.zeros((40, 40), dtype=np.uint8)
    m[2:4, 2:4] = 1  # 4 px
    m[10:20, 10:20] = 1  # 100 px with a hole
    m[14:16, 14:16] = 0  # hole of 4 px
    m[30:35, 30:38] = 1  # 40 px
    return m


def test_postprocess_min_size_removes_only_smaller_objects():
    m = _mask_with_objects()
    out = postprocess_2d(m, PostProcess(min_size=5))
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}
    assert out[2:4, 2:4].sum() == 0
    assert out[10:20, 10:20].sum() == 96 and out[30:35, 30:38].sum() == 40
    # an object of exactly min_size pixels is kept
    out = postprocess_2d(m, PostProcess(min_size=4))
    assert out[2:4, 2:4].sum() == 4
    # min_size 0 (default) changes nothing
    np.testing.assert_array_equal(postprocess_2d(m, PostProcess()), m)


def test_postprocess_fill_holes():
    m = _mask_with_objects()
    out = postprocess_2d(m, PostProcess(fill_holes=True))
    assert out[10:20, 10:20].all()
    assert out.sum() == m.sum() + 4


def test_postprocess_instances_labels_each_object():
    m = _mask_with_objects()
    out = postprocess_2d(m, PostProcess(instances=True, min_size=5))
    assert out.dtype == np.int32
    ids = set(np.unique(out)) - {0}
    assert len(ids) == 2
    assert len(np.unique(out[10:20, 10:20])) == 2  # one object (and its hole)
    # Objects touching only diagonally are separate (4-connectivity).
    d = np.zeros((4, 4), dtype=np.uint8)
    d[0, 0] = d[1, 1] = 1
    assert postprocess_2d(d, PostProcess(instances=True)).max() == 2


def test_postprocess_stack_instance_ids_are_unique_across_slices():
    m = _mask_with_objects()
    stack = np.stack([m, np.zeros_like(m), m, m])
    out = postprocess(stack, PostProcess(instances=True, min_size=5))
    assert out.shape == stack.shape and out.dtype == np.int32
    per_slice = [set(np.unique(s)) - {0} for s in out]
    assert [len(s) for s in per_slice] == [2, 0, 2, 2]
    all_ids = [i for s in per_slice for i in s]
    assert len(all_ids) == len(set(all_ids)) == 6


def test_postprocess_4d_stack_keeps_shape_and_binary_values():
    m = _mask_with_objects()
    stack = np.stack([np.stack([m, m]), np.stack([m, m])])
    out = postprocess(stack, PostProcess(min_size=5, fill_holes=True))
    assert out.shape == stack.shape and out.dtype == np.uint8
    for s in out.reshape(-1, 40, 40):
        np.testing.assert_array_equal(s, postprocess_2d(m, PostProcess(min_size=5, fill_holes=True)))


@pytest.mark.parametrize("pp", [PostProcess(), PostProcess(min_size=3, fill_holes=True, instances=True)])
def test_postprocess_of_an_empty_mask(pp):
    out = postprocess(np.zeros((2, 8, 8), dtype=np.uint8), pp)
    assert out.shape == (2, 8, 8) and not out.any()
