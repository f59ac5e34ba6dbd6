"""Every module the package imports is a declared dependency (checked by deptry)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _deptry(cwd: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("deptry", path=str(Path(sys.executable).parent))
    assert exe is not None, "deptry is part of the testing extra"
    return subprocess.run([exe, "src"], cwd=cwd, capture_output=True, text=True)


def test_every_import_is_declared():
    out = _deptry(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_check_fails_on_an_undeclared_import(tmp_path):
    """The same configuration on a copy of the package with one undeclared import must fail."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.safetensors"))
    # pyyaml is installed (napari needs it) but not declared by napari-segloop
    (tmp_path / "src" / "napari_segloop" / "core" / "sneaky.py").write_text("import yaml\n")
    out = _deptry(tmp_path)
    assert out.returncode != 0
    assert "yaml" in out.stdout + out.stderr
