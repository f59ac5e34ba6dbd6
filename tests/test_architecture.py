"""The core must stay free of napari and Qt (it runs headless and in the CLI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _core_modules() -> list[str]:
    """Every module of the core (found on disk, so new modules are checked too) and the CLI."""
    src = ROOT / "src"
    mods = ["napari_segloop"]
    for folder in ("core", "cli"):
        for path in sorted((src / "napari_segloop" / folder).rglob("*.py")):
            if path.name == "__main__.py":  # runs the command when imported
                continue
            parts = path.relative_to(src).with_suffix("").parts
            mods.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return mods


CORE_MODULES = _core_modules()


def test_core_and_cli_import_neither_napari_nor_qt():
    assert "napari_segloop.core.inference.predict" in CORE_MODULES
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
