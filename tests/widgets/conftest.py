"""Fixtures for the dock tests: isolated settings, tiny models, a viewer with the docks."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import ModelBundle, create_model


@pytest.fixture(autouse=True)
def isolated_qsettings(tmp_path_factory, monkeypatch):
    """Point QSettings' INI files at a fresh folder: the user's real settings are never read or written."""
    from qtpy.QtCore import QSettings

    folder = tmp_path_factory.mktemp("qsettings")
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(folder))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_bundle() -> ModelBundle:
    """A tiny untrained single-channel U-Net (fast on a CPU)."""
    torch.manual_seed(0)
    return create_model("Unet", "tu-lcnet_050", 1, 1, decoder_channels=(16, 16, 16, 16, 16))


class SlowModel(torch.nn.Module):
    """Wraps a model and sleeps in every forward pass, so a run can be cancelled midway."""

    def __init__(self, inner: torch.nn.Module, delay: float = 0.05) -> None:
        super().__init__()
        self.inner = inner
        self.delay = delay
        self.config = dict(inner.config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.delay)
        return self.inner(x)


@pytest.fixture
def slow_bundle(tiny_bundle) -> ModelBundle:
    """The tiny model, slowed down (about 50 ms per batch)."""
    return ModelBundle(SlowModel(tiny_bundle.model), tiny_bundle.settings, source="new")


@pytest.fixture
def image_2d() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.random((64, 96), dtype=np.float32)


@pytest.fixture
def docks(make_napari_viewer):
    """Make a viewer with the Model and Predict docks, as napari would (viewer wrapped in a proxy)."""

    def make(bundle: ModelBundle | None = None):
        from napari.utils._proxies import PublicOnlyProxy  # test only: what napari hands to plugins

        from napari_segloop.widgets.model_dock import ModelDock
        from napari_segloop.widgets.predict_dock import PredictDock
        from napari_segloop.widgets.session import session_for

        viewer = make_napari_viewer()
        model_dock = ModelDock(PublicOnlyProxy(viewer))
        predict_dock = PredictDock(PublicOnlyProxy(viewer))
        viewer.window.add_dock_widget(model_dock, name="Model")
        viewer.window.add_dock_widget(predict_dock, name="Predict")
        if bundle is not None:
            session_for(viewer).set_model(bundle)
        return viewer, model_dock, predict_dock

    return make


@pytest.fixture
def notifications():
    """Return a function listing the napari notifications dispatched since the test started."""
    from napari.utils.notifications import notification_manager

    start = len(notification_manager.records)
    return lambda: [n for n in notification_manager.records[start:]]


@pytest.fixture
def wait_job(qtbot):
    """Return a function that processes Qt events until a session's job has finished."""

    def wait(session, timeout: int = 60_000) -> None:
        qtbot.waitUntil(lambda: not session.busy, timeout=timeout)

    return wait


@pytest.fixture
def small_blocks(monkeypatch):
    """Predict layers larger than memory in blocks of 128 px into chunks of 64 (a few blocks per test)."""
    from napari_segloop.widgets import large_layers

    monkeypatch.setattr(large_layers, "CHUNK", 64)
    monkeypatch.setattr(large_layers, "GUI_BLOCK", 128)
    real = large_layers.large_job

    def job(*args, **kwargs):
        kwargs["block"] = 128
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(large_layers, "large_job", job)
