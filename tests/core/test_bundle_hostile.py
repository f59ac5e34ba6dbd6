"""A model bundle is data, nothing more: hostile and careless bundles, each built here, each refused
(or honoured) with one clear line, without reaching the network or a file outside the bundle."""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import os
import shutil
import socket
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_segloop.cli import EXIT_FAILED, main
from napari_segloop.core.bundle import (
    CONFIG_FILE,
    SETTINGS_FILE,
    WEIGHTS_FILE,
    load_bundle,
    read_bundle_settings,
    save_bundle,
    set_bundle_threshold,
)
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.inference.predict import predict_array
from napari_segloop.core.models import registry
from napari_segloop.core.text import printable

ENCODER = "tu-lcnet_050"


@pytest.fixture(scope="module")
def saved(bundle, tmp_path_factory) -> Path:
    """The tiny float32 bundle of the core tests, saved once (tests work on copies)."""
    return save_bundle(bundle, tmp_path_factory.mktemp("hostile") / "model")


@pytest.fixture
def bundle_dir(saved, tmp_path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(saved, dst)
    return dst


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test (not only offline: it is never tried)."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def _config(folder: Path) -> dict:
    return json.loads((folder / CONFIG_FILE).read_text())


def _write_config(folder: Path, **changes) -> None:
    config = {**_config(folder), **changes}
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def _settings(folder: Path) -> dict:
    return json.loads((folder / SETTINGS_FILE).read_text())


def _refused(folder, match: str) -> str:
    with pytest.raises(ModelLoadError, match=match) as info:
        load_bundle(folder)
    text = str(info.value)
    assert "\n" not in text, text
    return text


def _cli_one_line(capsys, *argv: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == EXIT_FAILED
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("segloop: error:"), err
    assert "Traceback" not in err
    return lines[0]


# ----------------------------------------------------------------------------- the allow-list


@pytest.mark.parametrize("encoder", [
    "tu-hf-hub:timm/resnet18.a1_in1k", "tu-hf_hub:timm/resnet18", "hf-hub:timm/resnet18",
    "tu-../../etc/passwd", "tu-resnet18 ", "https://example.org/encoder.pth", "tu-no_such_model_xyz",
])
def test_encoder_names_cannot_reach_the_hub_or_a_file(bundle_dir, no_network, encoder):
    _write_config(bundle_dir, encoder_name=encoder)
    text = _refused(bundle_dir, "is not an encoder name|is not a model in the installed timm")
    assert str(bundle_dir / CONFIG_FILE) in text and "network access" not in text


@pytest.mark.parametrize(("key", "value"), [
    ("checkpoint_path", "/etc/passwd"),
    ("pretrained_cfg_overlay", {"file": "/etc/passwd"}),
    ("pretrained_cfg", {"url": "https://example.org/w.pth"}),
    ("cache_dir", "/tmp"),
    ("upsampling", 4),  # a real smp option, but not one of Unet
    ("\x1b[2Jkey", 1),
])
def test_keys_outside_the_allow_list_are_refused_by_name(bundle_dir, no_network, monkeypatch, key, value):
    opened = []
    real_open = builtins.open

    def spy(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy)
    _write_config(bundle_dir, **{key: value})
    text = _refused(bundle_dir, "is not a setting")
    assert printable(key) in text and "\x1b" not in text
    assert "/etc/passwd" not in opened


@pytest.mark.parametrize("weights", ["/etc/passwd", "https://example.org/w.pth", "../w.pt", {"x": 1}])
def test_encoder_weights_cannot_name_a_file_or_url(bundle_dir, no_network, weights):
    _write_config(bundle_dir, encoder_weights=weights)
    _refused(bundle_dir, "encoder_weights must be null or the name of a weight set")


def test_imagenet_in_encoder_weights_is_ignored_not_downloaded(bundle_dir, no_network):
    _write_config(bundle_dir, encoder_weights="imagenet")
    load_bundle(bundle_dir)


@pytest.mark.parametrize(("changes", "match"), [
    ({"decoder_channels": [4096] * 5},
     "decoder_channels must be a list of 1 to 8 whole numbers from 1 to 2048"),
    ({"in_channels": 100000}, "in_channels must be a whole number from 1 to 64"),
    ({"encoder_depth": 9}, "encoder_depth must be a whole number from 1 to 5"),
    ({"encoder_depth": True}, "encoder_depth must be a whole number"),
    ({"decoder_channels": [16, 16, 16]}, "decoder_channels has 3 widths but encoder_depth is 5"),
    ({"decoder_interpolation": "evil"}, "decoder_interpolation must be one of"),
])
def test_values_out_of_range_are_refused(bundle_dir, changes, match):
    _write_config(bundle_dir, **changes)
    _refused(bundle_dir, match)


def test_a_config_that_does_not_fit_its_weights_fails_before_the_network_is_built(bundle_dir, monkeypatch):
    """Shapes are compared on the meta device: the large network is never allocated."""
    spec = registry.get_spec("Unet")
    devices = []

    @functools.wraps(spec.build)
    def build(**kwargs):
        devices.append(str(torch.get_default_device()))
        return spec.build(**kwargs)

    monkeypatch.setitem(registry._REGISTRY, "unet", dataclasses.replace(spec, build=build))
    _write_config(bundle_dir, decoder_channels=[2048] * 5)
    text = _refused(bundle_dir, "do not fit")
    assert devices == ["meta"]  # only the shape-only shell was built
    assert "decoder" in text and str(bundle_dir / WEIGHTS_FILE) in text


def test_a_safetensors_header_that_lies_about_sizes_is_refused(bundle_dir):
    path = bundle_dir / WEIGHTS_FILE
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [4096, 4096, 64]
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n:])
    _refused(bundle_dir, "does not lie inside the file")
    path.write_bytes(struct.pack("<Q", 10**15) + data[8:])
    _refused(bundle_dir, "header length")


# ----------------------------------------------------------------------------- semantic mistakes


def test_a_sigmoid_activation_is_applied_once(saved, bundle_dir, make_blobs):
    _write_config(bundle_dir, activation="sigmoid")
    honoured = load_bundle(bundle_dir)
    plain = load_bundle(saved)
    image = make_blobs((64, 64))
    prob = predict_array(honoured, image)
    np.testing.assert_allclose(prob, predict_array(plain, image), atol=1e-6)
    assert prob.min() < 0.5 < prob.max() or prob.max() < 0.6  # not sigmoid(sigmoid(x)) >= 0.5
    assert "sigmoid" in honoured.describe()["loading notes"]


@pytest.mark.parametrize("activation", ["softmax2d", "tanh", "logsoftmax", "os.system"])
def test_other_activations_are_refused(bundle_dir, activation):
    _write_config(bundle_dir, activation=activation)
    _refused(bundle_dir, "needs the network's logits")


def test_too_many_classes_are_refused(bundle_dir):
    _write_config(bundle_dir, classes=40)
    _refused(bundle_dir, "at most 32 classes")


def test_classes_that_do_not_match_the_weights_are_refused(bundle_dir):
    _write_config(bundle_dir, classes=3)
    _refused(bundle_dir, "classes")


def test_a_classification_head_is_refused(bundle_dir):
    _write_config(bundle_dir, aux_params={"classes": 2})
    _refused(bundle_dir, "aux_params must be null")


def test_clip_min_above_clip_max_is_refused(bundle_dir):
    settings = _settings(bundle_dir)
    settings["normalization"].update(clip_min=2.0, clip_max=1.0)
    (bundle_dir / SETTINGS_FILE).write_text(json.dumps(settings))
    _refused(bundle_dir, "clip_min 2 must be below clip_max 1")
    with pytest.raises(ModelLoadError, match="clip_min"):
        read_bundle_settings(bundle_dir)


@pytest.mark.parametrize("kind", ["directory", "dangling link", "fifo"])
def test_a_settings_file_that_is_not_a_file_is_refused_not_defaulted(bundle_dir, kind):
    path = bundle_dir / SETTINGS_FILE
    path.unlink()
    if kind == "directory":
        path.mkdir()
    elif kind == "dangling link":
        path.symlink_to(bundle_dir / "gone.json")
    else:
        os.mkfifo(path)
    text = _refused(bundle_dir, "settings file")
    expected = {"directory": "folder", "dangling link": "does not exist", "fifo": "not a regular file"}
    assert expected[kind] in text
    with pytest.raises(ModelLoadError):
        read_bundle_settings(bundle_dir)
    with pytest.raises(ModelLoadError):
        set_bundle_threshold(bundle_dir, 0.3)


def test_a_bundle_file_linking_outside_the_bundle_is_refused(bundle_dir, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.move(bundle_dir / CONFIG_FILE, outside)
    (bundle_dir / CONFIG_FILE).symlink_to(outside)
    _refused(bundle_dir, "outside the bundle folder")


# ----------------------------------------------------------------------------- malformed JSON


@pytest.mark.parametrize(("file", "text", "match"), [
    (CONFIG_FILE, "[" * 200_000 + "]" * 200_000, "nested too deeply"),
    (CONFIG_FILE, '{"_model_class": "Unet", "in_channels": 1' + "0" * 5000 + "}", "5001 digits is too long"),
    (CONFIG_FILE, '{"_model_class": "Unet", "in_channels": 1e999}', "too large"),
    (CONFIG_FILE, '{"_model_class": "Unet", "classes": NaN}', "NaN is not a number"),
    (CONFIG_FILE, '{"_model_class": "Unet",', "not valid JSON"),
    (CONFIG_FILE, b"\xff\xfe{}", "not UTF-8"),
    (CONFIG_FILE, "[1, 2]", "must contain a JSON object"),
    (CONFIG_FILE, '{"_model_class": ["Unet"]}', "_model_class must be an architecture name"),
    (SETTINGS_FILE, '{"format_version": Infinity}', "Infinity is not a number"),
    (SETTINGS_FILE, '{"format_version": "1"}', "format_version '1' is not a whole number"),
    (SETTINGS_FILE, '{"tile_size": "256"}', "tile_size must be a whole number"),
    (SETTINGS_FILE, '{"threshold": "0.5"}', "threshold must be a finite number"),
    (SETTINGS_FILE, '{"postprocess": {"min_size": "15"}}', "min_size must be a finite number"),
    (SETTINGS_FILE, '{"postprocess": {"fill_holes": "yes"}}', "fill_holes must be true or false"),
    (SETTINGS_FILE, '{"normalization": {"low": -Infinity}}', "Infinity is not a number"),
    (SETTINGS_FILE, '{"normalization": {"kind": "fixed", "mean": ["a"], "std": [1]}}',
     "mean must be a list of finite numbers"),
    (SETTINGS_FILE, '{"normalization": [1]}', "Normalization must be a JSON object"),
    (SETTINGS_FILE, '{"channel_names": "nuclei"}', "channel_names must be a list"),
])
def test_malformed_json_gives_one_line(bundle_dir, capsys, file, text, match):
    path = bundle_dir / file
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    message = _refused(bundle_dir, match)
    assert str(path) in message
    line = _cli_one_line(capsys, "info", str(bundle_dir))
    assert match.split()[0] in line


# ----------------------------------------------------------------------------- odd tensors


def _odd(kind: str, like: torch.Tensor) -> torch.Tensor:
    if kind == "sparse":
        return like.to_sparse()
    if kind == "meta":
        return torch.empty(like.shape, device="meta")
    if kind == "quantized":
        return torch.quantize_per_tensor(like.float(), 0.1, 0, torch.qint8)
    if kind == "nested":
        return torch.nested.nested_tensor([like.flatten(), like.flatten()[:1]])
    if kind == "nan":
        out = like.clone()
        out.view(-1)[0] = float("nan")
        return out
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["sparse", "meta", "quantized", "nested", "nan"])
def test_state_dicts_with_odd_tensors_give_one_line(bundle, tmp_path, capsys, kind):
    state = dict(bundle.model.state_dict())
    key = next(k for k, v in state.items() if v.dtype == torch.float32 and v.ndim == 4)
    state[key] = _odd(kind, state[key])
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError, match=key.replace(".", r"\.")) as info:
        _load_tiny(path)
    assert "\n" not in str(info.value)
    line = _cli_one_line(capsys, "info", str(path), "--arch", "Unet", "--encoder", ENCODER)
    assert str(path) in line


def _load_tiny(path: Path):
    from napari_segloop.core.bundle import load_state_dict_model

    return load_state_dict_model(path, "Unet", ENCODER, decoder_channels=(16,) * 5)


# ----------------------------------------------------------------------------- printed text


def test_text_from_a_bundle_cannot_rewrite_the_terminal(bundle_dir, capsys):
    settings = _settings(bundle_dir)
    settings["provenance"]["note"] = "\x1b[2J\x1b[1;1Hall good\rfake line\u202edesrever" + "x" * 100_000
    settings["channel_names"] = ["nuclei\x07\x1b]0;title\x07"]
    (bundle_dir / SETTINGS_FILE).write_text(json.dumps(settings))
    assert main(["info", str(bundle_dir)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\r" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J" in out and "\\u202e" in out
    assert max(len(line) for line in out.splitlines()) < 1000
    assert "more characters" in out
    assert main(["info", str(bundle_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "\x1b" not in info["note"] and len(info["note"]) < 1000


def test_printable_escapes_controls_and_cuts():
    assert printable("a\x1bb") == "a\\x1bb"
    assert printable("tab\there") == "tab\\x09here"
    assert printable("zero\u200bwidth") == "zero\\u200bwidth"
    assert printable("line\nbreak") == "line\\x0abreak"
    assert printable("line\nbreak", keep_newlines=True) == "line\nbreak"
    assert printable("é ü 細胞") == "é ü 細胞"
    assert printable("abcdef", limit=3) == "abc... (3 more characters)"


@pytest.mark.parametrize(("old", "new"), [(True, "batchnorm"), (False, "identity"), ("inplace", "inplace")])
def test_the_old_smp_name_of_decoder_normalisation_is_understood(bundle_dir, old, new):
    config = _config(bundle_dir)
    config.pop("decoder_use_norm")
    (bundle_dir / CONFIG_FILE).write_text(json.dumps({**config, "decoder_use_batchnorm": old}))
    if new == "batchnorm":
        assert load_bundle(bundle_dir).config["decoder_use_norm"] == "batchnorm"
    else:  # other decoder layers than the saved weights: refused by the shape check, not misread
        with pytest.raises(ModelLoadError):
            load_bundle(bundle_dir)


def test_a_weights_file_that_is_a_pipe_is_refused_without_hanging(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    os.mkfifo(path)
    with pytest.raises(ModelLoadError, match="not a regular file"):
        _load_tiny(path)
    assert "not a regular file" in _cli_one_line(capsys, "info", str(path), "--arch", "Unet",
                                                  "--encoder", ENCODER)
