"""Packaging: the README's commands are what CI runs, and a built wheel carries the plugin."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for b in blocks for line in b.splitlines() if line and not line.startswith("#")]


def test_readme_quickstart_has_exactly_two_commands_and_ci_runs_the_test_one():
    commands = _quickstart_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert "segloop demo" in demo and '".[qt]"' in demo
    assert "pytest" in tests and '".[testing]"' in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), "'.ci/run' must run the README's test command verbatim"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (whl,) = out.glob("napari_segloop-*.whl")
    return whl


def test_wheel_contains_manifest_entry_point_and_default_model(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "napari_segloop/napari.yaml" in names
        eps = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        entry_points = zf.read(eps).decode()
    assert "[napari.manifest]" in entry_points
    assert "napari-segloop = napari_segloop:napari.yaml" in entry_points
    assert "segloop = napari_segloop.cli:main" in entry_points
    shipped = (ROOT / "src" / "napari_segloop" / "models" / "default")
    for f in shipped.glob("*"):
        if f.is_file():
            assert f"napari_segloop/models/default/{f.name}" in names


def test_wheel_manifest_validates_with_npe2(wheel: Path, tmp_path: Path):
    import npe2

    with zipfile.ZipFile(wheel) as zf:
        manifest = tmp_path / "napari.yaml"
        manifest.write_bytes(zf.read("napari_segloop/napari.yaml"))
    pm = npe2.PluginManifest.from_file(manifest)
    assert pm.name == "napari-segloop"
    # every command must point at an importable callable (imports from the installed package)
    for cmd in pm.contributions.commands or []:
        module, _, attr = cmd.python_name.partition(":")
        mod = __import__(module, fromlist=[attr])
        assert callable(getattr(mod, attr)), cmd.python_name
