"""One evaluation state for both docks: what is scored is what is on screen (issue 7).

Partly predicted stacks, the post-processed mask, 3-D objects, ground-truth
picking, which layers are visible, and the dock against ``segloop evaluate``.
"""

from __future__ import annotations

import json
import weakref

import numpy as np
import pytest

from napari_segloop.core.evaluation import confusion_image, evaluate, evaluate_stack
from napari_segloop.core.masks import PostProcess, make_mask
from napari_segloop.widgets import outputs, previews


def wait_idle(qtbot, *docks, timeout=30_000):
    qtbot.waitUntil(lambda: not any(d.busy for d in docks), timeout=timeout)


def balls(shape=(12, 48, 48), centers=((6, 12, 12), (5, 34, 14), (6, 24, 36)), radius=4.5):
    """Instance labels of 3-D balls: each spans several slices."""
    zz, yy, xx = np.indices(shape)
    truth = np.zeros(shape, dtype=np.int32)
    for i, (z, y, x) in enumerate(centers, start=1):
        truth[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2] = i
    return truth


def noisy_prob(truth, seed=0, signal=0.6, noise=0.12):
    rng = np.random.default_rng(seed)
    return np.clip(0.15 + signal * (truth > 0) + rng.normal(0, noise, truth.shape), 0, 1).astype(np.float32)


@pytest.fixture
def open_docks(make_napari_viewer, qtbot):
    """A viewer with a probability map and ground truth, and the docks asked for."""

    def make(prob, truth=None, *, threshold_dock=True, confusion_dock=True, axis_labels=None):
        from napari.utils._proxies import PublicOnlyProxy

        from napari_segloop.widgets.confusion_dock import ConfusionDock
        from napari_segloop.widgets.session import METADATA_KEY
        from napari_segloop.widgets.threshold_dock import ThresholdDock

        viewer = make_napari_viewer()
        kwargs = {} if axis_labels is None else {"axis_labels": axis_labels}
        viewer.add_image(prob, name="cells probability", **kwargs,  # as the Predict dock makes it
                         metadata={METADATA_KEY: {"role": "probability", "image": "cells"}})
        if truth is not None:
            viewer.add_labels(truth, name="cells truth", **kwargs)
        docks = []
        if threshold_dock:
            docks.append(ThresholdDock(PublicOnlyProxy(viewer)))
            viewer.window.add_dock_widget(docks[-1], name="Threshold")
        if confusion_dock:
            docks.append(ConfusionDock(PublicOnlyProxy(viewer)))
            viewer.window.add_dock_widget(docks[-1], name="Confusion")
        wait_idle(qtbot, *docks)
        return viewer, docks

    return make


def partial_stack(viewer, image_name="cells", shape=(6, 40, 40), plane=3, seed=1):
    """An image stack with only ``plane`` predicted, registered as the Predict dock does."""
    from napari_segloop.widgets.session import METADATA_KEY, ProbabilityMap, session_for

    truth = np.zeros(shape, dtype=np.int32)
    truth[:, 8:20, 8:20] = 1
    truth[:, 24:36, 20:34] = 2
    full = noisy_prob(truth, seed)
    prob = np.zeros(shape, dtype=np.float32)
    prob[plane] = full[plane]
    image = viewer.add_image(full, name=image_name)
    layer = viewer.add_image(prob, name=f"{image_name} probability",
                             metadata={METADATA_KEY: {"role": "probability", "image": image_name}})
    session = session_for(viewer)
    session.set_probability(image, ProbabilityMap(weakref.ref(layer), prob, session.model_version,
                                                  complete=False, slices={(plane,)}))
    viewer.add_labels(truth, name=f"{image_name} truth")
    return prob, truth


def test_partly_predicted_stack_scores_only_the_predicted_slices(make_napari_viewer, qtbot):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.confusion_dock import ConfusionDock
    from napari_segloop.widgets.threshold_dock import ThresholdDock

    viewer = make_napari_viewer()
    prob, truth = partial_stack(viewer)
    viewer.dims.set_current_step(0, 3)
    tdock, cdock = ThresholdDock(PublicOnlyProxy(viewer)), ConfusionDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(tdock)
    viewer.window.add_dock_widget(cdock)
    tdock.set_postprocess(PostProcess())
    tdock.set_threshold(0.5)
    wait_idle(qtbot, tdock, cdock)
    assert "1 of 6 slices predicted" in cdock.status.text()
    assert "1 of 6 slices predicted" in tdock.status.text()
    # the whole-stack column covers the predicted slice only: it equals the 2-D score of plane 3
    alone = evaluate(prob[3], truth[3], 0.5)
    assert cdock.table.text("tp", 1) == f"{alone.pixel.tp:,}"
    assert cdock.table.text("fn", 1) == f"{alone.pixel.fn:,}"
    assert cdock.table.text("dice", 1) == f"{alone.pixel.dice:.4f}"
    # Best over the predicted slice: a sensible threshold, not one that floods the unpredicted zeros
    tdock.best_threshold()
    wait_idle(qtbot, tdock, cdock)
    from napari_segloop.core.evaluation.curve import ThresholdCurve

    expected = ThresholdCurve(prob[3], truth[3]).best_threshold("dice")
    assert tdock.best.threshold == pytest.approx(expected.threshold)
    assert tdock.best.score > 0.9
    # nothing is drawn on the unpredicted slices
    codes = cdock.confusion_layer().data
    assert not codes[[0, 1, 2, 4, 5]].any()
    # an unpredicted slice on screen reads n/a, the stack column stays
    viewer.dims.set_current_step(0, 1)
    wait_idle(qtbot, tdock, cdock)
    assert cdock.table.text("dice", 0) == "n/a"
    now = evaluate(prob[3], truth[3], tdock.threshold)
    assert cdock.table.text("dice", 1) == f"{now.pixel.dice:.4f}"


def test_confusion_scores_the_post_processed_mask_and_equals_the_cli(open_docks, qtbot, tmp_path):
    import tifffile

    from napari_segloop.cli import main

    truth = np.zeros((80, 80), dtype=np.int32)
    truth[10:30, 10:30] = 1
    truth[45:70, 40:70] = 2
    prob = noisy_prob(truth, seed=3, noise=0.25)  # many one-pixel specks above 0.5
    _viewer, (tdock, cdock) = open_docks(prob, truth)
    pp = PostProcess(min_size=25, fill_holes=True)
    tdock.set_postprocess(pp)
    tdock.set_threshold(0.5)
    wait_idle(qtbot, tdock, cdock)
    mask = make_mask(prob, 0.5, pp)
    np.testing.assert_array_equal(tdock.mask_layer().data, mask)
    np.testing.assert_array_equal(cdock.confusion_layer().data, confusion_image(mask, truth))
    expected = evaluate(prob, truth, 0.5, postprocess=pp)
    raw = evaluate(prob, truth, 0.5)
    assert expected.objects.spurious < raw.objects.spurious  # the specks are gone from the score
    assert cdock.table.text("spurious_objects") == f"{expected.objects.spurious:,}"
    assert cdock.table.text("dice") == f"{expected.pixel.dice:.4f}"
    # the same numbers from `segloop evaluate` with the same settings
    tifffile.imwrite(tmp_path / "p.tif", prob)
    tifffile.imwrite(tmp_path / "t.tif", truth)
    out = tmp_path / "out.json"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["evaluate", "-p", str(tmp_path / "p.tif"), "-t", str(tmp_path / "t.tif"), "--threshold",
                   "0.5", "--min-size", "25", "--fill-holes", "--json"])
    assert rc == 0
    cli = json.loads(buf.getvalue())
    out.write_text(buf.getvalue())
    assert cli["dice"] == pytest.approx(float(cdock.table.text("dice")), abs=5e-5)
    assert cli["spurious_objects"] == int(cdock.table.text("spurious_objects").replace(",", ""))
    assert cli["matched_objects"] == int(cdock.table.text("matched_objects").replace(",", ""))
    # the plot's Dice curve is the post-processed mask's too (the raw curve drawn fainter)
    assert tdock.plot.has_processed
    xs, ys = tdock.plot._processed_xy
    i = int(np.argmin(np.abs(xs - 0.5)))
    assert ys[i] == pytest.approx(expected.pixel.dice)
    # raw thresholding only when asked for explicitly
    tdock.pp_box.setChecked(False)
    wait_idle(qtbot, tdock, cdock)
    assert not tdock.plot.has_processed
    assert cdock.table.text("spurious_objects") == f"{raw.objects.spurious:,}"
    assert "raw" in cdock.scored_label.text()


def test_threshold_dock_opens_with_the_models_threshold_and_post_processing(open_docks, qtbot,
                                                                             tiny_bundle):
    import dataclasses

    from napari_segloop.core.bundle import ModelBundle
    from napari_segloop.widgets.session import session_for

    truth = np.zeros((64, 64), dtype=np.int32)
    truth[10:30, 10:30] = 1
    prob = noisy_prob(truth, seed=5, noise=0.25)
    pp = PostProcess(min_size=20, fill_holes=True)
    settings = dataclasses.replace(tiny_bundle.settings, threshold=0.45, postprocess=pp)
    bundle = ModelBundle(tiny_bundle.model, settings, source="new")
    viewer, _ = open_docks(prob, truth, threshold_dock=False, confusion_dock=False)
    session_for(viewer).set_model(bundle)
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.threshold_dock import ThresholdDock

    dock = ThresholdDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(dock)
    wait_idle(qtbot, dock)
    assert dock.threshold == pytest.approx(0.45)
    assert dock.postprocess() == pp
    # the first mask is what `segloop predict --threshold auto` writes for this model
    np.testing.assert_array_equal(dock.mask_layer().data, make_mask(prob, 0.45, pp))


def test_z_stack_objects_are_3d_and_time_lapses_per_frame(open_docks, qtbot):
    truth = balls()
    prob = noisy_prob(truth, seed=2, noise=0.05)
    _viewer, (tdock, cdock) = open_docks(prob, truth)
    wait_idle(qtbot, tdock, cdock)
    assert tdock.state.object_dims == 3
    assert cdock.table.text("n_true_objects", 1) == "3"
    assert cdock.table.text("matched_objects", 1) == "3"
    tdock.set_postprocess(PostProcess(instances=True))
    wait_idle(qtbot, tdock, cdock)
    assert int(tdock.mask_layer().data.max()) == 3  # one instance per ball, not one per slice
    # per-slice 2-D objects when chosen
    cdock.objects_combo.setCurrentIndex(cdock.objects_combo.findData(2))
    wait_idle(qtbot, tdock, cdock)
    per_slice = evaluate_stack(truth > 0, truth, objects=True).whole.objects.n_true
    assert per_slice > 3
    assert cdock.table.text("n_true_objects", 1) == f"{per_slice:,}"
    assert tdock.objects_combo.currentData() == 2  # both docks show the one state


def test_time_axis_label_keeps_objects_per_frame(open_docks, qtbot):
    truth = balls()
    prob = noisy_prob(truth, seed=2, noise=0.05)
    _viewer, (tdock, _cdock) = open_docks(prob, truth, axis_labels=("t", "y", "x"))
    assert tdock.state.object_dims == 2


def test_ground_truth_is_a_labels_layer_of_the_right_shape(make_napari_viewer, qtbot, notifications):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.confusion_dock import ConfusionDock

    truth = np.zeros((40, 40), dtype=np.int32)
    truth[5:15, 5:15] = 1
    prob = noisy_prob(truth)
    viewer = make_napari_viewer()
    viewer.add_labels(np.zeros((30, 30), dtype=np.int32), name="other labels")  # wrong shape
    intensity = viewer.add_image((prob * 255).astype(np.uint8), name="raw image")
    viewer.add_image(prob, name="cells probability")
    dock = ConfusionDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(dock)
    wait_idle(qtbot, dock)
    assert dock.state.truth is None  # never the mismatched labels layer
    assert not [n for n in notifications() if "shape" in n.message.lower()]
    # an intensity image is not scored until the user says so
    dock.truth_combo.set_layer(intensity)
    wait_idle(qtbot, dock)
    assert dock.truth_box.use_anyway.isVisible() or not dock.isVisible()
    assert "not a Labels layer" in dock.truth_box.warning.text()
    assert dock.confusion_layer() is None
    dock.truth_box.use_anyway.click()
    wait_idle(qtbot, dock)
    assert dock.confusion_layer() is not None
    # a matching Labels layer added later is preferred for the next dock
    good = viewer.add_labels(truth, name="cells truth")
    dock.truth_combo.set_layer(good)
    wait_idle(qtbot, dock)
    assert dock.state.truth is good


def test_both_docks_view_one_state(open_docks, qtbot):
    truth = np.zeros((48, 48), dtype=np.int32)
    truth[6:20, 6:20] = 1
    prob = noisy_prob(truth)
    viewer, (tdock, cdock) = open_docks(prob, None)
    labels = viewer.add_labels(truth, name="cells truth")
    cdock.truth_combo.set_layer(labels)
    wait_idle(qtbot, tdock, cdock)
    assert tdock.truth_combo.layer() is labels
    tdock.set_threshold(0.4)
    assert cdock.threshold == pytest.approx(0.4)
    tdock.truth_box.show_combo.setCurrentIndex(tdock.truth_box.show_combo.findData("probability"))
    assert cdock.truth_box.show_combo.currentData() == "probability"


def plugin_layers(viewer):
    return [layer for layer in viewer.layers if outputs.role_of(layer) is not None]


def test_one_overlay_is_visible_and_helpers_go_with_the_docks(open_docks, qtbot):
    truth = np.zeros((48, 48), dtype=np.int32)
    truth[6:20, 6:20] = 1
    prob = noisy_prob(truth)
    viewer, (tdock, cdock) = open_docks(prob, truth)
    viewer.layers.selection.active = viewer.layers["cells truth"]
    tdock.slider.setValue(400)
    wait_idle(qtbot, tdock, cdock)
    assert viewer.layers.selection.active is viewer.layers["cells truth"]  # never a preview
    for show in ("mask", "errors", "probability"):
        tdock.truth_box.show_combo.setCurrentIndex(tdock.truth_box.show_combo.findData(show))
        wait_idle(qtbot, tdock, cdock)
        visible = [layer.name for layer in viewer.layers if layer.visible]
        overlays = [n for n in visible if n != "cells truth"]
        expected = {"mask": "cells mask", "errors": "cells confusion", "probability": "cells probability"}
        assert overlays == [expected[show]], (show, visible)
    main_roles = (outputs.MASK_ROLE, outputs.CONFUSION_ROLE, outputs.PROBABILITY_ROLE)
    for layer in plugin_layers(viewer):
        role = outputs.role_of(layer)
        assert role in main_roles or role in previews.PREVIEW_ROLES
        if role in previews.PREVIEW_ROLES:  # a helper: named for its role, hidden once settled
            assert layer.name == f"cells {role}" and not layer.visible
    tdock.close()
    cdock.close()
    for dock in (tdock, cdock):
        dock.deleteLater()
    qtbot.waitUntil(lambda: not any(outputs.role_of(layer) in previews.PREVIEW_ROLES
                                    for layer in viewer.layers), timeout=5000)


def test_deleting_any_plugin_layer_by_hand_never_raises(open_docks, qtbot):
    truth = np.zeros((48, 48), dtype=np.int32)
    truth[6:20, 6:20] = 1
    prob = noisy_prob(truth)
    viewer, (tdock, cdock) = open_docks(prob, truth)
    tdock.truth_box.show_combo.setCurrentIndex(tdock.truth_box.show_combo.findData("errors"))
    tdock.slider.setValue(300)
    qtbot.wait(50)
    for layer in plugin_layers(viewer):
        if layer.name == "cells probability":
            continue
        viewer.layers.remove(layer)
        tdock.slider.setValue(tdock.slider.value() + 17)
        wait_idle(qtbot, tdock, cdock)
    assert cdock.confusion_layer() is not None  # made again
    viewer.layers.remove(viewer.layers["cells probability"])
    wait_idle(qtbot, tdock, cdock)
    assert tdock.state.probability is None


def test_closing_does_not_notify_removed_layers(open_docks, qtbot, notifications):
    truth = np.zeros((48, 48), dtype=np.int32)
    truth[6:20, 6:20] = 1
    viewer, (_tdock, _cdock) = open_docks(noisy_prob(truth), truth)
    viewer.layers.clear()
    qtbot.wait(50)
    assert not [n for n in notifications() if "removed" in n.message]


def test_best_status_never_prints_an_empty_range():
    from napari_segloop.widgets.threshold_dock import _range_text

    assert "[0.863975, 0.863975)" not in _range_text(0.863975, float(np.nextafter(np.float32(0.863975), 2)))
    assert _range_text(0.2, 0.4) == "any threshold in [0.2, 0.4) gives this mask"
    assert "1]" in _range_text(0.9, float("inf"))


def test_slices_predicted_with_the_predict_dock_are_the_ones_scored(docks, tiny_bundle, qtbot, wait_job):
    """End to end: Predict 'current slice' twice, the Confusion dock follows the predicted slices."""
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.confusion_dock import ConfusionDock

    viewer, _, predict = docks(tiny_bundle)
    stack = np.random.default_rng(1).random((4, 64, 64), dtype=np.float32)
    viewer.add_image(stack, name="stack")
    truth = np.zeros(stack.shape, dtype=np.int32)
    truth[:, 10:30, 10:30] = 1
    viewer.add_labels(truth, name="stack truth")
    predict.tile_spin.setValue(64)
    predict.mode_combo.setCurrentText("current slice")
    viewer.dims.set_current_step(0, 2)
    assert predict.run()
    wait_job(predict.session)
    cdock = ConfusionDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(cdock)
    wait_idle(qtbot, cdock)
    assert cdock.engine.inputs.planes == (2,)
    assert "1 of 4 slices predicted" in cdock.status.text()
    assert cdock.table.columns() == ["current slice", "1 predicted slices"]
    viewer.dims.set_current_step(0, 0)
    assert predict.run()
    wait_job(predict.session)
    wait_idle(qtbot, cdock)
    assert cdock.engine.inputs.planes == (0, 2)
    assert "2 of 4 slices predicted" in cdock.status.text()
    prob = viewer.layers["stack probability"].data
    mask = make_mask(prob, cdock.state.threshold, cdock.state.effective_postprocess(),
                     object_dims=cdock.state.object_dims)
    expected = evaluate_stack(mask, truth, planes=[0, 2], object_dims=cdock.state.object_dims)
    assert cdock.table.text("tp", 1) == f"{expected.whole.pixel.tp:,}"


def test_split_touching_uses_the_diameter_chosen_in_the_dock(open_docks, qtbot):
    yy, xx = np.indices((80, 120))
    truth = np.zeros((80, 120), dtype=np.int32)
    truth[(yy - 40) ** 2 + (xx - 40) ** 2 <= 15 ** 2] = 1
    truth[((yy - 40) ** 2 + (xx - 68) ** 2 <= 15 ** 2) & (truth == 0)] = 2  # touching the first
    prob = noisy_prob(truth, seed=4, noise=0.02)
    _, (tdock, cdock) = open_docks(prob, truth)
    tdock.set_postprocess(PostProcess(instances=True, split_touching=True, object_diameter=30.0))
    tdock.set_threshold(0.5)
    wait_idle(qtbot, tdock, cdock)
    assert tdock.diameter_spin.value() == pytest.approx(30.0)
    np.testing.assert_array_equal(
        tdock.mask_layer().data,
        make_mask(prob, 0.5, PostProcess(instances=True, split_touching=True, object_diameter=30.0)))
    assert int(tdock.mask_layer().data.max()) == 2  # the pair is split at that diameter
    tdock.diameter_spin.setValue(90.0)  # one object that large: nothing to split
    wait_idle(qtbot, tdock, cdock)
    assert tdock.state.postprocess.object_diameter == pytest.approx(90.0)
    assert int(tdock.mask_layer().data.max()) == 1
