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
