"""Cached threshold counts: exact at every slider step and every threshold, exact best threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_segloop.core.bundle import BundleSettings, PostProcess, read_bundle_settings, set_bundle_threshold
from napari_segloop.core.errors import InputError, ModelLoadError
from napari_segloop.core.evaluation import evaluate
from napari_segloop.core.evaluation.curve import ThresholdCurve, otsu_threshold


def _brute_counts(prob, truth, t, region=None):
    pred = prob > t  # a Python float: compared in float32, the product's rule
    fg = truth != 0
    if region is not None:
        pred, fg = pred[region], fg[region]
    tp = int(np.count_nonzero(pred & fg))
    fp = int(np.count_nonzero(pred & ~fg))
    fn = int(np.count_nonzero(~pred & fg))
    return tp, fp, fn, int(pred.size) - tp - fp - fn


def _edge_heavy_case(seed=0, shape=(64, 64)):
    """Random probabilities with many values exactly on, and one float32 ulp around, slider steps."""
    r = np.random.default_rng(seed)
    prob = r.random(shape, dtype=np.float32)
    edges = np.linspace(0, 1, 1001).astype(np.float32)
    flat = prob.ravel()
    n = flat.size
    idx = r.permutation(n)
    k = r.integers(0, 1001, n)
    flat[idx[: n // 4]] = edges[k[: n // 4]]  # exactly on an edge
    flat[idx[n // 4: n // 3]] = np.nextafter(edges[k[n // 4: n // 3]], np.float32(2))  # just above
    flat[idx[n // 3: n // 2]] = np.nextafter(edges[k[n // 3: n // 2]], np.float32(-1))  # just below
    flat[idx[n // 2: n // 2 + 50]] = 0.0
    flat[idx[n // 2 + 50: n // 2 + 100]] = 1.0
    prob = np.clip(flat, 0, 1).reshape(shape)
    truth = (r.random(shape) < 0.35).astype(np.uint8)
    return prob, truth


@pytest.mark.parametrize("use_region", [False, True])
def test_counts_at_every_slider_step_equal_brute_force(use_region):
    prob, truth = _edge_heavy_case()
    region = None
    if use_region:
        region = np.zeros(prob.shape, bool)
        region[8:50, 3:60] = True
    curve = ThresholdCurve(prob, truth, region)
    assert curve.steps == 1001 and len(curve.thresholds) == 1001
    for k in range(curve.steps):
        t = float(curve.thresholds[k])
        assert curve.counts_at_step(k) == _brute_counts(prob, truth, t, region), k
        assert curve.step_of(t) == k
    n = int(region.sum()) if use_region else prob.size
    assert curve.n_pixels == n
    for k in (0, 500, 1000):
        assert sum(curve.counts_at_step(k)) == n


def test_counts_for_slider_values_given_as_plain_fractions():
    prob, truth = _edge_heavy_case(seed=1)
    curve = ThresholdCurve(prob, truth)
    for i in range(0, 1001, 13):
        t = i / 1000  # what a slider widget hands over
        assert curve.counts(t) == _brute_counts(prob, truth, t)
        assert curve.metrics(t).threshold == t


def test_other_slider_resolutions_and_ranges():
    prob, truth = _edge_heavy_case(seed=2)
    for steps, rng in ((101, (0.0, 1.0)), (256, (0.2, 0.8)), (7, (-1.0, 2.0))):
        curve = ThresholdCurve(prob, truth, steps=steps, value_range=rng)
        for k in range(steps):
            assert curve.counts_at_step(k) == _brute_counts(prob, truth, curve.threshold_at(k))


def test_exact_counts_at_arbitrary_thresholds():
    prob, truth = _edge_heavy_case(seed=3)
    curve = ThresholdCurve(prob, truth)
    assert not curve.exact_ready
    r = np.random.default_rng(0)
    values = np.unique(prob)
    thresholds = list(r.random(50)) + [float(v) for v in r.choice(values, 50)] + [-0.5, 0.0, 1.0, 1.5]
    for t in thresholds:
        assert curve.counts(t) == _brute_counts(prob, truth, t), t
    assert curve.exact_ready


def test_the_mask_shrinks_as_the_threshold_rises():
    prob, truth = _edge_heavy_case(seed=4)
    curve = ThresholdCurve(prob, truth)
    predicted = [tp + fp for tp, fp, _, _ in map(curve.counts_at_step, range(curve.steps))]
    assert predicted == sorted(predicted, reverse=True)
    assert predicted[0] == np.count_nonzero(prob > 0) and predicted[-1] == 0


def test_numpy_float64_thresholds_follow_the_same_rule():
    from napari_segloop.core.masks import apply_threshold

    prob = np.array([[np.float32(0.3), np.float32(0.7), 0.2, 0.9]], dtype=np.float32)
    truth = np.array([[1, 1, 0, 0]], np.uint8)
    curve = ThresholdCurve(prob, truth)
    for t in (0.3, np.float64(0.3), np.float32(0.3), curve.thresholds[300]):
        mask = apply_threshold(prob, t)
        np.testing.assert_array_equal(mask, [[0, 1, 0, 1]])
        assert curve.counts(t) == _brute_counts(prob, truth, 0.3) == (1, 1, 1, 1)
        assert evaluate(prob, truth, t, objects=False).pixel.tp == 1


def test_counts_agree_with_evaluate():
    prob, truth = _edge_heavy_case(seed=5)
    curve = ThresholdCurve(prob, truth)
    for t in (0.1, 0.37, 0.5, 0.123456):
        assert curve.metrics(t) == evaluate(prob, truth, t, objects=False).pixel


def _brute_best(prob, truth, lo=0.0, hi=1.0):
    candidates = [lo] + [float(v) for v in np.unique(prob) if lo < v <= hi]
    best_t, best_d = None, -1.0
    for t in candidates:
        tp, fp, fn, _ = _brute_counts(prob, truth, t)
        d = 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
        if d > best_d:
            best_t, best_d = t, d
    return best_t, best_d


@pytest.mark.parametrize("seed", range(6))
def test_best_threshold_is_the_brute_force_optimum(seed):
    r = np.random.default_rng(seed)
    shape = (24, 30)
    truth = (r.random(shape) < 0.4).astype(np.uint8)
    prob = np.clip(truth * 0.35 + r.random(shape) * 0.65, 0, 1).astype(np.float32)
    if seed % 2:
        prob = np.round(prob * 20) / 20  # many ties
    curve = ThresholdCurve(prob, truth)
    best = curve.best_threshold()
    t_ref, d_ref = _brute_best(prob, truth)
    assert best.score == pytest.approx(d_ref, abs=1e-12)
    assert best.threshold == pytest.approx(t_ref, abs=0)
    # prob > threshold reproduces the optimum exactly, and so does any t below `upper`
    tp, fp, fn, _ = _brute_counts(prob, truth, best.threshold)
    assert 2 * tp / (2 * tp + fp + fn) == pytest.approx(best.score, abs=1e-12)
    assert best.metrics.dice == pytest.approx(best.score)
    if np.isfinite(best.upper):
        mid = float(np.float32((best.threshold + best.upper) / 2))
        if best.threshold <= mid < best.upper:
            assert _brute_counts(prob, truth, mid) == _brute_counts(prob, truth, best.threshold)
        assert _brute_counts(prob, truth, best.upper) != _brute_counts(prob, truth, best.threshold)
    # never better at any slider step
    assert max(curve.metrics_at_step(k).dice for k in range(curve.steps)) <= best.score + 1e-12


@pytest.mark.parametrize("value_range", [(0.2, 0.8), (0.0, 0.5), (-1.0, 2.0)])
def test_best_threshold_searches_the_given_range(value_range):
    r = np.random.default_rng(11)
    truth = (r.random((20, 25)) < 0.3).astype(np.uint8)
    prob = (truth * 0.3 + r.random((20, 25)) * 1.4 - 0.2).astype(np.float32)  # also outside [0, 1]
    best = ThresholdCurve(prob, truth, value_range=value_range).best_threshold()
    t_ref, d_ref = _brute_best(prob, truth, *value_range)
    assert (best.threshold, best.score) == (pytest.approx(t_ref, abs=0), pytest.approx(d_ref, abs=1e-12))
    assert value_range[0] <= best.threshold <= value_range[1]


def test_best_threshold_other_metrics_and_slider_best():
    prob, truth = _edge_heavy_case(seed=6)
    curve = ThresholdCurve(prob, truth)
    dice = curve.best_threshold("dice")
    iou = curve.best_threshold("iou")
    assert iou.threshold == dice.threshold  # IoU is monotone in Dice
    acc = curve.best_threshold("accuracy")
    steps_acc = [curve.metrics_at_step(k).accuracy for k in range(curve.steps)]
    assert acc.score >= max(steps_acc) - 1e-12
    k = curve.best_step()
    assert curve.metrics_at_step(k).dice == max(curve.metrics_at_step(j).dice for j in range(curve.steps))
    with pytest.raises(InputError, match="metric"):
        curve.best_threshold("volume")


def test_best_threshold_of_perfectly_separated_and_empty_truth():
    truth = np.zeros((10, 10), np.uint8)
    truth[2:6, 2:6] = 1
    prob = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    best = ThresholdCurve(prob, truth).best_threshold()
    assert best.score == 1.0
    assert best.threshold == pytest.approx(0.1) and best.upper == pytest.approx(0.9)
    empty = ThresholdCurve(prob, np.zeros_like(truth)).best_threshold()
    assert empty.score == 1.0 and empty.metrics.tp + empty.metrics.fp == 0  # predict nothing


def test_curve_data_for_the_plot():
    prob, truth = _edge_heavy_case(seed=7)
    curve = ThresholdCurve(prob, truth, steps=51)
    data = curve.curve()
    assert data.thresholds.shape == data.dice.shape == data.precision.shape == data.recall.shape == (51,)
    for k in (0, 10, 25, 50):
        m = curve.metrics_at_step(k)
        assert data.dice[k] == pytest.approx(m.dice)
        assert data.recall[k] == pytest.approx(m.recall)
        assert (np.isnan(data.precision[k]) and m.precision is None) or data.precision[k] == pytest.approx(
            m.precision)
    assert np.isnan(data.precision[-1])  # nothing predicted at 1.0 while the truth is not empty
    json.dumps(data.as_dict(), allow_nan=False)


def test_stack_counts_are_the_sum_of_slice_counts():
    r = np.random.default_rng(8)
    prob = r.random((3, 20, 20), dtype=np.float32)
    truth = (r.random((3, 20, 20)) < 0.3).astype(np.uint8)
    whole = ThresholdCurve(prob, truth)
    slices = [ThresholdCurve(prob[i], truth[i]) for i in range(3)]
    for k in (0, 300, 999):
        assert whole.counts_at_step(k) == tuple(np.sum([s.counts_at_step(k) for s in slices], axis=0))


def test_invalid_inputs_are_refused():
    prob, truth = _edge_heavy_case()
    with pytest.raises(InputError, match=r"\(64, 64\)"):
        ThresholdCurve(prob, truth[:10])
    with pytest.raises(InputError, match="floating-point"):
        ThresholdCurve(prob, truth.astype(np.float32))
    bad = prob.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        ThresholdCurve(bad, truth)
    with pytest.raises(InputError, match="steps"):
        ThresholdCurve(prob, truth, steps=1)
    with pytest.raises(InputError, match="No ground truth"):
        ThresholdCurve(prob, None)


def test_the_curve_is_a_snapshot():
    prob, truth = _edge_heavy_case(seed=9)
    expected = _brute_counts(prob, truth, 0.4321)
    curve = ThresholdCurve(prob, truth)
    truth[:] = 0  # e.g. the user paints the ground truth layer after the curve was built
    prob[:] = 0
    assert not curve.exact_ready
    assert curve.counts(0.4321) == expected  # sorted lazily, from the copy


def test_otsu_threshold():
    r = np.random.default_rng(0)
    prob = np.concatenate([r.normal(0.1, 0.03, 500), r.normal(0.8, 0.05, 300)]).clip(0, 1)
    prob = prob.astype(np.float32).reshape(40, 20)
    t = otsu_threshold(prob)
    assert prob.ravel()[:500].max() <= t < prob.ravel()[500:].min()  # in the gap between the modes
    assert np.count_nonzero(prob > t) == 300
    assert otsu_threshold(np.full((4, 4), 0.3, np.float32)) == pytest.approx(0.3)
    region = np.zeros(prob.shape, bool)
    region[:25] = True  # only low values
    assert otsu_threshold(prob, region) < 0.25


def _fake_bundle(folder, **settings):
    folder.mkdir()
    (folder / "config.json").write_text('{"_model_class": "Unet"}')
    data = BundleSettings(**settings).to_json()
    data["future_key"] = {"kept": True}
    (folder / "segloop.json").write_text(json.dumps(data))
    return folder


def test_a_chosen_threshold_is_saved_into_the_bundle(tmp_path):
    folder = _fake_bundle(tmp_path / "model", threshold=0.5)
    pp = PostProcess(min_size=12, fill_holes=True, instances=False, split_touching=True)
    settings = set_bundle_threshold(folder, 0.37, pp)
    assert settings.threshold == 0.37 and settings.postprocess == pp
    again = read_bundle_settings(folder)
    assert again.threshold == 0.37 and again.postprocess == pp
    raw = json.loads((folder / "segloop.json").read_text())
    assert raw["future_key"] == {"kept": True}
    assert raw["provenance"]["history"][-1]["threshold"] == 0.37
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "segloop.json"]
    # keeping the post-processing
    assert set_bundle_threshold(folder, 0.6).postprocess == pp


def test_saving_a_threshold_refuses_bad_input(tmp_path):
    folder = _fake_bundle(tmp_path / "model")
    with pytest.raises(ModelLoadError, match="outside"):
        set_bundle_threshold(folder, 1.5)
    with pytest.raises(ModelLoadError, match="not a model bundle"):
        set_bundle_threshold(tmp_path, 0.5)
    with pytest.raises(ModelLoadError, match="read-only"):
        set_bundle_threshold("default", 0.5)
    assert read_bundle_settings(folder).threshold == 0.5


def test_old_bundle_settings_without_split_touching_still_load():
    data = BundleSettings().to_json()
    del data["postprocess"]["split_touching"]
    assert BundleSettings.from_json(data).postprocess.split_touching is False


def test_object_diameter_is_stored_in_the_post_processing(tmp_path):
    folder = _fake_bundle(tmp_path / "model")
    pp = PostProcess(min_size=12, split_touching=True, instances=True, object_diameter=18.5)
    set_bundle_threshold(folder, 0.4, pp)
    raw = json.loads((folder / "segloop.json").read_text())
    assert raw["postprocess"]["object_diameter"] == 18.5
    assert read_bundle_settings(folder).postprocess == pp
    data = BundleSettings().to_json()
    assert data["postprocess"]["object_diameter"] is None
    del data["postprocess"]["object_diameter"]  # older files
    assert BundleSettings.from_json(data).postprocess.object_diameter is None


@pytest.mark.parametrize("value", [0, -3.0, float("nan"), float("inf"), True, "20"])
def test_an_invalid_object_diameter_is_refused(value):
    data = BundleSettings().to_json()
    data["postprocess"]["object_diameter"] = value
    with pytest.raises(ModelLoadError, match="object_diameter"):
        BundleSettings.from_json(data)
