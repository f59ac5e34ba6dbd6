"""The core must stay free of napari and Qt (it runs headless and in the CLI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CORE_MODULES = [
    "napari_segloop",
    "napari_segloop.core.bundle",
    "napari_segloop.core.devices",
    "napari_segloop.core.normalize",
    "napari_segloop.core.tiling",
    "napari_segloop.core.inference",
    "napari_segloop.core.imageio",
    "napari_segloop.core.atomic",
    "napari_segloop.core.threshold",
    "napari_segloop.core.thresholds",
    "napari_segloop.core.metrics",
    "napari_segloop.core.synthetic",
    "napari_segloop.cli",
]


def test_core_and_cli_import_neither_napari_nor_qt():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE_MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'napari', 'qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'superqt', 'magicgui', 'vispy'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"core imports GUI modules: {out.stdout.strip()}"


def test_import_linter_contract_holds():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe is not None, "import-linter is part of the testing extra"
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_import_is_light():
    """Importing the package (as napari does at start-up) must not import torch."""
    code = "import sys, napari_segloop; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ruff_clean():
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert exe is not None, "ruff is part of the testing extra"
    out = subprocess.run([exe, "check", "src", "tests", "benchmarks", "scripts"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
