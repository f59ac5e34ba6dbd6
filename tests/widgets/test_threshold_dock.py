"""The Threshold dock: live preview, latest-wins mask layer, post-processing, automatic thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_segloop.core.bundle import PostProcess, create_model, load_bundle, save_bundle
from napari_segloop.core.evaluation.curve import ThresholdCurve, otsu_threshold
from napari_segloop.core.masks import postprocess
from napari_segloop.widgets import previews
from napari_segloop.widgets.evaluation import slider_threshold


def make_pair(shape=(64, 64), seed=0):
    """Two squares, a small blob and a holed ring, with noisy probabilities around them."""
    truth = np.zeros(shape, dtype=np.int32)
    truth[8:24, 8:24] = 1
    truth[36:56, 30:50] = 2
    truth[10:13, 50:53] = 3  # 9 px
    rng = np.random.default_rng(seed)
    prob = np.clip(0.15 + 0.6 * (truth > 0) + rng.normal(0, 0.12, shape), 0, 1).astype(np.float32)
    prob[44:48, 38:42] = 0.05  # a hole inside object 2
    return prob, truth


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    """A viewer with a probability map, its ground truth and the Threshold dock."""

    def make(prob=None, truth=None, with_truth=True):
        from napari.utils._proxies import PublicOnlyProxy

        from napari_segloop.widgets.threshold_dock import ThresholdDock

        viewer = make_napari_viewer()
        if prob is None:
            prob, truth = make_pair()
        viewer.add_image(prob, name="cells probability")
        if with_truth:
            viewer.add_labels(truth, name="cells truth")
        dock = ThresholdDock(PublicOnlyProxy(viewer))
        viewer.window.add_dock_widget(dock, name="Threshold")
        dock.set_postprocess(PostProcess())  # these tests check the raw ``prob > t`` mask
        wait_idle(qtbot, dock)
        return viewer, dock

    return make


def wait_idle(qtbot, *docks, timeout=20_000):
    qtbot.waitUntil(lambda: not any(d.busy for d in docks), timeout=timeout)


def expected_mask(prob, t):
    return (prob > np.float32(t)).astype(np.uint8)


def test_tick_moves_preview_limits_and_metrics_at_once(setup, qtbot):
    viewer, dock = setup()
    prob = viewer.layers["cells probability"].data
    truth = viewer.layers["cells truth"].data
    preview = dock.preview_layer()
    assert preview is not None and preview.data is prob  # shares the array, no copy
    curve = ThresholdCurve(prob, truth)
    for step in (300, 450, 701):
        dock.slider.setValue(step)
        t = slider_threshold(step)
        # synchronously, before any worker ran:
        assert tuple(preview.contrast_limits) == pytest.approx(previews.preview_limits(t), abs=0)
        assert preview.visible and not dock.mask_layer().visible
        m = curve.metrics(t)
        assert f"Dice {m.dice:.3f}" in dock.readout.text()
        assert dock.plot.has_curve
    wait_idle(qtbot, dock)
    assert dock.mask_layer().visible and not preview.visible


def test_preview_colours_are_exactly_prob_greater_than_threshold():
    cmap = previews.mask_colormap()
    for t in (np.float32(0.5), np.float32(0.123457), np.float32(0.999), np.float32(0.001)):
        below = np.nextafter(t, np.float32(-1))
        above = np.nextafter(t, np.float32(2))
        values = np.array([0.0, below, t, above, 1.0], dtype=np.float32)
        rgba = previews.shader_colors(values, cmap, previews.preview_limits(float(t)))
        shown = rgba[:, 3] > 0
        assert shown.tolist() == (values > t).tolist()


def test_fast_sequence_ends_with_the_last_value_in_one_layer(setup, qtbot):
    viewer, dock = setup()
    prob = viewer.layers["cells probability"].data
    first = dock.mask_layer()
    n_layers = len(viewer.layers)
    for step in range(100, 900, 37):
        dock.slider.setValue(step)
        qtbot.wait(1)
    dock.slider.setValue(812)
    wait_idle(qtbot, dock)
    mask = dock.mask_layer()
    assert mask is first  # updated in place, never a second layer
    assert len(viewer.layers) == n_layers
    np.testing.assert_array_equal(mask.data, expected_mask(prob, slider_threshold(812)))


def test_refresh_requests_keep_only_the_newest(setup, qtbot):
    viewer, dock = setup()
    prob = viewer.layers["cells probability"].data
    for t in (0.2, 0.3, 0.4, 0.55, 0.65):
        dock.set_threshold(t)
        dock.refresh_mask()  # as if the slider were released every time
    wait_idle(qtbot, dock)
    np.testing.assert_array_equal(dock.mask_layer().data, expected_mask(prob, 0.65))


@pytest.mark.parametrize(
    "pp",
    [PostProcess(min_size=20), PostProcess(fill_holes=True), PostProcess(instances=True),
     PostProcess(split_touching=True, instances=True)],
)
def test_postprocessing_changes_the_written_mask(setup, qtbot, pp):
    viewer, dock = setup()
    prob = viewer.layers["cells probability"].data
    dock.set_threshold(0.5)
    dock.set_postprocess(pp)
    wait_idle(qtbot, dock)
    expected = postprocess(expected_mask(prob, 0.5), pp)
    data = dock.mask_layer().data
    np.testing.assert_array_equal(data, expected)
    if pp.instances:
        assert data.max() >= 3
    else:
        assert not np.array_equal(data, expected_mask(prob, 0.5))


def test_best_threshold_is_the_exact_optimum(setup, qtbot):
    viewer, dock = setup()
    prob = viewer.layers["cells probability"].data
    truth = viewer.layers["cells truth"].data
    best = ThresholdCurve(prob, truth).best_threshold()
    dock.best_threshold()
    wait_idle(qtbot, dock)
    assert dock.threshold == best.threshold
    assert dock.slider.value() == round(best.threshold * 1000)
    assert "Best Dice" in dock.status.text()
    np.testing.assert_array_equal(dock.mask_layer().data, expected_mask(prob, best.threshold))


def test_otsu_and_model_default(setup, qtbot, tiny_bundle):
    from napari_segloop.core.bundle import ModelBundle
    from napari_segloop.widgets.session import session_for

    viewer, dock = setup()
    prob = viewer.layers["cells probability"].data
    dock.otsu()
    wait_idle(qtbot, dock)
    assert dock.threshold == pytest.approx(otsu_threshold(prob))

    pp = PostProcess(min_size=5, fill_holes=True)
    settings = type(tiny_bundle.settings)(threshold=0.37, postprocess=pp)
    session_for(viewer).set_model(ModelBundle(tiny_bundle.model, settings, source="new"))
    dock.model_default()
    wait_idle(qtbot, dock)
    assert dock.threshold == pytest.approx(0.37)
    assert dock.postprocess() == PostProcess(min_size=5, fill_holes=True)


def test_save_threshold_into_a_bundle_and_refuse_the_default(setup, qtbot, tmp_path, notifications):
    import torch

    from napari_segloop.core.bundle import ModelBundle
    from napari_segloop.widgets.session import session_for

    viewer, dock = setup()
    session = session_for(viewer)
    torch.manual_seed(0)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, decoder_channels=(16, 16, 16, 16, 16))
    folder = tmp_path / "my-model"
    save_bundle(bundle, folder)
    session.set_model(load_bundle(folder))
    dock.set_threshold(0.42)
    dock.set_postprocess(PostProcess(min_size=7, split_touching=True))
    assert dock.save_to_model()
    saved = json.loads((folder / "segloop.json").read_text())
    assert saved["threshold"] == pytest.approx(0.42)
    assert saved["postprocess"]["min_size"] == 7 and saved["postprocess"]["split_touching"] is True
    assert session.bundle.settings.threshold == pytest.approx(0.42)

    session.set_model(ModelBundle(bundle.model, bundle.settings, source="default"))
    assert not dock.save_to_model()
    assert any("read-only" in n.message for n in notifications())
    session.set_model(ModelBundle(bundle.model, bundle.settings, source="new"))
    assert not dock.save_to_model()
    assert any("not saved as a bundle" in n.message for n in notifications())
    wait_idle(qtbot, dock)


def test_best_without_truth_says_so(setup, qtbot, notifications):
    _, dock = setup(with_truth=False)
    assert not dock.plot.has_curve
    dock.best_threshold()
    assert any("ground-truth" in n.message for n in notifications())
    wait_idle(qtbot, dock)


def test_shape_mismatch_and_float_truth_are_reported(setup, qtbot, notifications):
    prob, _ = make_pair()
    viewer, dock = setup(prob=prob, with_truth=False)
    viewer.add_labels(np.zeros((32, 32), dtype=np.uint8), name="small truth")
    dock.truth_combo.set_value(viewer.layers["small truth"])
    wait_idle(qtbot, dock)
    messages = [n.message for n in notifications()]
    assert any("(32, 32)" in m and "(64, 64)" in m for m in messages)
    assert "nan" not in dock.readout.text().lower()
    viewer.add_image(np.zeros((64, 64), dtype=np.float32), name="float truth")
    dock.truth_combo.set_value(viewer.layers["float truth"])
    wait_idle(qtbot, dock)
    assert any("floating-point" in n.message for n in notifications())


def test_no_probability_layer_disables_the_dock(make_napari_viewer, qtbot):
    from napari_segloop.widgets.threshold_dock import ThresholdDock

    viewer = make_napari_viewer()
    dock = ThresholdDock(viewer)
    assert not dock.slider.isEnabled()
    assert "probability" in dock.status.text()
    dock.slider.setValue(10)  # nothing to do, no crash
    prob, _ = make_pair()
    viewer.add_image(prob, name="late probability")
    assert dock.probability_layer is viewer.layers["late probability"]
    assert dock.slider.isEnabled()
    wait_idle(qtbot, dock)
    assert dock.mask_layer() is not None


def test_user_layers_are_never_modified(setup, qtbot):
    prob, truth = make_pair()
    before_p, before_t = prob.copy(), truth.copy()
    viewer, dock = setup(prob=prob, truth=truth)
    for step in (200, 650):
        dock.slider.setValue(step)
    dock.set_postprocess(PostProcess(min_size=20, fill_holes=True, instances=True))
    dock.best_threshold()
    wait_idle(qtbot, dock)
    np.testing.assert_array_equal(viewer.layers["cells probability"].data, before_p)
    np.testing.assert_array_equal(viewer.layers["cells truth"].data, before_t)
    assert viewer.layers["cells probability"].data is prob  # still the user's own array
    owned = {layer.name for layer in viewer.layers if "napari-segloop" in layer.metadata}
    assert owned == {"cells mask", "cells mask preview"}
