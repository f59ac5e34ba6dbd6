"""K-class models in a real viewer: Predict writes one class's probability and the class map;
the Classes dock switches the class, remakes the map at a minimum confidence and scores it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.evaluation.multiclass import class_map, confusion_matrix
from napari_segloop.core.models.registry import create_model
from napari_segloop.widgets.outputs import find_output
from napari_segloop.widgets.session import session_for


@pytest.fixture(scope="module")
def three_classes():
    torch.manual_seed(3)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 3, encoder_depth=3, decoder_channels=(16, 16, 16))
    bundle.settings.class_names = ["background", "nucleus", "border"]
    return bundle


def _predict(docks, bundle, image, qtbot, wait_job):
    from napari_segloop.widgets.classes_dock import ClassesDock

    viewer, model_dock, predict = docks(bundle)
    layer = viewer.add_image(image, name="cells")
    predict.tile_spin.setValue(64)
    assert predict.run()
    wait_job(predict.session)
    dock = ClassesDock(viewer)
    viewer.window.add_dock_widget(dock, name="Classes")
    return viewer, layer, dock, model_dock


def test_predict_shows_one_class_and_the_class_map(docks, three_classes, qtbot, wait_job):
    rng = np.random.default_rng(0)
    img = rng.random((64, 80), dtype=np.float32)
    viewer, layer, dock, _ = _predict(docks, three_classes, img, qtbot, wait_job)
    session = session_for(viewer)
    entry = session.probability(layer)
    probs = entry.classes.probabilities
    assert probs.shape == (3, 64, 80)
    prob_layer = viewer.layers["cells probability"]
    assert prob_layer.data.shape == (64, 80)  # one class, the image's shape
    assert np.shares_memory(prob_layer.data, probs)  # a view, no copy
    np.testing.assert_array_equal(prob_layer.data, probs[1])
    classes = find_output(viewer, "classes", "cells")
    np.testing.assert_array_equal(classes.data, probs.argmax(axis=0))
    # the dock lists the model's classes and switches the probability layer's class
    assert [dock.class_combo.itemText(i) for i in range(3)] == ["0: background", "1: nucleus",
                                                                "2: border"]
    dock.class_combo.setCurrentIndex(2)
    np.testing.assert_array_equal(prob_layer.data, probs[2])
    assert prob_layer.metadata["napari-segloop"]["class"] == "border"
    # a minimum confidence leaves unsure pixels unassigned (value K), computed in a worker
    dock.slider.setValue(60)
    qtbot.waitUntil(lambda: (classes.data == 3).any() or probs.max(axis=0).min() >= 0.6, timeout=20_000)
    np.testing.assert_array_equal(classes.data, class_map(probs, 0.6))
    np.testing.assert_array_equal(layer.data, img)  # the user's image is untouched


def test_ground_truth_gives_the_confusion_matrix_and_one_class_tp_fp_fn(docks, three_classes, qtbot,
                                                                       wait_job):
    rng = np.random.default_rng(1)
    img = rng.random((64, 64), dtype=np.float32)
    viewer, _layer, dock, _ = _predict(docks, three_classes, img, qtbot, wait_job)
    truth = np.zeros((64, 64), np.uint8)
    truth[10:30, 10:30], truth[40:60, 40:60] = 1, 2
    gt = viewer.add_labels(truth, name="truth")
    dock.truth_combo.set_layer(gt)
    qtbot.waitUntil(lambda: dock.scores is not None, timeout=20_000)
    pred = find_output(viewer, "classes", "cells").data
    np.testing.assert_array_equal(dock.scores.metrics.confusion, confusion_matrix(pred, truth, 3))
    assert dock.table.rowCount() == 3 and dock.matrix.rowCount() == 3
    assert "mIoU" in dock.summary.text()
    codes = find_output(viewer, "class confusion", "cells").data
    shown = dock.scores.shown
    assert ((codes == 1) == ((pred == shown) & (truth == shown))).all()
    assert ((codes == 3) == ((pred != shown) & (truth == shown))).all()
    # painting the ground truth rescores
    before = dock.scores
    gt.data = np.where(truth == 2, 0, truth).astype(np.uint8)
    qtbot.waitUntil(lambda: dock.scores is not before, timeout=20_000)
    assert dock.scores.metrics.confusion[2].sum() == 0
    assert "class\tname" in dock.scores_text()


def test_binary_predictions_point_to_the_binary_docks(docks, tiny_bundle, image_2d, qtbot, wait_job):
    from napari_segloop.widgets.classes_dock import ClassesDock

    viewer, _, predict = docks(tiny_bundle)
    viewer.add_image(image_2d, name="cells")
    predict.tile_spin.setValue(64)
    predict.run()
    wait_job(predict.session)
    dock = ClassesDock(viewer)
    assert not dock.class_combo.isEnabled()
    assert "Threshold and Confusion docks" in dock.status.text()


def test_saving_a_class_model_keeps_the_minimum_confidence_not_a_class_threshold(
        docks, three_classes, qtbot, wait_job, tmp_path):
    from napari_segloop.core.bundle import load_bundle
    from napari_segloop.widgets.evaluation import model_default

    img = np.random.default_rng(2).random((64, 64), dtype=np.float32)
    viewer, _layer, dock, model_dock = _predict(docks, three_classes, img, qtbot, wait_job)
    session = session_for(viewer)
    # the binary docks see one class against the rest, at 0.5, not at the minimum confidence
    assert model_default(session).threshold == 0.5
    dock.confidence_spin.setValue(0.45)
    assert model_dock.save_as(str(tmp_path / "saved"))
    wait_job(session)
    saved = load_bundle(tmp_path / "saved")
    assert saved.settings.threshold == pytest.approx(0.45) and saved.classes == 3
    assert saved.class_names == ["background", "nucleus", "border"]
