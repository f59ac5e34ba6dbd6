"""The Model dock's "Export for other tools": a checked file from a worker, packages loaded back."""

from __future__ import annotations

import zipfile

import numpy as np
import yaml

from napari_segloop.core.bundle import BundleSettings, create_model
from napari_segloop.core.inference.predict import predict_array
from napari_segloop.core.synthetic import make_nuclei


def tiny_bundle(threshold: float = 0.5):
    """A tiny 3-level U-Net with 64 px tiles (quick to export)."""
    import torch

    torch.manual_seed(0)
    settings = BundleSettings(channel_names=["gray"], tile_size=64, threshold=threshold)
    return create_model("Unet", "tu-lcnet_050", 1, 1, settings=settings, encoder_depth=3,
                        decoder_channels=(16, 16, 16))


def test_export_package_from_the_dock_and_load_it_back(docks, qtbot, wait_job, notifications, tmp_path):
    bundle = tiny_bundle(threshold=0.35)
    _, model_dock, _ = docks(bundle)
    model_dock.export_name.setText("Tiny nuclei")
    model_dock.export_authors.setText("Ada Lovelace; Lab; 0000-0002-1825-0097 | Charles Babbage")
    model_dock.format_combo.setCurrentIndex(model_dock.format_combo.findData("bioimageio"))
    out = tmp_path / "tiny.zip"
    assert model_dock.export_to(str(out))
    assert not model_dock.export_button.isEnabled(), "no second export while one runs"
    wait_job(model_dock.session, timeout=180_000)
    assert out.is_file(), model_dock.status.text()
    assert "Exported to" in model_dock.status.text() and "model test passed" in model_dock.status.text()
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert [a["name"] for a in rdf["authors"]] == ["Ada Lovelace", "Charles Babbage"]
    assert rdf["name"] == "Tiny nuclei"
    # No description was typed: the user is told it holds a placeholder.
    assert any("description" in n.message and "placeholder" in n.message for n in notifications())

    model_dock.path_edit.setText(str(out))
    assert model_dock.load_from_field()
    wait_job(model_dock.session)
    loaded = model_dock.session.bundle
    assert loaded is not bundle and loaded.settings.threshold == 0.35
    image = make_nuclei((64, 96), seed=1)[0]
    ref = predict_array(bundle, image, device="cpu")
    assert np.abs(predict_array(loaded, image, device="cpu") - ref).max() < 1e-6


def test_bad_author_is_refused_before_any_work(docks, notifications, tmp_path):
    _, model_dock, _ = docks(tiny_bundle())
    model_dock.export_authors.setText("Bob; lab; 1234")
    assert not model_dock.export_to(str(tmp_path / "m.onnx"), "onnx")
    assert not model_dock.session.busy
    assert any("ORCID" in n.message for n in notifications())
    assert not (tmp_path / "m.onnx").exists()


def test_existing_file_is_not_replaced_without_consent(docks, wait_job, tmp_path):
    _, model_dock, _ = docks(tiny_bundle())
    out = tmp_path / "m.pt"
    out.write_bytes(b"keep me")
    assert model_dock.export_to(str(out), "torchscript")
    wait_job(model_dock.session)
    assert out.read_bytes() == b"keep me"
    assert "already exists" in model_dock.status.text()
