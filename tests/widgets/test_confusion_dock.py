"""The Confusion dock: TP / FP / FN overlay, live metrics table, regions, stacks, export, bad inputs."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from napari_segloop.core.evaluation import FN, FP, TN, TP, confusion_image, evaluate, evaluate_stack
from napari_segloop.core.masks import PostProcess
from napari_segloop.widgets import previews
from napari_segloop.widgets.colors import CONFUSION_COLORS
from napari_segloop.widgets.evaluation import format_value


def make_pair(shape=(64, 64), seed=0):
    truth = np.zeros(shape, dtype=np.uint8)
    truth[..., 8:24, 8:24] = 1
    truth[..., 36:56, 30:50] = 1
    rng = np.random.default_rng(seed)
    prob = np.clip(0.2 + 0.55 * truth + rng.normal(0, 0.15, shape), 0, 1).astype(np.float32)
    return prob, truth


def wait_idle(qtbot, *docks, timeout=20_000):
    qtbot.waitUntil(lambda: not any(d.busy for d in docks), timeout=timeout)


@pytest.fixture
def setup(make_napari_viewer, qtbot):
    """A viewer with a probability map, its ground truth, and the Threshold and Confusion docks."""

    def make(prob=None, truth=None, with_truth=True, threshold_dock=True):
        from napari.utils._proxies import PublicOnlyProxy

        from napari_segloop.widgets.confusion_dock import ConfusionDock
        from napari_segloop.widgets.threshold_dock import ThresholdDock

        viewer = make_napari_viewer()
        if prob is None:
            prob, truth = make_pair()
        viewer.add_image(prob, name="cells probability")
        if with_truth:
            viewer.add_labels(truth, name="cells truth")
        tdock = ThresholdDock(PublicOnlyProxy(viewer)) if threshold_dock else None
        cdock = ConfusionDock(PublicOnlyProxy(viewer))
        if tdock is not None:
            viewer.window.add_dock_widget(tdock, name="Threshold")
        viewer.window.add_dock_widget(cdock, name="Confusion")
        docks = [d for d in (tdock, cdock) if d is not None]
        cdock.state.postprocess = PostProcess()  # these tests check the raw ``prob > t`` mask
        wait_idle(qtbot, *docks)
        return viewer, tdock, cdock

    return make


def no_nan_shown(table):
    for c in range(table.columnCount()):
        for text in table.as_dict(c).values():
            assert "nan" not in text.lower()


def test_confusion_labels_codes_colours_and_legend(setup, qtbot):
    viewer, tdock, cdock = setup()
    tdock.set_threshold(0.5)
    wait_idle(qtbot, tdock, cdock)
    prob = viewer.layers["cells probability"].data
    truth = viewer.layers["cells truth"].data
    layer = cdock.confusion_layer()
    assert layer is not None and layer.name == "cells confusion" and layer.visible
    np.testing.assert_array_equal(layer.data, confusion_image(prob, truth, 0.5))
    assert layer.data.dtype == np.uint8
    for code in (TP, FP, FN):
        np.testing.assert_allclose(layer.colormap.map(np.array([code]))[0], CONFUSION_COLORS[code])
    assert layer.colormap.map(np.array([TN]))[0][3] == 0
    legend = cdock.legend.text()
    for name in ("true positive", "false positive", "false negative", "transparent"):
        assert name in legend
    ev = evaluate(prob, truth, 0.5)
    assert cdock.table.text("dice") == format_value(ev.pixel.dice)
    assert cdock.table.text("matched_objects") == str(ev.objects.n_matched)
    assert cdock.table.text("object_f1") == format_value(ev.objects.f1)


def test_ticks_follow_at_once_objects_after_the_pause(setup, qtbot):
    viewer, tdock, cdock = setup()
    prob = viewer.layers["cells probability"].data
    truth = viewer.layers["cells truth"].data
    on_truth, on_background = cdock.preview_layers()
    assert on_truth is not None and on_background is not None
    tdock.slider.setValue(620)
    t = 0.62
    # at once: limits of both preview layers, pixel metrics; objects wait for the pause
    for layer in (on_truth, on_background):
        assert tuple(layer.contrast_limits) == pytest.approx(previews.preview_limits(t), abs=0)
        assert layer.visible
    assert not cdock.confusion_layer().visible  # stale Labels hidden, never drawn over the preview
    ev = evaluate(prob, truth, t)
    assert cdock.table.text("tp") == format_value(ev.pixel.tp)
    assert cdock.table.text("dice") == format_value(ev.pixel.dice)
    assert cdock.table.text("object_f1") == "…"
    # the preview shows exactly the confusion codes (what the shader computes)
    limits = tuple(on_truth.contrast_limits)
    rgba_t = previews.shader_colors(on_truth.data, on_truth.colormap, limits)
    rgba_b = previews.shader_colors(on_background.data, on_background.colormap, limits)
    codes = confusion_image(prob, truth, t)
    for code in (TP, FN):
        np.testing.assert_allclose(rgba_t[codes == code][:, :3], np.broadcast_to(CONFUSION_COLORS[code][:3],
                                   (np.count_nonzero(codes == code), 3)))
    np.testing.assert_allclose(rgba_b[codes == FP][:, :3], np.broadcast_to(CONFUSION_COLORS[FP][:3],
                               (np.count_nonzero(codes == FP), 3)))
    assert (rgba_b[codes == TN][:, 3] == 0).all() and (rgba_t[codes == TN][:, 3] == 0).all()
    wait_idle(qtbot, tdock, cdock)
    assert cdock.table.text("object_f1") == format_value(ev.objects.f1)
    assert cdock.confusion_layer().visible and not on_truth.visible
    np.testing.assert_array_equal(cdock.confusion_layer().data, codes)


def test_fast_threshold_changes_end_with_the_last(setup, qtbot):
    viewer, tdock, cdock = setup()
    prob = viewer.layers["cells probability"].data
    truth = viewer.layers["cells truth"].data
    for step in range(150, 850, 45):
        tdock.slider.setValue(step)
        cdock.refresh()  # as if every step paused long enough
        qtbot.wait(1)
    tdock.slider.setValue(777)
    wait_idle(qtbot, tdock, cdock)
    np.testing.assert_array_equal(cdock.confusion_layer().data, confusion_image(prob, truth, 0.777))
    assert cdock.engine.mask.threshold == pytest.approx(0.777)
    assert cdock.metrics_rows()[0]["threshold"] == pytest.approx(0.777)


def test_mask_prediction_follows_the_threshold_dock(setup, qtbot):
    from napari_segloop.core.bundle import PostProcess

    viewer, tdock, cdock = setup()
    tdock.set_postprocess(PostProcess(min_size=30))
    tdock.set_threshold(0.45)
    wait_idle(qtbot, tdock, cdock)
    mask = tdock.mask_layer()
    cdock.pred_combo.set_value(mask)
    wait_idle(qtbot, tdock, cdock)
    truth = viewer.layers["cells truth"].data
    np.testing.assert_array_equal(cdock.confusion_layer().data, confusion_image(mask.data, truth))
    assert "mask" in cdock.threshold_label.text()
    tdock.set_threshold(0.7)
    wait_idle(qtbot, tdock, cdock)
    np.testing.assert_array_equal(cdock.confusion_layer().data, confusion_image(mask.data, truth))
    ev = evaluate(mask.data, truth)
    assert cdock.table.text("dice") == format_value(ev.pixel.dice)


def test_region_from_a_shapes_layer(setup, qtbot):
    viewer, tdock, cdock = setup()
    tdock.set_threshold(0.5)
    shapes = viewer.add_shapes([np.array([[0, 0], [0, 31], [31, 31], [31, 0]])], shape_type="rectangle",
                               name="annotated area")
    cdock.region_combo.set_value(shapes)
    wait_idle(qtbot, tdock, cdock)
    prob = viewer.layers["cells probability"].data
    truth = viewer.layers["cells truth"].data
    region = np.asarray(shapes.to_labels(labels_shape=prob.shape)) > 0
    ev = evaluate(prob, truth, 0.5, region)
    assert ev.pixel.n_pixels < prob.size
    assert cdock.table.text("tn") == format_value(ev.pixel.tn)
    assert cdock.table.text("n_true_objects") == str(ev.objects.n_true)
    np.testing.assert_array_equal(cdock.confusion_layer().data, confusion_image(prob, truth, 0.5, region))
    tdock.slider.setValue(300)  # ticks use the region's curve
    ev = evaluate(prob, truth, 0.3, region)
    assert cdock.table.text("fp") == format_value(ev.pixel.fp)
    wait_idle(qtbot, tdock, cdock)


def test_stack_current_slice_and_whole_stack(setup, qtbot):
    prob, truth = make_pair((3, 48, 48))
    truth[2] = 0  # an empty slice
    viewer, tdock, cdock = setup(prob=prob, truth=truth)
    tdock.set_threshold(0.5)
    viewer.dims.set_current_step(0, 1)
    wait_idle(qtbot, tdock, cdock)
    stack = evaluate_stack(prob, truth, 0.5, object_dims=3)  # a z-stack: 3-D objects by default
    assert cdock.table.columns() == ["current slice", "whole stack"]
    assert cdock.table.text("tp", 0) == format_value(stack.slices[1].pixel.tp)
    assert cdock.table.text("tp", 1) == format_value(stack.whole.pixel.tp)
    assert cdock.table.text("n_true_objects", 1) == str(stack.whole.objects.n_true)
    viewer.dims.set_current_step(0, 2)
    wait_idle(qtbot, tdock, cdock)
    assert cdock.table.text("recall", 0) == "n/a"  # empty truth in this slice: undefined, not NaN
    assert cdock.table.text("fp", 0) == format_value(stack.slices[2].pixel.fp)
    tdock.slider.setValue(400)
    s2 = evaluate(prob[2], truth[2], 0.4)
    assert cdock.table.text("fp", 0) == format_value(s2.pixel.fp)
    assert cdock.table.text("tp", 1) == format_value(evaluate(prob, truth, 0.4).pixel.tp)
    no_nan_shown(cdock.table)
    wait_idle(qtbot, tdock, cdock)


def test_csv_export_and_clipboard(setup, qtbot, tmp_path):
    from qtpy.QtWidgets import QApplication

    prob, truth = make_pair((2, 40, 40))
    _, tdock, cdock = setup(prob=prob, truth=truth)
    tdock.set_threshold(0.5)
    wait_idle(qtbot, tdock, cdock)
    out = cdock.export_csv(tmp_path / "metrics.csv")
    assert out is not None and out.is_file()
    rows = list(csv.DictReader(out.open()))
    assert [r["slice"] for r in rows] == ["0", "1", "all"]
    stack = evaluate_stack(prob, truth, 0.5, object_dims=3)
    assert int(rows[-1]["tp"]) == stack.whole.pixel.tp
    assert rows[0]["truth"] == "cells truth" and rows[0]["name"] == "cells probability"
    assert float(rows[-1]["object_f1"]) == pytest.approx(stack.whole.objects.f1)
    assert cdock.copy_metrics()
    assert QApplication.clipboard().text().startswith("name,slice,threshold")


def test_shape_mismatch_names_both_shapes(setup, qtbot, notifications):
    prob, _ = make_pair()
    viewer, _, cdock = setup(prob=prob, with_truth=False, threshold_dock=False)
    other = viewer.add_labels(np.zeros((60, 50), dtype=np.uint8), name="other truth")
    wait_idle(qtbot, cdock)
    assert cdock.state.truth is None  # a mismatched layer is never chosen for the user
    assert not notifications()
    cdock.truth_combo.set_layer(other)  # the user chooses it: the message names both shapes
    wait_idle(qtbot, cdock)
    messages = [n.message for n in notifications()]
    assert any("(60, 50)" in m and "(64, 64)" in m for m in messages)
    assert cdock.confusion_layer() is None
    assert cdock.table.text("dice") == "n/a"
    no_nan_shown(cdock.table)
    assert cdock.export_csv("never.csv") is None


def test_float_truth_is_refused(setup, qtbot, notifications):
    prob, truth = make_pair()
    viewer, _, cdock = setup(prob=prob, with_truth=False, threshold_dock=False)
    viewer.add_image(truth.astype(np.float32), name="float truth")
    cdock.truth_combo.set_value(viewer.layers["float truth"])
    wait_idle(qtbot, cdock)
    assert any("floating-point" in n.message for n in notifications())
    assert cdock.confusion_layer() is None


def test_empty_truth_reads_na_never_nan(setup, qtbot, notifications):
    prob, _ = make_pair()
    _, tdock, cdock = setup(prob=prob, truth=np.zeros(prob.shape, dtype=np.uint8))
    tdock.set_threshold(0.5)
    wait_idle(qtbot, tdock, cdock)
    assert any("no foreground" in n.message for n in notifications())
    assert cdock.table.text("recall") == "n/a"
    assert cdock.table.text("dice") == format_value(0.0)
    no_nan_shown(cdock.table)


def test_missing_and_removed_layers(setup, qtbot, notifications):
    viewer, tdock, cdock = setup()
    wait_idle(qtbot, tdock, cdock)
    viewer.layers.remove("cells truth")
    wait_idle(qtbot, tdock, cdock)
    assert not any("was removed" in n.message for n in notifications())  # no pop-ups (closing napari)
    assert "ground-truth" in cdock.status.text()
    assert cdock.table.text("dice") == "n/a"
    assert not cdock.copy_metrics()
    viewer.layers.remove("cells probability")
    wait_idle(qtbot, tdock, cdock)
    assert cdock.pred_combo.layer() is None or cdock.pred_combo.layer().name == "cells mask"
    assert cdock.table.text("dice") == "n/a"


def test_user_layers_are_never_modified(setup, qtbot):
    prob, truth = make_pair()
    before_p, before_t = prob.copy(), truth.copy()
    viewer, tdock, cdock = setup(prob=prob, truth=truth)
    for step in (250, 500, 750):
        tdock.slider.setValue(step)
    wait_idle(qtbot, tdock, cdock)
    np.testing.assert_array_equal(viewer.layers["cells probability"].data, before_p)
    np.testing.assert_array_equal(viewer.layers["cells truth"].data, before_t)
    owned = {layer.name for layer in viewer.layers if "napari-segloop" in layer.metadata}
    assert "cells truth" not in owned and "cells probability" not in owned


def test_previews_rendered_by_napari_match_the_codes_exactly(make_napari_viewer):
    """Ties (p == t) and the next float32 above t, drawn by the real shader, as confusion_image says."""
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(700, 700)
    rng = np.random.default_rng(3)
    for t in (np.float32(0.5), np.float32(rng.random()), np.float32(0.001)):
        up = np.nextafter(t, np.float32(2))
        values = np.array([np.nextafter(t, np.float32(-1)), t, up, np.nextafter(up, np.float32(2))],
                          dtype=np.float32)
        prob = np.repeat(np.repeat(np.stack([values, values]), 30, 0), 30, 1)
        truth = np.zeros(prob.shape, dtype=np.uint8)
        truth[:30] = 1
        on_truth, on_background = previews.confusion_preview_arrays(prob, truth)
        viewer.layers.clear()
        limits = previews.preview_limits(float(t))
        viewer.add_image(on_truth, colormap=previews.truth_colormap(), contrast_limits=limits)
        viewer.add_image(on_background, colormap=previews.background_colormap(), contrast_limits=limits)
        viewer.reset_view()
        shot = viewer.screenshot(canvas_only=True, flash=False)
        h, w = shot.shape[:2]
        camera = viewer.scene.camera
        zoom, (cy, cx) = camera.zoom, camera.center[-2:]
        codes = confusion_image(prob, truth, float(t))
        for y in (15, 45):
            for x in (15, 45, 75, 105):
                pixel = shot[round(h / 2 + (y - cy) * zoom), round(w / 2 + (x - cx) * zoom), :3]
                code = codes[y, x]
                expected = np.round(np.array(CONFUSION_COLORS[code][:3]) * 255) if code != TN else (0, 0, 0)
                np.testing.assert_allclose(pixel, expected, atol=3, err_msg=f"t={t}, code {code}")


def test_csv_export_never_replaces_a_file_of_an_open_layer(setup, qtbot, tmp_path, notifications):
    import tifffile

    prob, truth = make_pair()
    viewer, _, cdock = setup(prob=prob, with_truth=False, threshold_dock=False)
    path = tmp_path / "truth.tif"
    tifffile.imwrite(path, truth)
    before = path.read_bytes()
    (layer,) = viewer.open(str(path), plugin="napari", layer_type="labels")
    assert str(layer.source.path) == str(path)
    cdock.truth_combo.set_layer(layer)
    wait_idle(qtbot, cdock)
    assert cdock.metrics_rows(), "there are metrics to export"
    start = len(notifications())
    assert cdock.export_csv(path) is None
    assert cdock.export_csv(tmp_path / "elsewhere.tif") is None  # an image name: likely a mistake
    assert cdock.export_csv(tmp_path / "missing" / "m.csv") is None
    link = tmp_path / "truth.csv"  # a CSV name, but the very file of the layer
    os.link(path, link)
    assert cdock.export_csv(link) is None
    messages = [n.message for n in notifications()[start:] if n.severity == "error"]
    assert messages == [
        f"{path} is one of the inputs (the layer 'truth'); choose another file name.",
        f"{tmp_path / 'elsewhere.tif'}: .tif is an image format, not CSV; choose a name ending in .csv.",
        f"{tmp_path / 'missing' / 'm.csv'}: the folder {tmp_path / 'missing'} does not exist.",
        f"{link} is one of the inputs (the layer 'truth', {path}); choose another file name.",
    ]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["truth.csv", "truth.tif"]
    out = cdock.export_csv(tmp_path / "metrics.csv")
    assert out is not None and out.read_text().startswith("name,")
