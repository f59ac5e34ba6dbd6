"""Pixel and object metrics, conventions for empty masks, input checks, confusion image, CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from napari_segloop.core.bundle import PostProcess
from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import (
    CONFUSION_NAMES,
    FN,
    FP,
    TN,
    TP,
    Evaluation,
    ObjectMetrics,
    PixelMetrics,
    confusion_image,
    evaluate,
    evaluate_stack,
    label_objects,
    match_objects,
    metrics_csv_text,
    write_metrics_csv,
)
from napari_segloop.core.masks import apply_threshold, postprocess
from napari_segloop.widgets.colors import CONFUSION_COLORS


def _random_case(shape=(48, 56), seed=0):
    r = np.random.default_rng(seed)
    prob = r.random(shape, dtype=np.float32)
    truth = (r.random(shape) < 0.3).astype(np.uint8)
    return prob, truth


def _brute(pred: np.ndarray, truth: np.ndarray, region=None):
    if region is not None:
        pred, truth = pred[region], truth[region]
    pred, truth = pred.astype(bool), truth.astype(bool)
    return (int(np.sum(pred & truth)), int(np.sum(pred & ~truth)), int(np.sum(~pred & truth)),
            int(np.sum(~pred & ~truth)))


# ----------------------------------------------------------------------------- pixel metrics


def test_counts_add_up_and_match_brute_force():
    prob, truth = _random_case()
    region = np.zeros(prob.shape, bool)
    region[5:30, 10:50] = True
    for t in (0.0, 0.25, 0.5, 0.9, 1.0):
        ev = evaluate(prob, truth, t, objects=False)
        p = ev.pixel
        assert p.tp + p.fp + p.fn + p.tn == prob.size == p.n_pixels
        assert (p.tp, p.fp, p.fn, p.tn) == _brute(prob > t, truth)
        evr = evaluate(prob, truth, t, region, objects=False).pixel
        assert evr.n_pixels == int(region.sum())
        assert (evr.tp, evr.fp, evr.fn, evr.tn) == _brute(prob > t, truth, region)


def test_derived_metrics_follow_their_definitions():
    m = PixelMetrics(tp=30, fp=10, fn=20, tn=40, threshold=0.5)
    assert m.dice == pytest.approx(60 / 90)
    assert m.iou == pytest.approx(30 / 60)
    assert m.precision == pytest.approx(30 / 40)
    assert m.recall == pytest.approx(30 / 50)
    assert m.accuracy == pytest.approx(70 / 100)
    assert m.f1 == m.dice
    d = m.to_dict()
    for key in ("threshold", "tp", "fp", "fn", "tn", "dice", "iou", "precision", "recall", "accuracy"):
        assert key in d


def test_pixel_exactly_at_the_threshold_is_background():
    prob = np.array([[0.2, 0.5, 0.5000001, 0.8]], dtype=np.float32)
    truth = np.array([[0, 1, 1, 1]], dtype=np.uint8)
    p = evaluate(prob, truth, 0.5, objects=False).pixel
    assert (p.tp, p.fp, p.fn, p.tn) == (2, 0, 1, 1)
    np.testing.assert_array_equal(apply_threshold(prob, 0.5), prob > 0.5)


def test_the_mask_shrinks_as_the_threshold_rises():
    prob, truth = _random_case(seed=3)
    predicted = [evaluate(prob, truth, t, objects=False).pixel for t in np.linspace(0, 1, 21)]
    sizes = [p.tp + p.fp for p in predicted]
    assert sizes == sorted(sizes, reverse=True)
    recalls = [p.recall for p in predicted]
    assert recalls == sorted(recalls, reverse=True)


def test_both_empty_is_perfect_agreement():
    empty = np.zeros((8, 8), np.uint8)
    ev = evaluate(empty, empty)
    p, o = ev.pixel, ev.objects
    assert (p.dice, p.iou, p.precision, p.recall, p.accuracy) == (1.0, 1.0, 1.0, 1.0, 1.0)
    assert (o.precision, o.recall, o.f1, o.mean_matched_iou) == (1.0, 1.0, 1.0, None)
    assert any("empty" in n for n in ev.notes)


def test_empty_prediction_with_truth_has_undefined_precision_not_nan():
    truth = np.zeros((8, 8), np.uint8)
    truth[2:5, 2:5] = 1
    ev = evaluate(np.zeros((8, 8), np.uint8), truth)
    p = ev.pixel
    assert p.dice == 0.0 and p.iou == 0.0 and p.recall == 0.0
    assert p.precision is None
    assert ev.objects.precision is None and ev.objects.recall == 0.0 and ev.objects.f1 == 0.0
    text = json.dumps(ev.to_dict(), allow_nan=False)
    assert '"precision": null' in text


def test_empty_truth_with_prediction_has_undefined_recall():
    pred = np.zeros((8, 8), np.uint8)
    pred[1:3, 1:3] = 1
    ev = evaluate(pred, np.zeros((8, 8), np.int32))
    assert ev.pixel.recall is None and ev.pixel.precision == 0.0 and ev.pixel.dice == 0.0
    assert ev.objects.recall is None and ev.objects.spurious == 1
    assert any("empty" in n for n in ev.notes)
    json.dumps(ev.to_dict(), allow_nan=False)


def test_accuracy_is_none_without_pixels():
    assert PixelMetrics(0, 0, 0, 0).accuracy is None
    assert PixelMetrics(0, 0, 0, 0).dice == 1.0


# ----------------------------------------------------------------------------- input checks


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(InputError) as info:
        evaluate(np.zeros((10, 12), np.float32), np.zeros((10, 10), np.uint8), 0.5)
    msg = str(info.value)
    assert "(10, 10)" in msg and "(10, 12)" in msg


def test_float_truth_is_refused():
    with pytest.raises(InputError, match="floating-point"):
        evaluate(np.zeros((4, 4), np.float32), np.zeros((4, 4), np.float32), 0.5)


@pytest.mark.parametrize("pred, truth", [(None, np.zeros((4, 4), np.uint8)),
                                         (np.zeros((4, 4), np.uint8), None)])
def test_missing_inputs_are_refused(pred, truth):
    with pytest.raises(InputError, match="No "):
        evaluate(pred, truth)


def test_empty_arrays_are_refused():
    with pytest.raises(InputError, match="empty"):
        evaluate(np.zeros((0, 4), np.uint8), np.zeros((0, 4), np.uint8))


def test_probability_map_needs_a_threshold_and_no_nan():
    prob, truth = _random_case()
    with pytest.raises(InputError, match="threshold"):
        evaluate(prob, truth)
    prob[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        evaluate(prob, truth, 0.5)


def test_instance_ids_count_as_foreground_where_non_zero():
    prob, truth = _random_case(seed=5)
    ids = np.zeros(truth.shape, np.int32)
    ids[truth > 0] = np.random.default_rng(1).integers(1, 40, int(truth.sum()))
    a = evaluate(prob, ids, 0.4, objects=False)
    b = evaluate(prob, truth, 0.4, objects=False)
    assert a.pixel == b.pixel
    assert any("instance ids" in n for n in a.notes)
    assert not any("instance ids" in n for n in b.notes)


def test_region_must_fit_and_not_be_empty():
    prob, truth = _random_case()
    with pytest.raises(InputError, match="region"):
        evaluate(prob, truth, 0.5, np.ones((5, 5), bool))
    with pytest.raises(InputError, match="no pixels"):
        evaluate(prob, truth, 0.5, np.zeros(prob.shape, bool))
    with pytest.raises(InputError, match="boolean"):
        evaluate(prob, truth, 0.5, np.ones(prob.shape, np.float32))


# ----------------------------------------------------------------------------- objects


def _hand_made():
    """Truth: A (split by the prediction), B + C (merged), D (missed), F (exact), G (IoU 0.8).

    Prediction: two halves of A (IoU exactly 0.5 each: not a match), one object over B and C,
    nothing at D, a spurious E, F exactly, G shifted.
    """
    truth = np.zeros((40, 60), np.int32)
    pred = np.zeros((40, 60), np.int32)
    truth[2:12, 2:12] = 1  # A, 100 px
    pred[2:12, 2:7] = 1  # A left half, 50 px: IoU 0.5
    pred[2:12, 7:12] = 2  # A right half
    truth[2:8, 20:26] = 2  # B, 36 px
    truth[2:8, 27:33] = 3  # C, 36 px (one column apart from B)
    pred[2:8, 20:33] = 3  # B + C merged: IoU 36/78 each
    truth[20:26, 2:8] = 4  # D: missed
    pred[20:26, 20:26] = 4  # E: spurious
    truth[30:38, 40:50] = 5  # F, exact
    pred[30:38, 40:50] = 5
    truth[15:25, 40:50] = 6  # G: 100 px; prediction 90 px inside -> IoU 0.9 ... shift to 0.8
    pred[17:25, 40:50] = 6  # 80 px inside G: IoU 80/100
    return pred, truth


def test_object_metrics_on_a_hand_made_scene():
    pred, truth = _hand_made()
    o = evaluate(pred, truth).objects
    assert (o.n_true, o.n_pred, o.n_matched) == (6, 6, 2)
    assert (o.missed, o.spurious) == (4, 4)
    assert o.precision == pytest.approx(2 / 6) and o.recall == pytest.approx(2 / 6)
    assert o.f1 == pytest.approx(4 / 12)
    assert o.mean_matched_iou == pytest.approx((1.0 + 0.8) / 2)


def test_a_split_object_matches_when_one_part_dominates():
    truth = np.zeros((20, 20), np.uint8)
    truth[2:12, 2:12] = 1
    pred = np.zeros((20, 20), np.int32)
    pred[2:12, 2:8] = 1  # 60 px: IoU 0.6
    pred[2:12, 8:12] = 2  # 40 px: IoU 0.4
    o = evaluate(pred, truth).objects
    assert (o.n_true, o.n_pred, o.n_matched, o.missed, o.spurious) == (1, 2, 1, 0, 1)
    assert o.mean_matched_iou == pytest.approx(0.6)


def test_binary_masks_are_split_into_connected_components_and_ids_kept():
    truth_ids = np.zeros((10, 20), np.int32)
    truth_ids[2:8, 2:8] = 1
    truth_ids[2:8, 8:14] = 2  # touching: two objects only thanks to the ids
    mask = (truth_ids > 0).astype(np.uint8)
    assert label_objects(mask)[1] == 1
    assert label_objects(truth_ids)[1] == 2
    o = evaluate(mask, truth_ids).objects
    assert (o.n_true, o.n_pred, o.n_matched) == (2, 1, 0)
    diagonal = np.zeros((4, 4), bool)
    diagonal[0, 0] = diagonal[1, 1] = True  # 4-connectivity: two objects
    assert label_objects(diagonal)[1] == 2


def test_large_and_negative_ids_are_relabelled():
    a = np.zeros((6, 6), np.int64)
    a[0:2, 0:2] = 10**12
    a[3:5, 3:5] = -7
    a[0:2, 4:6] = 5
    labels, n = label_objects(a)
    assert n == 3 and labels.max() == 3
    assert len(np.unique(labels[a != 0])) == 3


def test_matching_is_independent_of_id_values_and_symmetric():
    pred, truth = _hand_made()
    perm = np.random.default_rng(0).permutation(100) + 1
    perm = np.concatenate([[0], perm])
    a = evaluate(pred, truth).objects
    b = evaluate(perm[pred].astype(np.int32), perm[truth].astype(np.int32)).objects
    assert a == b
    tl, nt = label_objects(truth)
    pl, n_p = label_objects(pred)
    swapped = match_objects(pl, tl, n_p, nt)
    assert swapped.n_matched == a.n_matched and swapped.iou_sum == pytest.approx(a.iou_sum)


def test_objects_are_clipped_to_the_region():
    pred, truth = _hand_made()
    region = np.zeros(truth.shape, bool)
    region[28:40, 35:55] = True  # only F
    ev = evaluate(pred, truth, region=region)
    assert (ev.objects.n_true, ev.objects.n_pred, ev.objects.n_matched) == (1, 1, 1)
    assert ev.pixel.n_pixels == int(region.sum())


def test_postprocessing_is_applied_before_the_metrics():
    prob, truth = _random_case(seed=7)
    pp = PostProcess(min_size=4, fill_holes=True)
    a = evaluate(prob, truth, 0.6, postprocess=pp)
    mask = postprocess(apply_threshold(prob, 0.6), pp)
    b = evaluate(mask, truth)
    assert a.pixel.to_dict() | {"threshold": None} == b.pixel.to_dict()
    assert a.objects == b.objects
    assert a.threshold == 0.6


def test_splitting_touching_objects_recovers_them():
    yy, xx = np.mgrid[:60, :80]
    truth = np.zeros((60, 80), np.int32)
    union = ((yy - 30) ** 2 + (xx - 25) ** 2 < 144) | ((yy - 30) ** 2 + (xx - 46) ** 2 < 144)
    truth[union] = np.where(xx[union] < 35.5, 1, 2)  # mirror images: each half of the union
    prob = (truth > 0).astype(np.float32) * 0.9
    merged = evaluate(prob, truth, 0.5).objects
    assert merged.n_pred == 1 and merged.n_matched == 0
    split = evaluate(prob, truth, 0.5, postprocess=PostProcess(split_touching=True, instances=True)).objects
    assert split.n_pred == 2 and split.n_matched == 2
    # a binary result keeps a line between them, so they stay two objects
    binary = postprocess(apply_threshold(prob, 0.5), PostProcess(split_touching=True))
    assert binary.dtype == np.uint8 and label_objects(binary)[1] == 2
    # one ellipse is not split
    ellipse = (((yy - 30) / 10) ** 2 + ((xx - 40) / 25) ** 2 < 1).astype(np.uint8)
    assert postprocess(ellipse, PostProcess(split_touching=True, instances=True)).max() == 1


# ----------------------------------------------------------------------------- stacks


def test_stack_whole_is_the_sum_of_its_slices():
    r = np.random.default_rng(2)
    prob = r.random((3, 30, 40), dtype=np.float32)
    truth = np.zeros((3, 30, 40), np.int32)
    truth[:, 5:15, 5:15] = 1  # the same id in every slice: three 2-D objects
    truth[1, 20:28, 20:30] = 2
    prob[:, 5:15, 5:15] = 1.0
    st = evaluate_stack(prob, truth, 0.7)
    assert len(st.slices) == 3
    total = st.slices[0].pixel + st.slices[1].pixel + st.slices[2].pixel
    assert (st.whole.pixel.tp, st.whole.pixel.fp, st.whole.pixel.fn, st.whole.pixel.tn) == (
        total.tp, total.fp, total.fn, total.tn)
    assert st.whole.objects.n_true == 4
    whole = evaluate(prob, truth, 0.7)
    assert whole.pixel == st.whole.pixel
    assert whole.objects.n_true == st.whole.objects.n_true
    assert whole.objects.n_matched == st.whole.objects.n_matched
    assert whole.objects.iou_sum == pytest.approx(st.whole.objects.iou_sum)
    for i in range(3):
        assert st.slices[i].pixel == evaluate(prob[i], truth[i], 0.7).pixel
    rows = st.rows("s")
    assert [r["slice"] for r in rows] == [0, 1, 2, "all"]


def test_a_slice_region_applies_to_every_slice():
    r = np.random.default_rng(4)
    prob = r.random((2, 20, 20), dtype=np.float32)
    truth = (r.random((2, 20, 20)) < 0.4).astype(np.uint8)
    region = np.zeros((20, 20), bool)
    region[:10] = True
    ev = evaluate(prob, truth, 0.5, region, objects=False)
    full = np.broadcast_to(region, prob.shape)
    assert (ev.pixel.tp, ev.pixel.fp, ev.pixel.fn, ev.pixel.tn) == _brute(prob > 0.5, truth, full)
    empty_in_one = np.zeros((2, 20, 20), bool)
    empty_in_one[0, :5] = True
    st = evaluate_stack(prob, truth, 0.5, empty_in_one)
    assert st.slices[1].pixel.n_pixels == 0 and st.slices[1].pixel.accuracy is None


def test_evaluations_add_up():
    a = Evaluation(PixelMetrics(1, 2, 3, 4, 0.5), ObjectMetrics(2, 3, 1, 0.7), ("x",))
    b = Evaluation(PixelMetrics(10, 20, 30, 40, 0.5), ObjectMetrics(1, 1, 1, 0.9), ("x", "y"))
    c = a + b
    assert c.pixel == PixelMetrics(11, 22, 33, 44, 0.5)
    assert c.objects == ObjectMetrics(3, 4, 2, pytest.approx(1.6))
    assert c.notes == ("x", "y")


# ----------------------------------------------------------------------------- confusion image


def test_confusion_codes_match_their_definition():
    prob, truth = _random_case(seed=9)
    codes = confusion_image(prob, truth, 0.5)
    assert codes.dtype == np.uint8 and codes.shape == prob.shape
    pred, t = prob > 0.5, truth > 0
    np.testing.assert_array_equal(codes == TP, pred & t)
    np.testing.assert_array_equal(codes == FP, pred & ~t)
    np.testing.assert_array_equal(codes == FN, ~pred & t)
    np.testing.assert_array_equal(codes == TN, ~pred & ~t)
    p = evaluate(prob, truth, 0.5, objects=False).pixel
    assert np.bincount(codes.ravel(), minlength=4).tolist() == [p.tn, p.tp, p.fp, p.fn]


def test_confusion_image_region_and_buffer():
    prob, truth = _random_case(seed=9)
    region = np.zeros(prob.shape, bool)
    region[10:20] = True
    buf = np.full(prob.shape, 9, np.uint8)
    codes = confusion_image(prob, truth, 0.3, region, out=buf)
    assert codes is buf
    assert (codes[~region] == TN).all()
    ids = truth.astype(np.int32) * 7
    np.testing.assert_array_equal(confusion_image(prob > 0.3, ids), confusion_image(prob, truth, 0.3))
    with pytest.raises(InputError, match="shape"):
        confusion_image(prob, truth[:5], 0.3)


def test_confusion_colours_are_a_fixed_table():
    assert set(CONFUSION_COLORS) == {TN, TP, FP, FN} == set(CONFUSION_NAMES)
    assert CONFUSION_COLORS[TN][3] == 0.0
    rgb = {CONFUSION_COLORS[c][:3] for c in (TP, FP, FN)}
    assert len(rgb) == 3
    for c in (TP, FP, FN):
        assert CONFUSION_COLORS[c][3] == 1.0
        assert all(0.0 <= v <= 1.0 for v in CONFUSION_COLORS[c])


# ----------------------------------------------------------------------------- CSV


def test_csv_export_round_trips(tmp_path):
    pred, truth = _hand_made()
    rows = [{"name": "a", **evaluate(pred, truth).to_dict()},
            {"name": "empty", **evaluate(np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)).to_dict()}]
    path = write_metrics_csv(tmp_path / "m.csv", rows)
    with open(path, newline="") as fh:
        read = list(csv.DictReader(fh))
    assert [r["name"] for r in read] == ["a", "empty"]
    assert float(read[0]["dice"]) == pytest.approx(rows[0]["dice"])
    assert int(read[0]["matched_objects"]) == 2
    assert read[1]["precision"] == ""  # None -> empty cell, never "nan"
    assert "nan" not in path.read_text().lower()
    header = metrics_csv_text(rows).splitlines()[0].split(",")
    assert header[:4] == ["name", "threshold", "tp", "fp"]
    assert list(tmp_path.iterdir()) == [path]
    with pytest.raises(InputError, match="does not exist"):
        write_metrics_csv(tmp_path / "missing" / "m.csv", rows)
