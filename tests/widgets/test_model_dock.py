"""The Model dock: loading in the background, errors that keep the previous model."""

from __future__ import annotations

import pytest
import torch

from napari_segloop.core.bundle import create_model, save_bundle


def _errors(notifications):
    return [str(n.message) for n in notifications() if n.severity == "error"]


def _table(dock) -> dict[str, str]:
    return {dock.table.item(i, 0).text(): dock.table.item(i, 1).text()
            for i in range(dock.table.rowCount())}


def test_load_bundle_folder_shows_description(docks, tiny_bundle, tmp_path, wait_job):
    folder = save_bundle(tiny_bundle, tmp_path / "bundle")
    _viewer, dock, predict = docks()
    assert "none loaded" in _table(dock)["model"]
    dock.path_edit.setText(str(folder))
    dock.load_button.click()
    assert dock.session.busy and not dock.load_button.isEnabled()
    assert not predict.run_button.isEnabled()
    wait_job(dock.session)
    table = _table(dock)
    assert table["architecture"] == "Unet"
    assert table["encoder"] == "tu-lcnet_050"
    assert table["input channels"].startswith("1")
    assert "percentile" in table["normalization"]
    assert table["source"] == str(folder)
    assert "segloop version" in table  # provenance
    assert dock.session.bundle.source == str(folder)
    assert dock.settings.last_model_path == str(folder)
    assert "cpu" in dock.device_label.text()
    assert "Unet" in predict.model_label.text()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a readable PyTorch weights file"),
        (b"this is not a model", "not a readable PyTorch weights file"),
    ],
)
def test_bad_file_keeps_previous_model(docks, tiny_bundle, tmp_path, wait_job, notifications,
                                       content, expected):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(content)
    _viewer, dock, _ = docks(tiny_bundle)
    assert dock.load(str(bad), "Unet", "tu-lcnet_050", 1)
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    errors = _errors(notifications)
    assert len(errors) == 1
    assert str(bad) in errors[0] and expected in errors[0]
    assert "previous model is still loaded" in errors[0]
    assert dock.settings.last_model_path == ""  # only successful loads are remembered


def test_pickle_payload_refused(docks, tiny_bundle, tmp_path, wait_job, notifications):
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": _Payload()}, evil)
    _viewer, dock, _ = docks(tiny_bundle)
    assert dock.load(str(evil), "Unet", "tu-lcnet_050", 1)
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    (error,) = _errors(notifications)
    assert str(evil) in error and "never executes code" in error


class _Payload:
    """Any Python object: torch.load(weights_only=True) must refuse it."""


def test_mismatched_weights_report(docks, tiny_bundle, tmp_path, wait_job, notifications):
    path = tmp_path / "tiny_state.pt"
    torch.save(tiny_bundle.model.state_dict(), path)
    _viewer, dock, _ = docks(tiny_bundle)
    dock.path_edit.setText(str(path))
    dock.arch_combo.setCurrentText("Unet")
    dock.encoder_combo.setCurrentText("resnet18")
    assert dock.load_from_field()
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    (error,) = _errors(notifications)
    assert "do not fit this architecture/encoder" in error and str(path) in error


def test_load_state_dict_with_architecture(docks, tmp_path, wait_job):
    model = create_model("Unet", "tu-lcnet_050", 1, 1)
    path = tmp_path / "weights.pth"
    torch.save(model.model.state_dict(), path)
    _viewer, dock, _ = docks()
    assert not dock.weights_section.isExpanded()
    dock.path_edit.setText(str(path))
    assert dock.weights_section.isExpanded()  # a weights file needs the architecture fields
    dock.arch_combo.setCurrentText("Unet")
    dock.encoder_combo.setCurrentText("tu-lcnet_050")
    dock.channels_spin.setValue(1)
    assert dock.load_from_field()
    wait_job(dock.session)
    assert dock.session.bundle is not None
    assert dock.session.bundle.source == str(path)
    assert dock.settings.encoder == "tu-lcnet_050"
    for name, tensor in dock.session.bundle.model.state_dict().items():
        assert torch.equal(tensor, model.model.state_dict()[name])


def test_missing_default_model_is_reported(docks, tiny_bundle, wait_job, notifications, monkeypatch,
                                           tmp_path):
    monkeypatch.setattr("napari_segloop.core.bundle.folder.default_model_path", lambda: tmp_path / "none")
    _viewer, dock, _ = docks(tiny_bundle)
    dock.default_button.click()
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    (error,) = _errors(notifications)
    assert "default model is missing" in error


def test_create_new_model(docks, wait_job):
    _viewer, dock, _predict = docks()
    dock.new_form.arch_combo.setCurrentText("Unet")
    dock.new_form.encoder_combo.setCurrentText("tu-lcnet_050")
    dock.new_channels_spin.setValue(2)
    dock.new_form.weights_combo.setCurrentText("none")
    dock.create_button.click()
    wait_job(dock.session)
    bundle = dock.session.bundle
    assert bundle is not None and bundle.in_channels == 2 and bundle.source == "new"
    assert _table(dock)["input channels"].startswith("2")


def test_create_with_imagenet_offline_fails_fast(docks, tiny_bundle, wait_job, notifications):
    _viewer, dock, _ = docks(tiny_bundle)
    dock.new_form.encoder_combo.setCurrentText("tu-lcnet_050")
    dock.new_form.weights_combo.setCurrentText("imagenet")
    assert dock.create_new()
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    (error,) = _errors(notifications)
    assert "no network" in error or "imagenet" in error.lower()


def test_unknown_encoder(docks, tiny_bundle, wait_job, notifications):
    _viewer, dock, _ = docks(tiny_bundle)
    dock.new_form.encoder_combo.setCurrentText("no-such-encoder")
    assert dock.create_new()
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    (error,) = _errors(notifications)
    assert "no-such-encoder" in error


def test_a_hostile_bundle_is_refused_with_one_notification(docks, tiny_bundle, tmp_path, wait_job,
                                                           notifications):
    """A bundle naming a hub encoder and an escape sequence: one escaped error, previous model kept."""
    import json

    folder = save_bundle(tiny_bundle, tmp_path / "evil")
    config = json.loads((folder / "config.json").read_text())
    config["encoder_name"] = "tu-hf-hub:timm/resnet18.a1_in1k"
    config["\x1b[2Jcheckpoint_path"] = "/etc/passwd"
    (folder / "config.json").write_text(json.dumps(config))
    _viewer, dock, _ = docks(tiny_bundle)
    assert dock.load(str(folder))
    wait_job(dock.session)
    assert dock.session.bundle is tiny_bundle
    (error,) = _errors(notifications)
    assert "is not an encoder name" in error and "\x1b" not in error
    assert dock.status.textFormat() == dock.status.textFormat().PlainText


def test_a_preset_fills_the_form_and_builds_the_architecture_users_know(docks, wait_job):
    _viewer, dock, _ = docks()
    form = dock.new_form
    form.preset_combo.setCurrentText("Attention VGG-UNet3+")
    assert form.arch_combo.currentText() == "UNet3Plus"
    assert form.encoder_combo.currentText() == "vgg16"
    assert form.attention_check.isChecked() and form.attention_check.isEnabled()
    assert not form.base_spin.isEnabled()  # a VGG encoder has its own widths
    dock.create_button.click()
    wait_job(dock.session)
    bundle = dock.session.bundle
    assert bundle.architecture == "UNet3Plus" and bundle.config["attention"] is True
    table = _table(dock)
    assert table["architecture"] == "UNet3Plus" and table["input multiple"] == "16 px"
    assert "in the encoder" in table["parameters"]


def test_editing_a_preset_makes_it_custom_and_the_base_width_applies(docks, wait_job):
    _viewer, dock, _ = docks()
    form = dock.new_form
    form.preset_combo.setCurrentText("U-Net, classic (2015)")
    assert form.base_spin.isEnabled() and not form.encoder_combo.isEnabled()
    assert not form.weights_combo.isEnabled()  # the plain encoder has no pre-trained weights
    form.base_spin.setValue(8)
    assert form.preset_combo.currentText().startswith("custom")
    choice = form.choice()
    assert (choice.architecture, choice.encoder, choice.options) == ("ClassicUNet", "plain",
                                                                     {"base_channels": 8})
    dock.create_button.click()
    wait_job(dock.session)
    model = dock.session.bundle.model
    assert [int(c) for c in model.encoder.out_channels] == [8, 16, 32, 64, 128]


def test_the_light_preset_keeps_the_default_models_decoder_widths(docks):
    _viewer, dock, _ = docks()
    form = dock.new_form
    form.preset_combo.setCurrentText("U-Net, light (lcnet, fast on a CPU)")
    choice = form.choice()
    assert choice.encoder == "tu-lcnet_075"
    assert choice.options == {"decoder_channels": [64, 32, 24, 16, 8]}
    form.arch_combo.setCurrentText("FPN")  # another architecture: the Unet widths no longer apply
    assert "decoder_channels" not in form.choice().options
