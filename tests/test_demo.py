"""``segloop demo --screenshot``: napari opens with the docks, predicts and saves the window."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_segloop.core.bundle import WEIGHTS_FILE, default_model_path

HAS_DEFAULT_MODEL = (default_model_path() / WEIGHTS_FILE).is_file()

MISSING_MODEL_SCRIPT = """
import sys
from pathlib import Path
import napari_segloop.core.bundle as bundle
bundle.default_model_path = lambda: Path(sys.argv[1])
from napari_segloop.demo import run_demo
sys.exit(run_demo(screenshot=sys.argv[2]))
"""


def _env(tmp_path) -> dict[str, str]:
    # pytest-xvfb has started an X server and set DISPLAY; the subprocess uses the same one.
    assert os.environ.get("DISPLAY"), "needs an X display (pytest-xvfb provides one)"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env.pop("QT_QPA_PLATFORM", None)
    return env


def test_demo_says_when_the_default_model_is_missing(tmp_path, qapp):
    png = tmp_path / "never.png"
    result = subprocess.run(
        [sys.executable, "-c", MISSING_MODEL_SCRIPT, str(tmp_path / "no-model"), str(png)],
        capture_output=True, text=True, timeout=300, env=_env(tmp_path),
    )
    assert result.returncode == 1
    assert "default model is missing" in result.stderr
    assert not png.exists()


@pytest.mark.skipif(
    not HAS_DEFAULT_MODEL,
    reason="the built-in default model has not been trained into src/napari_segloop/models/default yet",
)
def test_demo_screenshot(tmp_path, qapp):
    png = tmp_path / "demo.png"
    script = Path(sys.executable).with_name("segloop")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "napari_segloop.cli"]
    result = subprocess.run(
        [*command, "demo", "--screenshot", str(png)],
        capture_output=True, text=True, timeout=600, env=_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert png.is_file()

    from imageio.v3 import imread

    image = np.asarray(imread(png))
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 800  # the whole window
    rgb = image[..., :3].astype(np.int16)
    assert rgb.std() > 10  # not blank
    assert len(np.unique(rgb.reshape(-1, 3)[::97], axis=0)) > 50  # many colours: a real render


def _camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 moved the camera to viewer.scene
    return scene.camera if scene is not None else viewer.camera


def _canvas_size(viewer) -> np.ndarray:
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9; before, viewer._canvas_size
    return np.asarray(getattr(canvas, "size", None) or viewer._canvas_size, dtype=float)


def test_demo_fits_the_view_once_the_panel_is_docked(make_napari_viewer, qtbot):
    """The whole image lies inside the canvas, as ``reset_view`` with the final window puts it."""
    from napari_segloop.demo import open_demo
    from napari_segloop.widgets.panel import SegloopPanel

    viewer = make_napari_viewer(show=True)
    viewer, model_dock, predict_dock, frames = open_demo(viewer=viewer, size=(1600, 1000))
    panel = frames["segloop"].widget()
    panel = panel if isinstance(panel, SegloopPanel) else panel.findChild(SegloopPanel)
    assert panel is not None and panel.isVisible()
    assert model_dock is panel.model_dock and predict_dock is panel.predict_dock
    assert viewer.window._qt_window.height() <= 1000
    qtbot.wait(300)  # nothing moves afterwards

    camera = _camera(viewer)
    center, zoom = np.asarray(camera.center, dtype=float), float(camera.zoom)
    size = _canvas_size(viewer)  # (height, width) in canvas pixels
    qt_canvas = viewer.window._qt_viewer.canvas.native
    assert tuple(size) == (qt_canvas.height(), qt_canvas.width())  # the model knows the final canvas
    corners = viewer.layers["nuclei"].extent.world[:, -2:]  # (min, max) of (y, x), world units
    in_canvas = (corners - center[-2:]) * zoom + size / 2
    assert np.all(in_canvas >= -0.5), in_canvas
    assert np.all(in_canvas <= size + 0.5), (in_canvas, size)
    # The image fills the canvas along one axis (a fitted view, not merely a small one).
    assert np.max((corners[1] - corners[0]) * zoom / size) > 0.85

    viewer.reset_view()
    assert np.allclose(camera.center, center, atol=1e-6)
    assert camera.zoom == pytest.approx(zoom, rel=1e-6)
