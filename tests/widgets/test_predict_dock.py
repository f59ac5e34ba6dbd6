"""The Predict dock with a real napari viewer and real thread workers."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.events import Progress
from napari_segloop.widgets.session import session_for


def _prob_layers(viewer):
    return [layer for layer in viewer.layers if layer.name.endswith("probability")]


def _configure(dock, tile=64, overlap=0.25, batch=4):
    dock.tile_spin.setValue(tile)
    dock.overlap_spin.setValue(overlap)
    dock.batch_spin.setValue(batch)


def test_run_creates_probability_layer(docks, tiny_bundle, image_2d, qtbot, wait_job):
    viewer, _, dock = docks(tiny_bundle)
    image = viewer.add_image(image_2d, name="cells", scale=(0.5, 2.0), translate=(10.0, -3.0))
    before = image.data.copy()
    _configure(dock)
    assert dock.run_button.isEnabled()
    assert dock.run()
    assert not dock.run_button.isEnabled()  # a second Run is refused while one runs
    assert dock.run() is False
    wait_job(dock.session)

    (prob,) = _prob_layers(viewer)
    assert prob.name == "cells probability"
    assert prob.data.shape == image_2d.shape
    assert prob.data.dtype == np.float32
    assert np.isfinite(prob.data).all()
    assert prob.data.min() >= 0 and prob.data.max() <= 1
    np.testing.assert_allclose(prob.scale, image.scale)
    np.testing.assert_allclose(prob.translate, image.translate)
    assert tuple(prob.contrast_limits) == (0, 1)
    np.testing.assert_array_equal(image.data, before)  # the user's layer is untouched
    entry = dock.session.probability(image)
    assert entry is not None and entry.data is prob.data and entry.complete
    assert dock.run_button.isEnabled()


def test_rerun_updates_in_place(docks, tiny_bundle, image_2d, qtbot, wait_job):
    viewer, _, dock = docks(tiny_bundle)
    viewer.add_image(image_2d, name="cells")
    _configure(dock)
    assert dock.run()
    wait_job(dock.session)
    (first,) = _prob_layers(viewer)
    first_data = first.data.copy()
    viewer.layers["cells"].data = image_2d[::-1].copy()
    assert dock.run()
    wait_job(dock.session)
    (second,) = _prob_layers(viewer)
    assert second is first
    assert len(viewer.layers) == 2
    assert not np.array_equal(second.data, first_data)


def test_current_slice_writes_only_that_slice(docks, tiny_bundle, qtbot, wait_job):
    viewer, _, dock = docks(tiny_bundle)
    stack = np.random.default_rng(1).random((4, 64, 64), dtype=np.float32)
    viewer.add_image(stack, name="stack", scale=(3.0, 1.0, 1.0))
    _configure(dock)
    assert dock.mode_combo.isEnabled()
    dock.mode_combo.setCurrentText("current slice")
    viewer.dims.set_current_step(0, 2)
    assert dock.run()
    wait_job(dock.session)
    (prob,) = _prob_layers(viewer)
    assert prob.data.shape == stack.shape and prob.data.dtype == np.float32
    assert prob.data[2].max() > 0
    for k in (0, 1, 3):
        assert not prob.data[k].any()
    np.testing.assert_allclose(prob.scale, (3.0, 1.0, 1.0))
    entry = dock.session.probability(viewer.layers["stack"])
    assert entry.slices == {(2,)} and not entry.complete

    viewer.dims.set_current_step(0, 0)
    assert dock.run()
    wait_job(dock.session)
    (again,) = _prob_layers(viewer)
    assert again is prob
    assert prob.data[0].max() > 0 and prob.data[2].max() > 0
    assert not prob.data[1].any() and not prob.data[3].any()


def test_whole_stack(docks, tiny_bundle, qtbot, wait_job):
    viewer, _, dock = docks(tiny_bundle)
    stack = np.random.default_rng(2).random((2, 64, 64), dtype=np.float32)
    viewer.add_image(stack, name="stack")
    _configure(dock)
    assert dock.run()
    wait_job(dock.session)
    (prob,) = _prob_layers(viewer)
    assert prob.data.shape == stack.shape
    assert all(prob.data[k].max() > 0 for k in range(2))


def test_cancel_leaves_nothing(docks, slow_bundle, qtbot, wait_job, notifications):
    viewer, _, dock = docks(slow_bundle)
    viewer.add_image(np.random.default_rng(3).random((256, 256), dtype=np.float32), name="big")
    _configure(dock, tile=64, overlap=0.5, batch=1)
    seen = []

    def on_event(event):
        if isinstance(event, Progress) and event.done >= 2 and not seen:
            seen.append(event)
            dock.cancel_button.click()

    assert dock.run()
    dock.worker.yielded.connect(on_event)
    with qtbot.waitSignal(dock.worker.aborted, timeout=60_000):
        pass
    wait_job(dock.session)
    assert seen and seen[0].done < seen[0].total
    assert _prob_layers(viewer) == []
    assert dock.session.probability(viewer.layers["big"]) is None
    assert "Cancelled" in dock.status.text()
    assert dock.run_button.isEnabled()
    assert not any(n.severity == "error" for n in notifications())


def test_deleting_image_drops_result(docks, slow_bundle, qtbot, wait_job, notifications):
    viewer, _, dock = docks(slow_bundle)
    viewer.add_image(np.random.default_rng(4).random((128, 128), dtype=np.float32), name="gone")
    viewer.add_image(np.zeros((32, 32), dtype=np.float32), name="other")
    dock.image_combo.set_layer(viewer.layers["gone"])
    _configure(dock, tile=64, overlap=0.5, batch=1)
    removed = []

    def on_event(event):
        if isinstance(event, Progress) and event.done >= 1 and not removed:
            removed.append(True)
            viewer.layers.remove("gone")

    assert dock.run()
    dock.worker.yielded.connect(on_event)
    wait_job(dock.session)
    assert removed
    assert _prob_layers(viewer) == []
    assert [layer.name for layer in viewer.layers] == ["other"]
    assert any("was removed while predicting" in str(n.message) for n in notifications())


def test_run_disabled_without_image_or_model(docks, monkeypatch):
    monkeypatch.setattr("napari_segloop.widgets.predict_dock.default_model_available", lambda: False)
    viewer, _, dock = docks()
    assert not dock.run_button.isEnabled()
    viewer.add_image(np.zeros((32, 32), dtype=np.float32), name="img")
    assert not dock.run_button.isEnabled()  # no model and no default model
    assert "Model dock" in dock.run_button.toolTip()


def test_default_model_loaded_lazily(docks, tiny_bundle, image_2d, qtbot, wait_job, monkeypatch):
    calls = []

    def fake_load(spec, *args, **kwargs):
        calls.append(spec)
        return tiny_bundle

    monkeypatch.setattr("napari_segloop.widgets.predict_dock.default_model_available", lambda: True)
    monkeypatch.setattr("napari_segloop.core.bundle.load_model", fake_load)
    viewer, model_dock, dock = docks()
    viewer.add_image(image_2d, name="cells")
    _configure(dock)
    assert dock.run_button.isEnabled()
    assert dock.run()
    wait_job(dock.session)
    assert calls == ["default"]
    assert session_for(viewer).bundle is tiny_bundle
    assert model_dock.table.rowCount() > 3  # the Model dock shows the loaded model
    assert len(_prob_layers(viewer)) == 1


def test_channel_mismatch_refused_before_work(docks, tiny_bundle, notifications):
    viewer, _, dock = docks(tiny_bundle)
    layer = viewer.add_image(np.zeros((32, 32, 3), dtype=np.uint8), name="rgb", rgb=True)
    dock.image_combo.set_layer(layer)
    assert "expects 1 input channel" in dock.status.text()
    assert dock.run() is False
    assert not dock.session.busy
    assert any(n.severity == "error" and "rgb" in str(n.message) for n in notifications())


def test_rgb_with_gray_conversion(docks, tiny_bundle, qtbot, wait_job):
    viewer, _, dock = docks(tiny_bundle)
    rgb = (np.random.default_rng(5).random((64, 64, 3)) * 255).astype(np.uint8)
    layer = viewer.add_image(rgb, name="rgb", rgb=True)
    dock.image_combo.set_layer(layer)
    dock.set_conversion("gray")
    assert dock.convert_combo.currentText() == "average to gray"
    _configure(dock)
    assert dock.run()
    wait_job(dock.session)
    (prob,) = _prob_layers(viewer)
    assert prob.data.shape == (64, 64)
    assert "--convert gray" in dock.command_edit.text()


def test_equivalent_command_shown(docks, tiny_bundle, image_2d, qtbot, wait_job, tmp_path,
                                  notifications):
    from qtpy.QtWidgets import QApplication

    from napari_segloop.core.bundle import save_bundle

    folder = save_bundle(tiny_bundle, tmp_path / "my model")
    viewer, model_dock, dock = docks()
    assert model_dock.load(str(folder))
    wait_job(dock.session)
    viewer.add_image(image_2d, name="cells")
    _configure(dock, tile=64, overlap=0.25, batch=2)
    dock.scale_spin.setValue(1.5)
    assert dock.command_edit.text() == ""
    assert dock.run()
    wait_job(dock.session)
    # the core's notices become notifications
    assert any("resized by 1.5" in str(n.message) for n in notifications())
    command = dock.command_edit.text()
    assert command.startswith("segloop predict IMAGE.tif --model ")
    assert f"'{folder}'" in command
    for part in ("--device auto", "--tile 64", "--overlap 0.25", "--batch-size 2", "--scale 1.5",
                 "--output IMAGE_probability.tif"):
        assert part in command
    assert dock.command_edit.isReadOnly()
    dock.copy_button.click()
    assert QApplication.clipboard().text() == command


def test_equivalent_command_reproduces_the_layer(docks, tiny_bundle, image_2d, qtbot, wait_job, tmp_path,
                                                monkeypatch):
    """The command shown after a run, run as it is, writes the probability map the layer shows."""
    import shlex

    import tifffile

    from napari_segloop.cli import EXIT_OK, main
    from napari_segloop.core.bundle import save_bundle

    folder = save_bundle(tiny_bundle, tmp_path / "model")
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, image_2d)
    viewer, model_dock, dock = docks()
    assert model_dock.load(str(folder))
    wait_job(dock.session)
    (layer,) = viewer.open(str(path), plugin="napari")
    assert str(layer.source.path) == str(path)
    dock.image_combo.set_layer(layer)
    _configure(dock, tile=64, overlap=0.3, batch=2)
    dock.threads_spin.setValue(1)
    assert dock.run()
    wait_job(dock.session)
    (prob,) = _prob_layers(viewer)
    command = dock.command_edit.text()
    assert command.startswith(f"segloop predict {path} --model {folder}")
    assert "--threads 1" in command
    monkeypatch.chdir(tmp_path)  # the command's output is relative: cells_probability.tif
    args = shlex.split(command)
    assert args[0] == "segloop"
    assert main([*args[1:], "--quiet"]) == EXIT_OK
    written = tifffile.imread(tmp_path / "cells_probability.tif")
    np.testing.assert_allclose(written, np.asarray(prob.data), rtol=0, atol=1e-6)


def test_layer_combo_follows_layers(docks, tiny_bundle):
    viewer, _, dock = docks(tiny_bundle)
    combo = dock.image_combo
    assert combo.count() == 0 and combo.layer() is None
    a = viewer.add_image(np.zeros((8, 8)), name="a")
    assert combo.layer() is a
    b = viewer.add_image(np.zeros((8, 8)), name="b")
    viewer.add_labels(np.zeros((8, 8), dtype=np.uint8), name="labels")
    assert [combo.itemText(i) for i in range(combo.count())] == ["b", "a"]
    assert combo.layer() is a  # adding layers does not change the choice
    a.name = "renamed"
    assert [combo.itemText(i) for i in range(combo.count())] == ["b", "renamed"]
    assert combo.layer() is a
    viewer.layers.remove(a)
    assert combo.layer() is b
    viewer.layers.remove(b)
    assert combo.layer() is None
    assert not dock.run_button.isEnabled()


@pytest.mark.parametrize("dtype", [np.uint16, np.float64, bool])
def test_unusual_dtypes(docks, tiny_bundle, qtbot, wait_job, dtype):
    viewer, _, dock = docks(tiny_bundle)
    data = (np.random.default_rng(6).random((64, 64)) * 1000).astype(dtype)
    viewer.add_image(data, name="odd")
    _configure(dock)
    assert dock.run()
    wait_job(dock.session)
    (prob,) = _prob_layers(viewer)
    assert prob.data.dtype == np.float32 and np.isfinite(prob.data).all()


def test_a_remembered_device_that_is_gone_is_shown_and_refused(docks, tiny_bundle, image_2d, notifications,
                                                               no_gpu, monkeypatch):
    """A GPU chosen in an earlier session and missing now: a notice, and Run refuses; never the CPU."""
    from napari_segloop.widgets.settings import UserSettings

    monkeypatch.setattr(UserSettings, "device", property(lambda self: "cuda", lambda self, value: None))
    viewer, _, dock = docks(tiny_bundle)
    assert dock.session.devices == ["cpu"]
    assert dock.device_combo.currentText() == "cuda", "the choice is kept visible, not replaced"
    warnings = [n.message for n in notifications() if n.severity == "warning"]
    expected = ("Device cuda is not available on this machine (working: cpu); "
                "choose auto or cpu in the Device box.")
    assert expected in warnings
    viewer.add_image(image_2d, name="cells")
    assert dock.run() is False
    assert dock.worker is None and not dock.session.busy
    assert expected in [n.message for n in notifications() if n.severity == "error"]
    assert dock.status.text() == expected
    assert _prob_layers(viewer) == []
    dock.device_combo.setCurrentText("cpu")
    assert dock.options().device == "cpu"


def test_a_gpu_that_fails_after_the_start_is_an_error_not_the_cpu(docks, tiny_bundle, image_2d, qtbot,
                                                                   wait_job, notifications, no_gpu):
    """The device list was probed when a GPU worked; at Run it fails: the job says so, nothing is shown."""
    viewer, _, dock = docks(tiny_bundle)
    dock.session._devices = ["cuda", "cpu"]  # as probed earlier, when the GPU still worked
    dock.device_combo.addItem("cuda")
    dock.device_combo.setCurrentText("cuda")
    viewer.add_image(image_2d, name="cells")
    _configure(dock)
    assert dock.run()
    wait_job(dock.session)
    errors = [n.message for n in notifications() if n.severity == "error"]
    assert any("Device cuda is not available (no CUDA GPU found)" in m for m in errors), errors
    assert "not available" in dock.status.text()
    assert _prob_layers(viewer) == []
