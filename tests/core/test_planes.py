"""Scoring only the predicted planes of a partly predicted stack (``planes=``)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import (
    ThresholdCurve,
    confusion_image,
    evaluate,
    evaluate_stack,
    otsu_threshold,
)
from napari_segloop.core.evaluation.planes import (
    auto_object_dims,
    check_planes,
    file_axes,
    plane_runs,
    select_planes,
)
from napari_segloop.core.masks import PostProcess


def _partly_predicted(seed: int = 0, shape=(10, 32, 32), plane: int = 4):
    """Three discs per plane (ids unique in the stack), probabilities only in ``plane``."""
    r = np.random.default_rng(seed)
    truth = np.zeros(shape, np.int32)
    yy, xx = np.mgrid[: shape[1], : shape[2]]
    for z in range(shape[0]):
        for i, (cy, cx) in enumerate(((8, 8), (8, 24), (24, 16))):
            cy, cx, rad = cy + r.uniform(-2, 2), cx + r.uniform(-2, 2), r.uniform(3, 5)
            truth[z][(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] = 3 * z + i + 1
    prob = np.zeros(shape, np.float32)
    prob[plane] = np.clip((truth[plane] > 0) * 0.7 + r.normal(0.15, 0.1, shape[1:]), 0, 1)
    return prob, truth


# ----------------------------------------------------------------------------- helpers


def test_check_planes_sorts_and_refuses_bad_indices():
    assert check_planes([7, 2, 3, 2], (10, 8, 8)) == (2, 3, 7)
    assert check_planes(np.array([1]), (2, 3, 8, 8)) == (1,)
    assert check_planes([0], (8, 8)) == (0,)
    with pytest.raises(InputError, match=r"out of range.*10 plane\(s\), numbered 0 to 9"):
        check_planes([3, 10], (10, 8, 8))
    with pytest.raises(InputError, match="out of range"):
        check_planes([-1], (10, 8, 8))
    with pytest.raises(InputError, match="at least one plane"):
        check_planes([], (10, 8, 8))
    with pytest.raises(InputError, match="integers"):
        check_planes([1.5], (10, 8, 8))
    with pytest.raises(InputError, match="out of range"):
        check_planes([1], (8, 8))


def test_select_planes_is_a_view_where_it_can_be():
    a = np.arange(2 * 5 * 4 * 3).reshape(2, 5, 4, 3)
    one = select_planes(a, [6])
    assert one.shape == (1, 4, 3) and np.shares_memory(one, a)
    np.testing.assert_array_equal(one[0], a[np.unravel_index(6, (2, 5))])
    even = select_planes(a, [1, 3, 5])
    assert even.shape == (3, 4, 3) and np.shares_memory(even, a)
    odd = select_planes(a, [9, 0, 4])  # sorted, not evenly spaced: a copy
    expected = np.stack([a[np.unravel_index(p, (2, 5))] for p in (0, 4, 9)])
    np.testing.assert_array_equal(odd, expected)
    assert select_planes(a[0, 0], [0]).shape == (1, 4, 3)
    # a region of one slice's shape is broadcast by the caller first; the view keeps zero strides
    region = np.broadcast_to(np.ones((4, 3), bool), (2, 5, 4, 3))
    assert select_planes(region, [2, 7]).shape == (2, 4, 3)


def test_select_planes_of_a_lazy_array_reads_only_those_planes():
    class Lazy:
        shape, dtype, ndim = (3, 4, 5, 6), np.dtype(np.uint8), 4

        def __init__(self) -> None:
            self.data = np.arange(360, dtype=np.uint8).reshape(self.shape)
            self.read: list = []

        def __getitem__(self, index):
            self.read.append(index)
            return self.data[index]

    lazy = Lazy()
    out = select_planes(lazy, [5, 11])
    np.testing.assert_array_equal(out, lazy.data.reshape(-1, 5, 6)[[5, 11]])
    assert len(lazy.read) == 2


def test_plane_runs():
    assert plane_runs([2, 3, 7], (10, 32, 32), 3) == [[2, 3], [7]]
    assert plane_runs([2, 3, 7], (10, 32, 32), 2) == [[2], [3], [7]]
    # (T, Z, Y, X) with Z = 5: planes 3, 4 end frame 0, planes 5, 6 start frame 1
    assert plane_runs([3, 4, 5, 6], (2, 5, 8, 8), 3) == [[3, 4], [5, 6]]
    assert plane_runs([0], (8, 8), 3) == [[0]]
    with pytest.raises(InputError, match="2 or 3"):
        plane_runs([0], (4, 8, 8), 1)


def test_auto_object_dims_follows_the_file_axes(tmp_path):
    import tifffile

    stack = np.zeros((3, 8, 8), np.uint8)
    plain, series = tmp_path / "plain.tif", tmp_path / "time.tif"
    tifffile.imwrite(plain, stack, photometric="minisblack")
    tifffile.imwrite(series, stack, metadata={"axes": "TYX"}, photometric="minisblack")
    np.save(tmp_path / "s.npy", stack)
    assert file_axes(series) == "TYX" and file_axes(tmp_path / "s.npy") is None
    assert auto_object_dims(stack.shape, file_axes(plain)) == 3
    assert auto_object_dims(stack.shape, file_axes(series)) == 2
    assert auto_object_dims(stack.shape, None) == 3
    assert auto_object_dims((2, 3, 8, 8), "TZYX") == 3
    assert auto_object_dims((8, 8), None) == 2


# ----------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("dims", [2, 3])
def test_only_the_predicted_plane_is_scored(dims):
    prob, truth = _partly_predicted()
    ev = evaluate(prob, truth, 0.5, planes=[4], object_dims=dims)
    ref = evaluate(prob[4], truth[4], 0.5)
    assert ev == ref and ref.objects.n_matched == 3
    # without planes the empty planes count as missed objects
    everything = evaluate(prob, truth, 0.5, object_dims=dims)
    assert everything.pixel.fn > ev.pixel.fn and everything.objects.missed > ev.objects.missed
    pp = PostProcess(min_size=6, fill_holes=True)
    assert evaluate(prob, truth, 0.5, planes=[4], postprocess=pp, object_dims=dims) == evaluate(
        prob[4], truth[4], 0.5, postprocess=pp)


def test_evaluate_stack_on_planes():
    prob, truth = _partly_predicted()
    st = evaluate_stack(prob, truth, 0.5, planes=[4])
    assert st.planes == (4,) and len(st.slices) == 1
    assert st.slices[0] == evaluate(prob[4], truth[4], 0.5) and st.whole == st.slices[0]
    assert [r["slice"] for r in st.rows()] == [4, "all"]
    st3 = evaluate_stack(prob, truth, 0.5, planes=[4, 2], object_dims=3)
    assert st3.planes == (2, 4) and st3.slices[1].pixel == st.slices[0].pixel
    assert st3.whole.objects == evaluate(prob[[2, 4]], truth[[2, 4]], 0.5).objects  # apart: 2-D


def test_3d_objects_are_labelled_per_run_of_planes():
    truth = np.zeros((10, 16, 16), np.uint8)
    truth[2:9, 4:10, 4:10] = 1  # one 3-D object from z 2 to 8
    ev = evaluate(truth, truth, planes=[2, 3, 7], object_dims=3)
    assert ev.objects.n_true == 2 and ev.objects.n_matched == 2  # [2, 3] and [7]
    assert evaluate(truth, truth, planes=[2, 3, 4], object_dims=3).objects.n_true == 1
    assert evaluate(truth, truth, planes=[2, 3, 7]).objects.n_true == 3
    assert ev.pixel.n_pixels == 3 * 16 * 16
    # time frames: planes 4 and 5 of (2, 5, Y, X) are in different frames
    tz = np.zeros((2, 5, 16, 16), np.uint8)
    tz[:, :, 4:10, 4:10] = 1
    assert evaluate(tz, tz, planes=[4, 5], object_dims=3).objects.n_true == 2
    assert evaluate(tz, tz, planes=[3, 4], object_dims=3).objects.n_true == 1


def test_a_region_empty_on_the_planes_is_refused():
    prob, truth = _partly_predicted()
    region = np.zeros(prob.shape, bool)
    region[0] = True
    with pytest.raises(InputError, match="scored planes"):
        evaluate(prob, truth, 0.5, region, planes=[4])
    sub = evaluate(prob, truth, 0.5, np.ones((32, 32), bool), planes=[4])
    assert sub == evaluate(prob[4], truth[4], 0.5)


# ----------------------------------------------------------------------------- confusion, curve, otsu


def test_confusion_image_is_empty_outside_the_planes():
    prob, truth = _partly_predicted()
    out = np.full(prob.shape, 9, np.uint8)
    codes = confusion_image(prob, truth, 0.5, out=out, planes=[4])
    assert codes is out
    np.testing.assert_array_equal(codes[4], confusion_image(prob[4], truth[4], 0.5))
    assert not np.delete(codes, 4, axis=0).any()
    assert confusion_image(prob, truth, 0.5)[3].any()  # without planes: FN in plane 3
    region = np.zeros((32, 32), bool)
    region[:10] = True
    codes = confusion_image(prob, truth, 0.5, region, planes=[4])
    assert not codes[4][10:].any() and not codes[:4].any()
    np.testing.assert_array_equal(codes[4][:10], confusion_image(prob[4], truth[4], 0.5)[:10])


def test_curve_and_otsu_on_planes_equal_those_of_the_sub_stack():
    prob, truth = _partly_predicted()
    prob[7] = np.random.default_rng(1).random((32, 32), dtype=np.float32)
    planes = [7, 4]
    sub_p, sub_t = select_planes(prob, planes), select_planes(truth, planes)
    a = ThresholdCurve(prob, truth, planes=planes)
    b = ThresholdCurve(sub_p, sub_t)
    assert a.planes == (4, 7) and a.shape == prob.shape and a.n_pixels == b.n_pixels == 2 * 32 * 32
    np.testing.assert_array_equal(a.curve().dice, b.curve().dice)
    assert a.best_threshold() == b.best_threshold()
    assert a.metrics(0.37) == b.metrics(0.37)
    assert ThresholdCurve(prob, truth).n_pixels == prob.size
    region = np.zeros(prob.shape, bool)
    region[4, :16] = region[7, 16:] = True
    c = ThresholdCurve(prob, truth, region, planes=planes)
    d = ThresholdCurve(sub_p, sub_t, select_planes(region, planes))
    assert c.best_threshold() == d.best_threshold() and c.n_pixels == 32 * 32
    assert otsu_threshold(prob, planes=planes) == otsu_threshold(sub_p)
    assert otsu_threshold(prob, planes=planes) != otsu_threshold(prob)
    assert otsu_threshold(prob, region, planes=planes) == otsu_threshold(
        sub_p, select_planes(region, planes))
    with pytest.raises(InputError, match="scored planes"):
        otsu_threshold(prob, region, planes=[0])
