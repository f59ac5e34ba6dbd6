"""Loading a model after napari's OpenGL canvas exists must not crash (triton vs Mesa's LLVM)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import napari
viewer = napari.Viewer(show=True)
from napari_segloop.widgets.session import session_for
session_for(viewer)
from napari_segloop.core.bundle import create_model
bundle = create_model("Unet", "tu-lcnet_050", 1, 1, decoder_channels=(16, 16, 16, 16, 16))
viewer.close()
print("ok")
"""


def test_model_after_opengl_does_not_crash(qapp):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("QT_QPA_PLATFORM", None)
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
