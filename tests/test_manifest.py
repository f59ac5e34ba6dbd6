"""The npe2 manifest: valid, identical at the root, and every contribution importable."""

from __future__ import annotations

import importlib
import inspect
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest():
    return npe2.PluginManifest.from_distribution("napari-segloop")


def _resolve(python_name: str):
    module, _, attr = python_name.partition(":")
    return getattr(importlib.import_module(module), attr)


def test_manifest_is_valid(manifest):
    assert manifest.name == "napari-segloop"
    manifest.validate_imports()


def test_npe2_validate_cli():
    exe = shutil.which("npe2") or str(Path(__import__("sys").executable).with_name("npe2"))
    result = subprocess.run([exe, "validate", "napari-segloop"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_root_manifest_is_identical():
    root = (ROOT / "napari.yaml").read_bytes()
    package = (ROOT / "src" / "napari_segloop" / "napari.yaml").read_bytes()
    assert root == package


def test_every_python_name_imports(manifest):
    names = [c.python_name for c in manifest.contributions.commands]
    assert names
    for name in names:
        assert callable(_resolve(name)), name


def test_widgets_take_the_viewer(manifest):
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    titles = set()
    for widget in manifest.contributions.widgets:
        cls = _resolve(commands[widget.command])
        assert "napari_viewer" in inspect.signature(cls).parameters
        titles.add(widget.display_name)
    assert {"segloop (all steps)", "Model", "Predict", "Threshold", "Confusion"} <= titles


def test_panel_and_the_single_docks_are_contributed(manifest):
    """The all-steps panel comes first in the Plugins menu; each dock stays available alone."""
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    widgets = [(w.display_name, commands[w.command]) for w in manifest.contributions.widgets]
    assert widgets[0] == ("segloop (all steps)", "napari_segloop.widgets.panel:SegloopPanel")
    singles = dict(widgets[1:])
    assert singles == {
        "Model": "napari_segloop.widgets.model_dock:ModelDock",
        "Predict": "napari_segloop.widgets.predict_dock:PredictDock",
        "Threshold": "napari_segloop.widgets.threshold_dock:ThresholdDock",
        "Confusion": "napari_segloop.widgets.confusion_dock:ConfusionDock",
        "Classes": "napari_segloop.widgets.classes_dock:ClassesDock",
        "Fine-tune": "napari_segloop.widgets.finetune_dock:FinetuneDock",
        "Uncertainty": "napari_segloop.widgets.uncertainty_dock:UncertaintyDock",
    }
    from napari_segloop.widgets.panel import DOCKS

    # The panel's sections are the same dock classes.
    assert {title: f"{module}:{name}" for title, (module, name) in DOCKS.items()} == singles


def test_sample_data_gives_image_and_labels(manifest):
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    (sample,) = [s for s in manifest.contributions.sample_data if s.key == "nuclei"]
    layers = _resolve(commands[sample.command])()
    kinds = [kind for _, _, kind in layers]
    assert kinds == ["image", "labels"]
    (image, image_meta, _), (labels, labels_meta, _) = layers
    assert image.ndim == 2 and image.shape == labels.shape
    assert np.issubdtype(labels.dtype, np.integer) and labels.max() > 0
    assert image_meta["name"] == "nuclei" and labels_meta["name"] == "nuclei ground truth"


def test_the_phase_contrast_sample_is_one_the_default_model_gets_wrong(manifest):
    """The second sample exists to be fine-tuned on: dark cells in bright halos, with labels."""
    commands = {c.id: c.python_name for c in manifest.contributions.commands}
    (sample,) = [s for s in manifest.contributions.sample_data if s.key == "phase_contrast"]
    (image, _, _), (labels, _, kind) = _resolve(commands[sample.command])()
    assert kind == "labels" and image.shape == labels.shape == (512, 512)
    assert labels.max() > 50  # instance labels of many cells
    cells = labels > 0
    from scipy import ndimage as ndi

    halo_band = ndi.binary_dilation(cells, iterations=3) & ~cells
    background = ~ndi.binary_dilation(cells, iterations=8)
    assert image[cells].mean() < image[background].mean() < image[halo_band].mean()
