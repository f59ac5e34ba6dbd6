"""The Fine-tune dock with a real viewer and the real training worker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import BundleSettings, create_model, load_bundle
from napari_segloop.core.synthetic import make_nuclei
from napari_segloop.core.training.runs import partial_path, read_annotations


@pytest.fixture
def start():
    torch.manual_seed(0)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, settings=BundleSettings(channel_names=["gray"]),
                          encoder_depth=3, decoder_channels=(16, 16, 16))
    bundle.source = "default"  # a trained starting model (fine-tuning, with a baseline)
    return bundle


@pytest.fixture
def setup(make_napari_viewer, start, tmp_path, qtbot):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.finetune_dock import FinetuneDock
    from napari_segloop.widgets.model_dock import ModelDock
    from napari_segloop.widgets.session import session_for

    viewer = make_napari_viewer()
    img, lab = make_nuclei((128, 128), seed=8)
    image = viewer.add_image(img, name="cells")
    session = session_for(viewer)
    session.set_model(start)
    model_dock = ModelDock(PublicOnlyProxy(viewer))
    dock = FinetuneDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(dock, name="Fine-tune")
    dock.folder_edit.setText(str(tmp_path / "models"))
    return viewer, dock, model_dock, session, image, (lab > 0)


def _fast(monkeypatch):
    """Small patches and steps so a run takes a second or two on a CPU."""
    from napari_segloop.core.training import trainer

    real = trainer.TrainConfig.checked

    def checked(self):
        out = real(self)
        out.batch_size, out.crop, out.val_every, out.threads = 2, 64, 3, 1
        out.preview_seconds, out.refresh_seconds = 0.0, 0.0
        return out

    monkeypatch.setattr(trainer.TrainConfig, "checked", checked)


def _paint(layer, truth, seed=0, p=0.05):
    rng = np.random.default_rng(seed)
    data = layer.data
    data[(truth) & (rng.random(truth.shape) < p)] = 1
    data[(~truth) & (rng.random(truth.shape) < p / 3)] = 2
    layer.refresh()


def test_scribble_layer_is_ready_to_paint(setup):
    _viewer, dock, _, _, image, _ = setup
    layer = dock.new_scribble_layer()
    assert layer.data.shape == image.data.shape and layer.data.dtype == np.uint8
    assert layer.name == "cells scribbles"
    assert layer.mode == "paint" and layer.selected_label == 1
    assert dock.labels_combo.layer() is layer
    assert dock.mode_combo.currentData() == "scribbles"
    assert list(layer.features["class"]) == ["not annotated", "object", "background"]


def test_training_runs_in_the_background_and_saves_a_new_version(setup, qtbot, wait_job, monkeypatch):
    _fast(monkeypatch)
    viewer, dock, model_dock, session, image, truth = setup
    layer = dock.new_scribble_layer()
    _paint(layer, truth)
    painted = layer.data.copy()
    image_before = image.data.copy()
    dock.steps_spin.setValue(12)
    assert dock.train()
    assert dock.train() is False  # a second Train while one runs is refused
    assert session.busy and dock.stop_button.isEnabled()
    wait_job(session)
    target = dock.folder_edit.text() + "/default-v001"
    bundle = load_bundle(target)
    assert bundle.settings.provenance["training"]["steps"] == 12
    mode, items = read_annotations(target)
    assert mode == "scribbles"
    np.testing.assert_array_equal(items[0].labels, painted)
    assert not partial_path(target).exists()
    # The new model is current; the previous one is one click away, and the user's layers are intact.
    assert session.bundle is not None and session.bundle.source == target
    assert [v.label for v in session.versions] == ["default", "default-v001 (trained)"]
    assert model_dock.switch_version(0) and session.bundle.source == "default"
    np.testing.assert_array_equal(layer.data, painted)
    np.testing.assert_array_equal(image.data, image_before)
    assert dock.plot.has_points
    assert dock.state.phase == "done" and dock.train_button.isEnabled()
    # The live preview wrote the image's probability map.
    assert "cells probability" in [lyr.name for lyr in viewer.layers]


def test_painting_during_training_is_picked_up_and_the_layer_is_not_touched(setup, qtbot, wait_job,
                                                                           monkeypatch):
    from napari_segloop.core.events import Notice, TrainStep

    _fast(monkeypatch)
    _viewer, dock, _, session, _, truth = setup
    layer = dock.new_scribble_layer()
    _paint(layer, truth, p=0.01)
    dock.steps_spin.setValue(400)
    seen = []
    assert dock.train()
    dock.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: any(isinstance(e, TrainStep) for e in seen), timeout=30_000)
    # The user paints more through napari's paint API (as the brush does).
    rng = np.random.default_rng(3)
    ys, xs = np.nonzero(truth & (rng.random(truth.shape) < 0.1))
    layer.paint((int(ys[0]), int(xs[0])), 1, refresh=True)
    layer.data_setitem((ys[1:200], xs[1:200]), 1)
    layer.events.paint(value=None)
    after_paint = layer.data.copy()
    qtbot.waitUntil(lambda: any(isinstance(e, Notice) and "New labels picked up" in e.text
                                for e in seen), timeout=30_000)
    dock.stop()
    wait_job(session)
    np.testing.assert_array_equal(layer.data, after_paint)  # training never writes the user's layer
    _, items = read_annotations(session.bundle.source)
    np.testing.assert_array_equal(items[0].labels, after_paint)


def test_pause_resume_and_stop_keep_the_best_weights(setup, qtbot, wait_job, monkeypatch):
    from napari_segloop.core.events import Progress, Snapshot, TrainStep

    _fast(monkeypatch)
    _viewer, dock, _, session, _, truth = setup
    _paint(dock.new_scribble_layer(), truth)
    dock.steps_spin.setValue(100_000)
    dock.seconds_spin.setValue(3600)
    seen = []
    assert dock.train()
    dock.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: sum(isinstance(e, TrainStep) for e in seen) >= 3, timeout=30_000)
    dock.toggle_pause()
    assert dock.pause_button.text() == "Resume"
    qtbot.waitUntil(lambda: any(isinstance(e, Progress) and e.message == "paused" for e in seen),
                    timeout=10_000)
    n = sum(isinstance(e, TrainStep) for e in seen)
    qtbot.wait(500)
    assert sum(isinstance(e, TrainStep) for e in seen) <= n + 1  # held
    dock.toggle_pause()
    qtbot.waitUntil(lambda: sum(isinstance(e, TrainStep) for e in seen) >= n + 8, timeout=30_000)
    dock.stop()
    wait_job(session)
    best = [e for e in seen if isinstance(e, Snapshot) and e.reason == "best"][-1]
    saved = session.bundle.model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in best.state_dict.items())
    assert session.bundle.settings.provenance["training"]["stop_reason"] == "stopped"


def test_labels_of_another_shape_are_refused(setup, monkeypatch):
    viewer, dock, _, session, _, _ = setup
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    wrong = viewer.add_labels(np.zeros((64, 64), np.uint8), name="wrong")
    dock.labels_combo.set_layer(wrong)
    assert dock.train() is False
    assert "shape" in errors[-1] and not session.busy


def test_no_labels_fails_with_a_message_and_nothing_saved(setup, qtbot, wait_job, monkeypatch):
    _fast(monkeypatch)
    _viewer, dock, _, session, _, _ = setup
    errors = []
    monkeypatch.setattr("napari.utils.notifications.show_error", errors.append)
    dock.new_scribble_layer()
    assert dock.train()
    wait_job(session)
    assert any("paint some labels" in e for e in errors)
    assert dock.state.phase == "failed"
    assert session.bundle.source == "default"


def test_continue_training_reopens_the_labels_of_a_trained_model(setup, qtbot, wait_job, monkeypatch):
    _fast(monkeypatch)
    viewer, dock, _, session, _, truth = setup
    layer = dock.new_scribble_layer()
    _paint(layer, truth)
    painted = layer.data.copy()
    dock.steps_spin.setValue(3)
    assert dock.train()
    wait_job(session)
    viewer.layers.remove(layer)
    assert dock.continue_button.isEnabled()
    assert dock.continue_training()
    wait_job(session)
    reopened = dock.labels_combo.layer()
    np.testing.assert_array_equal(reopened.data, painted)
    assert dock.mode_combo.currentData() == "scribbles"


def test_correction_layer_copies_the_mask_and_weighs_changes(setup):
    from napari_segloop.widgets.outputs import MASK_ROLE
    from napari_segloop.widgets.session import METADATA_KEY

    viewer, dock, _, _, _image, truth = setup
    mask = viewer.add_labels(truth.astype(np.uint8), name="cells mask",
                             metadata={METADATA_KEY: {"role": MASK_ROLE, "image": "cells"}})
    layer = dock.correction_layer()
    np.testing.assert_array_equal(layer.data, truth.astype(np.uint8))
    assert layer.data is not mask.data
    assert dock.mode_combo.currentData() == "correction"
    layer.data[0, 0] = 1 - layer.data[0, 0]
    assert mask.data[0, 0] == truth[0, 0]  # the mask is not the copy being edited


def test_closing_the_dock_mid_run_stops_and_saves(setup, qtbot, wait_job, monkeypatch):
    from napari_segloop.core.events import TrainStep

    _fast(monkeypatch)
    viewer, dock, _, session, _, truth = setup
    _paint(dock.new_scribble_layer(), truth)
    dock.steps_spin.setValue(100_000)
    dock.seconds_spin.setValue(3600)
    seen = []
    assert dock.train()
    folder = dock.folder_edit.text()
    dock.worker.yielded.connect(seen.append)
    qtbot.waitUntil(lambda: any(isinstance(e, TrainStep) for e in seen), timeout=30_000)
    viewer.window.remove_dock_widget(dock)
    dock.close()
    dock.deleteLater()
    qtbot.wait(50)
    wait_job(session)
    bundle = load_bundle(folder + "/default-v001")
    assert bundle.settings.provenance["training"]["stop_reason"] == "stopped"


def test_a_new_model_of_a_preset_architecture_trains_from_scratch(setup, wait_job, monkeypatch):
    _fast(monkeypatch)
    _viewer, dock, _, session, _image, truth = setup
    layer = dock.new_scribble_layer()
    _paint(layer, truth)
    dock.start_combo.setCurrentIndex(dock.start_combo.findData("new"))
    dock.new_form.preset_combo.setCurrentText("Attention U-Net")
    dock.new_form.base_spin.setValue(4)
    dock.steps_spin.setValue(4)
    assert dock.train()
    wait_job(session)
    target = dock.folder_edit.text() + "/AttentionUNet-plain-v001"
    bundle = load_bundle(target)
    assert bundle.architecture == "AttentionUNet" and bundle.config["base_channels"] == 4
    assert session.bundle.source == target


def test_a_new_three_class_model_trains_on_class_scribbles_with_a_class_preview(setup, wait_job,
                                                                               monkeypatch, qtbot):
    from napari_segloop.core.synthetic import border_classes, simulate_class_scribbles
    from napari_segloop.widgets.outputs import find_output

    _fast(monkeypatch)
    viewer, dock, _, session, image, _truth = setup
    dock.start_combo.setCurrentIndex(dock.start_combo.findData("new"))
    dock.new_form.preset_combo.setCurrentText("U-Net, classic (2015)")
    dock.new_form.base_spin.setValue(4)
    dock.new_form.classes_spin.setValue(3)
    dock.new_form.names_edit.setText("background, inside")  # one name short: refused
    assert dock.train() is False
    dock.new_form.names_edit.setText("background, inside, edge")
    layer = dock.new_scribble_layer()
    assert list(layer.features["class"]) == ["not annotated", "inside", "edge", "background"]
    assert "3 = background" in dock.status.text()
    from napari_segloop.core.synthetic import make_nuclei

    _, instances = make_nuclei((128, 128), seed=8)
    layer.data = simulate_class_scribbles(border_classes(instances), 3, fraction=0.03, seed=1)
    dock.steps_spin.setValue(6)
    assert dock.train()
    wait_job(session)
    bundle = session.bundle
    assert bundle.classes == 3 and bundle.class_names == ["background", "inside", "edge"]
    assert bundle.architecture == "ClassicUNet"
    # the live preview showed class probabilities and a class map
    entry = session.probability(image)
    assert entry is not None and entry.classes is not None and entry.classes.classes == 3
    classes = find_output(viewer, "classes", "cells")
    assert classes is not None
    # correcting the trained 3-class model copies its class map, not a binary mask
    dock.start_combo.setCurrentIndex(dock.start_combo.findData("loaded"))
    assert dock.mode_combo.itemText(dock.mode_combo.findData("scribbles")) == \
        "scribbles (1-2 = classes, 3 = background)"
    corrections = dock.correction_layer()
    np.testing.assert_array_equal(corrections.data, classes.data)
    assert corrections.data is not classes.data
    assert "unassigned" in dock.status.text()


def test_the_model_dock_creates_a_named_three_class_model(setup, wait_job, notifications):
    _viewer, _, model_dock, session, _, _ = setup
    model_dock.new_form.arch_combo.setCurrentText("Unet")
    model_dock.new_form.encoder_combo.setCurrentText("tu-lcnet_050")
    model_dock.new_form.classes_spin.setValue(4)
    model_dock.new_form.names_edit.setText("bg,a,b")
    assert model_dock.create_new() is False
    assert any("3 class name(s) for 4 classes" in n.message for n in notifications())
    model_dock.new_form.names_edit.setText("bg,a,b,c")
    assert model_dock.create_new()
    wait_job(session)
    assert session.bundle.classes == 4 and session.bundle.class_names == ["bg", "a", "b", "c"]
    assert session.bundle.settings.output_kind == "classes"
