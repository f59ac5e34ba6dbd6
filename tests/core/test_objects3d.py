"""3-D objects (``object_dims=3``): labelling, evaluation and post-processing of z-stacks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.bundle import PostProcess
from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import evaluate, evaluate_stack, label_objects
from napari_segloop.core.masks import make_mask, postprocess, postprocess_2d

SHAPE = (30, 64, 64)
N_BALLS = 20


def balls(shape=SHAPE, n=N_BALLS, seed=0, gap=2.0) -> np.ndarray:
    """Instance labels of ``n`` separate balls (radius 3.5-6), at least ``gap`` voxels apart."""
    r = np.random.default_rng(seed)
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    labels = np.zeros(shape, np.int32)
    placed: list[tuple[np.ndarray, float]] = []
    while len(placed) < n:
        rad = float(r.uniform(3.5, 6.0))
        c = np.array([r.uniform(rad + 1, s - rad - 1) for s in shape])
        if all(np.linalg.norm(c - c2) > rad + r2 + gap for c2, r2 in placed):
            placed.append((c, rad))
            ball = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= rad**2
            labels[ball] = len(placed)
    return labels


@pytest.fixture(scope="module")
def truth() -> np.ndarray:
    return balls()


def _sections(labels: np.ndarray) -> int:
    """Number of 2-D objects: (slice, ball) pairs where the ball cuts the slice."""
    return sum(len(np.unique(s[s > 0])) for s in labels.reshape(-1, *labels.shape[-2:]))


# ----------------------------------------------------------------------------- labelling


def test_balls_are_one_object_each_in_3d(truth):
    labels, n = label_objects(truth > 0, object_dims=3)
    assert n == N_BALLS
    # each ball is exactly one 3-D component
    for i in range(1, N_BALLS + 1):
        assert len(np.unique(labels[truth == i])) == 1
    assert label_objects(truth, object_dims=3)[1] == N_BALLS  # instance ids too
    # in 2-D every slice of a ball is an object of its own
    assert label_objects(truth > 0)[1] == _sections(truth) > 8 * N_BALLS


def test_3d_connectivity_is_by_faces():
    m = np.zeros((3, 4, 4), np.uint8)
    m[0, 0, 0] = m[1, 0, 0] = 1  # face neighbours across z: one object
    m[1, 2, 2] = m[2, 3, 3] = 1  # only a corner in common: two
    assert label_objects(m, object_dims=3)[1] == 3
    assert label_objects(m)[1] == 4


def test_leading_axes_keep_blocks_apart(truth):
    # the same balls in two time frames: 40 objects, not 20, as a mask and as instance ids
    tz = np.stack([truth, truth])
    assert label_objects(tz > 0, object_dims=3)[1] == 2 * N_BALLS
    assert label_objects(tz, object_dims=3)[1] == 2 * N_BALLS
    assert evaluate(tz > 0, tz, object_dims=3).objects.n_true == 2 * N_BALLS


def test_one_id_per_block_for_instance_labels():
    ids = np.zeros((4, 8, 8), np.int32)
    ids[0, 1, 1] = ids[3, 6, 6] = 5  # one id, not connected: still one 3-D object
    ids[1, 4, 4] = 2
    assert label_objects(ids, object_dims=3)[1] == 2
    assert label_objects(ids)[1] == 3


def test_object_dims_is_ignored_for_2d_and_checked():
    m = np.zeros((10, 10), np.uint8)
    m[1:3, 1:3] = m[5:8, 5:8] = 1
    a, b = label_objects(m), label_objects(m, object_dims=3)
    assert a[1] == b[1] == 2
    np.testing.assert_array_equal(a[0], b[0])
    for bad in (1, 4, True):
        with pytest.raises(InputError, match="2 or 3"):
            label_objects(m, object_dims=bad)
    with pytest.raises(InputError, match="2 or 3"):
        evaluate(m, m, object_dims=4)


# ----------------------------------------------------------------------------- evaluation


def test_a_perfect_prediction_of_20_balls(truth):
    prob = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    ev = evaluate(prob, truth, 0.5, object_dims=3)
    assert (ev.objects.n_true, ev.objects.n_pred, ev.objects.n_matched) == (N_BALLS,) * 3
    flat = evaluate(prob, truth, 0.5)  # 2-D objects: one per ball and slice
    assert flat.objects.n_true == flat.objects.n_matched == _sections(truth)
    assert flat.objects.n_true > 8 * N_BALLS
    assert ev.pixel == flat.pixel


def test_3d_matching_sees_a_ball_split_in_z(truth):
    pred = truth > 0  # a mask: its connected components are the objects
    z = int(np.flatnonzero((truth == 1).any(axis=(1, 2))).mean())
    pred[z][truth[z] == 1] = False  # cut ball 1 into two halves
    obj = evaluate(pred, truth, object_dims=3).objects
    assert obj.n_true == N_BALLS and obj.n_pred == N_BALLS + 1
    assert obj.n_matched in (N_BALLS - 1, N_BALLS)  # a half may still cover > 50 %
    assert obj.n_matched < obj.n_pred


def test_evaluate_stack_with_3d_objects(truth):
    prob = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    st3 = evaluate_stack(prob, truth, 0.5, object_dims=3)
    st2 = evaluate_stack(prob, truth, 0.5)
    assert len(st3.slices) == SHAPE[0] and st3.planes == tuple(range(SHAPE[0]))
    assert all(s.objects is None for s in st3.slices)
    assert [s.pixel for s in st3.slices] == [s.pixel for s in st2.slices]
    assert st3.whole.objects.n_true == st3.whole.objects.n_matched == N_BALLS
    assert st3.whole.pixel == st2.whole.pixel
    assert st2.whole.objects.n_true == _sections(truth)
    rows = st3.rows("b")
    assert rows[-1]["slice"] == "all" and rows[-1]["n_true_objects"] == N_BALLS
    assert rows[0]["n_true_objects"] is None
    # summed over time frames
    tz = np.stack([truth, truth[::-1]])
    st = evaluate_stack(tz, tz, object_dims=3)
    assert len(st.slices) == 2 * SHAPE[0] and st.whole.objects.n_true == 2 * N_BALLS


def test_3d_objects_of_a_2d_image_are_2d():
    truth = np.zeros((40, 40), np.int32)
    truth[2:8, 2:8], truth[20:30, 5:9], truth[30:35, 30:35] = 1, 2, 3
    a = evaluate_stack(truth, truth, object_dims=3)
    assert a.slices[0].objects is not None and a.whole.objects.n_true == 3
    assert evaluate(truth, truth, object_dims=3) == evaluate(truth, truth)


# ----------------------------------------------------------------------------- post-processing


def test_make_mask_numbers_20_balls_in_3d(truth):
    prob = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    inst = make_mask(prob, 0.5, PostProcess(instances=True), object_dims=3)
    assert inst.dtype == np.int32 and inst.max() == N_BALLS
    for i in range(1, N_BALLS + 1):
        assert len(np.unique(inst[truth == i])) == 1
    flat = make_mask(prob, 0.5, PostProcess(instances=True))
    assert flat.max() == _sections(truth)
    # 3-D instances are unique per stack across time frames too
    two = make_mask(np.stack([prob, prob]), 0.5, PostProcess(instances=True), object_dims=3)
    assert two.max() == 2 * N_BALLS and set(np.unique(two[1])) & set(np.unique(two[0])) == {0}


def test_min_size_counts_voxels_of_3d_objects():
    m = np.zeros((20, 32, 32), np.uint8)
    m[2:5, 2:5, 2:5] = 1  # a 27-voxel blob
    m[:, 20:22, 20:22] = 1  # a column of 80 voxels, 4 px per slice
    pp = PostProcess(min_size=30)
    out3 = postprocess(m, pp, object_dims=3)
    assert out3[3, 3, 3] == 0 and out3[:, 20:22, 20:22].all()
    out2 = postprocess(m, pp)
    assert not out2.any()  # per slice both are small
    assert out3.dtype == np.uint8


def test_holes_are_filled_per_slice_in_3d():
    # an open tube: a ring in every slice, without a 3-D hole
    _, yy, xx = np.indices((6, 20, 20))
    d = (yy - 10) ** 2 + (xx - 10) ** 2
    tube = ((d <= 36) & (d >= 9)).astype(np.uint8)
    out = postprocess(tube, PostProcess(fill_holes=True), object_dims=3)
    assert out[:, 10, 10].all()
    np.testing.assert_array_equal(out, postprocess(tube, PostProcess(fill_holes=True)))


def test_split_touching_in_3d():
    zz, yy, xx = np.indices((24, 32, 48))
    a = (zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 <= 49
    b = (zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 28) ** 2 <= 49
    pp = PostProcess(split_touching=True, instances=True, object_diameter=14)
    out = postprocess((a | b).astype(np.uint8), pp, object_dims=3)
    assert out.max() == 2 and out[12, 16, 14] != out[12, 16, 30]
    binary = postprocess((a | b).astype(np.uint8), PostProcess(split_touching=True), object_dims=3)
    assert binary.dtype == np.uint8 and label_objects(binary, object_dims=3)[1] == 2
    # one ball stays whole
    assert postprocess(a.astype(np.uint8), pp, object_dims=3).max() == 1


def test_2d_default_is_unchanged_slice_by_slice(truth):
    m = (truth > 0).astype(np.uint8)
    pp = PostProcess(min_size=20, fill_holes=True, instances=True)
    out = postprocess(m, pp, object_dims=2)
    np.testing.assert_array_equal(out, postprocess(m, pp))
    ref = [postprocess_2d(s, PostProcess(min_size=20, fill_holes=True)) for s in m]
    np.testing.assert_array_equal(out > 0, np.stack(ref) > 0)
