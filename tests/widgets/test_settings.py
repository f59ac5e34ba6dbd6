"""Remembered settings: persisted between docks, isolated from the user's real settings."""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QSettings

from napari_segloop.widgets.settings import MODEL_DEFAULT, UserSettings


def test_settings_file_is_isolated(isolated_qsettings):
    path = Path(UserSettings().store.fileName())
    assert isolated_qsettings in path.parents
    assert path.name == "napari-segloop.ini" and path.parent.name == "napari-segloop"


def test_defaults_and_round_trip():
    s = UserSettings()
    assert (s.device, s.tile_size, s.overlap, s.batch_size) == ("auto", MODEL_DEFAULT, MODEL_DEFAULT, 4)
    assert s.last_model_path == ""
    s.device, s.tile_size, s.overlap, s.batch_size = "cpu", 128, 0.3, 2
    s.last_model_path = "/models/x"
    again = UserSettings()
    assert (again.device, again.tile_size, again.overlap, again.batch_size) == ("cpu", 128, 0.3, 2)
    assert again.last_model_path == "/models/x"


def test_garbage_values_fall_back(tmp_path):
    store = QSettings(str(tmp_path / "bad.ini"), QSettings.Format.IniFormat)
    store.setValue("predict/tile_size", "abc")
    store.setValue("predict/overlap", "7")
    store.setValue("predict/batch_size", "-3")
    store.setValue("model/in_channels", "1000")
    store.setValue("predict/threads", "-2")
    s = UserSettings(store)
    assert (s.tile_size, s.overlap, s.batch_size, s.in_channels) == (MODEL_DEFAULT, MODEL_DEFAULT, 4, 1)
    assert s.threads == 0  # auto


def test_predict_dock_settings_persist(docks, make_napari_viewer):
    from napari_segloop.widgets.predict_dock import PredictDock

    _viewer, _, first = docks()
    first.tile_spin.setValue(128)
    first.overlap_spin.setValue(0.4)
    first.batch_spin.setValue(3)
    first.device_combo.setCurrentText("cpu")
    assert first.threads() == "auto"
    first.threads_spin.setValue(1)
    first.scale_spin.setValue(2.0)  # a per-image choice: not remembered

    other = make_napari_viewer()
    second = PredictDock(other)
    other.window.add_dock_widget(second)
    assert second.tile_spin.value() == 128
    assert abs(second.overlap_spin.value() - 0.4) < 1e-9
    assert second.batch_spin.value() == 3
    assert second.device_combo.currentText() == "cpu"
    assert second.threads() == 1
    assert second.scale_spin.value() == 0  # "model default"
    assert second.options().scale is None


def test_model_default_tiling(docks):
    _viewer, _, dock = docks()
    assert dock.tile_spin.text() == "model default"
    assert dock.overlap_spin.text() == "model default"
    options = dock.options()
    assert options.tile_size is None and options.overlap is None


def test_model_dock_remembers_last_path(docks, tiny_bundle, tmp_path, make_napari_viewer, wait_job):
    from napari_segloop.core.bundle import save_bundle
    from napari_segloop.widgets.model_dock import ModelDock

    folder = save_bundle(tiny_bundle, tmp_path / "remembered")
    _viewer, first, _ = docks()
    assert first.load(str(folder))
    wait_job(first.session)

    other = make_napari_viewer()
    second = ModelDock(other)
    other.window.add_dock_widget(second)
    assert second.path_edit.text() == str(folder)
    assert second.session.bundle is None  # another viewer: its own session
