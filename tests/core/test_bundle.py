"""Model bundles: exact round trips, atomic saves, safe and offline loading, readable errors."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import (
    CONFIG_FILE,
    FORMAT_VERSION,
    SETTINGS_FILE,
    WEIGHTS_FILE,
    BundleSettings,
    Normalization,
    PostProcess,
    create_model,
    default_model_path,
    load_bundle,
    load_model,
    load_state_dict_model,
    save_bundle,
)
from napari_segloop.core.bundle import folder as bundle_mod
from napari_segloop.core.errors import BundleExistsError, ModelLoadError, SegloopError
from napari_segloop.core.inference.predict import predict_array

TINY = {"decoder_channels": (16, 16, 16, 16, 16)}


def _outputs(model, seed=0) -> torch.Tensor:
    x = torch.from_numpy(np.random.default_rng(seed).normal(size=(2, 1, 64, 96)).astype(np.float32))
    with torch.inference_mode():
        return model.eval()(x)


def _siblings(folder: Path) -> list[str]:
    """Names next to ``folder`` that look like leftovers of a save."""
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))


@pytest.fixture(scope="module")
def saved(bundle, tmp_path_factory) -> Path:
    """The module's tiny model saved once as a float32 bundle (read-only for tests)."""
    return save_bundle(bundle, tmp_path_factory.mktemp("saved") / "model")


@pytest.fixture
def copy_of_saved(saved, tmp_path) -> Path:
    import shutil

    dst = tmp_path / "model"
    shutil.copytree(saved, dst)
    return dst


# ---------------------------------------------------------------- round trips


def test_save_load_round_trip_gives_identical_outputs(bundle, saved, make_blobs):
    assert {p.name for p in saved.iterdir()} >= {CONFIG_FILE, WEIGHTS_FILE, SETTINGS_FILE}
    loaded = load_bundle(saved)
    assert not loaded.model.training, "loaded in eval mode"
    assert loaded.source == str(saved)
    assert torch.equal(_outputs(bundle.model), _outputs(loaded.model))
    img = make_blobs((70, 90))
    np.testing.assert_array_equal(predict_array(bundle, img), predict_array(loaded, img))


def test_float16_storage_is_smaller_and_nearly_identical(bundle, saved, tmp_path):
    half = save_bundle(bundle, tmp_path / "half", dtype="float16")
    assert (half / WEIGHTS_FILE).stat().st_size < 0.6 * (saved / WEIGHTS_FILE).stat().st_size
    loaded = load_bundle(half)
    assert all(p.dtype == torch.float32 for p in loaded.model.parameters()), "cast back to float32"
    ref, got = _outputs(bundle.model), _outputs(loaded.model)
    assert not torch.equal(ref, got)
    assert (ref - got).abs().max() < 1e-2 * max(1.0, float(ref.abs().max()))
    assert loaded.settings.provenance["weights_dtype"] == "float16"
    # the in-memory model keeps float32
    assert all(p.dtype == torch.float32 for p in bundle.model.parameters())


def test_save_refuses_other_dtypes(bundle, tmp_path):
    with pytest.raises(ValueError, match="float32"):
        save_bundle(bundle, tmp_path / "m", dtype="int8")


def test_zscore_normalisation_round_trips_and_is_described(tmp_path, make_bundle):
    b = make_bundle(normalization=Normalization(kind="zscore", eps=1e-4))
    save_bundle(b, tmp_path / "m")
    got = load_bundle(tmp_path / "m")
    assert (got.settings.normalization.kind, got.settings.normalization.eps) == ("zscore", 1e-4)
    assert "zero mean, unit variance" in got.describe()["normalization"]


def test_settings_round_trip(tmp_path, make_bundle):
    settings = dict(
        normalization=Normalization(kind="fixed", mean=[0.2], std=[0.3]),
        object_size=17.5,
        scale_factor=0.5,
        tile_size=128,
        overlap=0.5,
        threshold=0.35,
        postprocess=PostProcess(min_size=12, fill_holes=True, instances=True),
        provenance={"note": "nuclei, 40x", "seed": 7, "history": [{"epoch": 1, "loss": 0.5}]},
    )
    b = make_bundle(**settings)
    b.settings.channel_names = ["DAPI"]
    save_bundle(b, tmp_path / "m")
    got = load_bundle(tmp_path / "m").settings
    assert got.channel_names == ["DAPI"]
    for key, value in settings.items():
        if key != "provenance":
            assert getattr(got, key) == value, key
    assert got.provenance["note"] == "nuclei, 40x" and got.provenance["seed"] == 7
    assert got.provenance["history"] == [{"epoch": 1, "loss": 0.5}]
    for key in ("segloop_version", "torch_version", "smp_version", "saved_at", "weights_dtype"):
        assert got.provenance.get(key), key
    on_disk = json.loads((tmp_path / "m" / SETTINGS_FILE).read_text())
    assert on_disk["format_version"] == FORMAT_VERSION


def test_save_refuses_an_existing_bundle_without_overwrite(tmp_path, bundle, make_bundle):
    target = tmp_path / "m"
    save_bundle(bundle, target)
    before = _outputs(load_bundle(target).model)
    with pytest.raises(BundleExistsError, match="already exists"):
        save_bundle(make_bundle(seed=5, threshold=0.7), target)
    assert torch.equal(before, _outputs(load_bundle(target).model))
    assert _siblings(target) == []


def test_save_refuses_the_builtin_default_model(bundle):
    assert (default_model_path() / WEIGHTS_FILE).is_file()  # the real shipped model, not a stray copy
    before = (default_model_path() / WEIGHTS_FILE).read_bytes()
    with pytest.raises(ModelLoadError, match="read-only"):
        save_bundle(bundle, default_model_path(), overwrite=True)
    assert (default_model_path() / WEIGHTS_FILE).read_bytes() == before


def test_save_replaces_an_existing_bundle_with_overwrite(tmp_path, bundle, make_bundle):
    target = tmp_path / "m"
    save_bundle(bundle, target)
    other = make_bundle(seed=5, threshold=0.7)
    save_bundle(other, target, overwrite=True)
    loaded = load_bundle(target)
    assert loaded.settings.threshold == 0.7
    assert torch.equal(_outputs(other.model), _outputs(loaded.model))
    assert _siblings(target) == []


# ---------------------------------------------------------------- atomic save


def test_failure_while_writing_settings_keeps_the_previous_bundle(tmp_path, bundle, make_bundle, monkeypatch):
    target = tmp_path / "m"
    save_bundle(bundle, target)
    before = _outputs(load_bundle(target).model)

    def broken_dump(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_mod.json, "dump", broken_dump)
    with pytest.raises(ModelLoadError, match="No space left") as info:
        save_bundle(make_bundle(seed=9, threshold=0.9), target, overwrite=True)
    assert str(target) in str(info.value)
    monkeypatch.undo()
    loaded = load_bundle(target)
    assert loaded.settings.threshold == 0.5
    assert torch.equal(before, _outputs(loaded.model))
    assert _siblings(target) == [], "no temporary folders remain"


def test_failure_of_the_final_rename_restores_the_previous_bundle(tmp_path, bundle, make_bundle, monkeypatch):
    target = tmp_path / "m"
    save_bundle(bundle, target)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:  # the new bundle moving into place
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(bundle_mod.os, "replace", replace)
    with pytest.raises(ModelLoadError, match="Input/output error"):
        save_bundle(make_bundle(seed=9, threshold=0.9), target, overwrite=True)
    monkeypatch.undo()
    assert len(calls) == 3, "old moved aside, new failed, old moved back"
    loaded = load_bundle(target)
    assert loaded.settings.threshold == 0.5
    assert torch.equal(_outputs(bundle.model), _outputs(loaded.model))
    assert _siblings(target) == []


def test_non_os_failure_mid_save_leaves_nothing_behind(tmp_path, bundle, monkeypatch):
    target = tmp_path / "m"

    def broken_dump(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(bundle_mod.json, "dump", broken_dump)
    with pytest.raises(RuntimeError):
        save_bundle(bundle, target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_invalid_settings_are_refused_before_writing(tmp_path, make_bundle):
    b = make_bundle()
    b.settings.tile_size = 100
    with pytest.raises(ModelLoadError, match="tile_size 100"):
        save_bundle(b, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- load errors


def test_missing_path():
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_bundle("/no/such/model")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("/no/such/model")


@pytest.mark.parametrize("missing", [CONFIG_FILE, WEIGHTS_FILE])
def test_folder_without_config_or_weights(copy_of_saved, missing):
    (copy_of_saved / missing).unlink()
    with pytest.raises(ModelLoadError, match=missing.replace(".", r"\.")) as info:
        load_bundle(copy_of_saved)
    assert str(copy_of_saved) in str(info.value)


def test_empty_folder_and_plain_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not a model bundle"):
        load_bundle(tmp_path)
    f = tmp_path / "model.txt"
    f.write_text("x")
    with pytest.raises(ModelLoadError, match="not a bundle folder"):
        load_bundle(f)
    with pytest.raises(ModelLoadError, match=r"neither a bundle folder, a bioimage\.io package"):
        load_model(f)


@pytest.mark.parametrize("name", [CONFIG_FILE, SETTINGS_FILE])
@pytest.mark.parametrize("content", ['{"_model_class": "Unet", ', "", "[1, 2]", "\xff\xfe"])
def test_corrupt_json(copy_of_saved, name, content):
    (copy_of_saved / name).write_bytes(content.encode("latin-1"))
    with pytest.raises(ModelLoadError) as info:
        load_bundle(copy_of_saved)
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("tile_size", "big"), ("tile_size", 100), ("overlap", 2), ("threshold", None),
     ("normalization", "percentile"), ("normalization", {"kind": "minmax"}),
     ("normalization", {"kind": "zscore", "eps": 0}), ("channel_names", 3),
     ("postprocess", {"min_size": "x"}), ("format_version", "one"), ("provenance", "me")],
)
def test_settings_with_wrong_values_are_a_model_load_error(copy_of_saved, key, value):
    path = copy_of_saved / SETTINGS_FILE
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError) as info:
        load_bundle(copy_of_saved)
    assert SETTINGS_FILE in str(info.value)


def test_unknown_model_class_or_bad_config(copy_of_saved):
    path = copy_of_saved / CONFIG_FILE
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "_model_class": "NoSuchNet"}))
    with pytest.raises(ModelLoadError, match="NoSuchNet"):
        load_bundle(copy_of_saved)
    path.write_text(json.dumps({k: v for k, v in config.items() if k != "_model_class"}))
    with pytest.raises(ModelLoadError, match="_model_class"):
        load_bundle(copy_of_saved)
    path.write_text(json.dumps({**config, "encoder_name": "no-such-encoder"}))
    with pytest.raises(ModelLoadError, match="encoder 'no-such-encoder' is unknown"):
        load_bundle(copy_of_saved)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(copy_of_saved, damage):
    path = copy_of_saved / WEIGHTS_FILE
    data = path.read_bytes()
    path.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(4096), "empty": b""}[damage])
    with pytest.raises(ModelLoadError, match="safetensors") as info:
        load_bundle(copy_of_saved)
    assert str(path) in str(info.value)


def test_newer_format_version_names_the_version(copy_of_saved):
    path = copy_of_saved / SETTINGS_FILE
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 1
    data["provenance"]["segloop_version"] = "9.9.9"
    path.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError) as info:
        load_bundle(copy_of_saved)
    message = str(info.value)
    assert f"format {FORMAT_VERSION + 1}" in message and "9.9.9" in message and "upgrade" in message


def test_unknown_settings_keys_of_newer_minor_versions_are_ignored(copy_of_saved):
    path = copy_of_saved / SETTINGS_FILE
    data = json.loads(path.read_text())
    data["future_option"] = {"x": 1}
    data["normalization"]["future"] = True
    path.write_text(json.dumps(data))
    assert load_bundle(copy_of_saved).settings.tile_size == 256


def test_plain_smp_folder_without_settings_loads_with_defaults(copy_of_saved, bundle):
    (copy_of_saved / SETTINGS_FILE).unlink()
    loaded = load_bundle(copy_of_saved)
    assert loaded.settings == BundleSettings(channel_names=["channel 0"])
    assert torch.equal(_outputs(bundle.model), _outputs(loaded.model))


def test_weights_of_another_encoder_give_a_readable_mismatch_list(copy_of_saved):
    path = copy_of_saved / CONFIG_FILE
    config = json.loads(path.read_text())
    path.write_text(json.dumps({**config, "encoder_name": "tu-lcnet_075"}))
    with pytest.raises(ModelLoadError) as info:
        load_bundle(copy_of_saved)
    message = str(info.value)
    assert "do not fit" in message and "other shapes" in message
    assert "file (8, 1, 3, 3) vs model (16, 1, 3, 3)" in message
    assert "more" in message and len(message) < 1000, "long lists are shortened"


def test_weights_for_another_class_count(tmp_path, bundle):
    import segmentation_models_pytorch as smp

    two = smp.Unet("tu-lcnet_050", encoder_weights=None, in_channels=1, classes=2, **TINY)
    path = tmp_path / "two.pt"
    torch.save(two.state_dict(), path)
    with pytest.raises(ModelLoadError) as info:
        load_state_dict_model(path, "Unet", "tu-lcnet_050", 1, 1, **TINY)
    message = str(info.value)
    assert "segmentation_head.0.weight: file (2, 16, 3, 3) vs model (1, 16, 3, 3)" in message
    assert str(path) in message


def test_missing_and_unexpected_keys_are_listed(tmp_path, bundle):
    state = dict(bundle.model.state_dict())
    state.pop("segmentation_head.0.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "w.pt"
    torch.save(state, path)
    with pytest.raises(ModelLoadError) as info:
        load_state_dict_model(path, "Unet", "tu-lcnet_050", **TINY)
    message = str(info.value)
    assert "1 missing (segmentation_head.0.bias)" in message
    assert "1 unexpected (extra.weight)" in message


# ---------------------------------------------------------------- plain state dicts


@pytest.mark.parametrize("layout", ["plain", "module", "nested", "nested_module", "safetensors"])
def test_plain_state_dict_files_load(tmp_path, bundle, layout):
    state = bundle.model.state_dict()
    if "module" in layout:
        state = {f"module.{k}": v for k, v in state.items()}
    if layout.startswith("nested"):
        state = {"state_dict": state, "epoch": 3, "optimizer": {"lr": 0.1}}
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pt"
        torch.save(state, path)
    loaded = load_state_dict_model(path, "Unet", "tu-lcnet_050", **TINY)
    assert loaded.source == str(path)
    assert not loaded.model.training
    assert torch.equal(_outputs(bundle.model), _outputs(loaded.model))


def test_load_model_needs_architecture_for_a_state_dict(tmp_path, bundle):
    path = tmp_path / "w.pth"
    torch.save(bundle.model.state_dict(), path)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(path)


def test_load_model_with_architecture_and_encoder(tmp_path):
    import segmentation_models_pytorch as smp

    torch.manual_seed(3)
    net = smp.Unet("tu-lcnet_050", encoder_weights=None, in_channels=1, classes=1).eval()
    path = tmp_path / "w.pth"
    torch.save(net.state_dict(), path)
    loaded = load_model(path, "Unet", "tu-lcnet_050")
    assert torch.equal(_outputs(net), _outputs(loaded.model))


class _Payload:
    """An object whose unpickling would run code (writes a sentinel file)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (f"open({str(self.sentinel)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("where", ["top", "inside"])
def test_pickle_payload_is_refused_without_executing_anything(tmp_path, bundle, where):
    sentinel = tmp_path / "sentinel.txt"
    path = tmp_path / "evil.pt"
    if where == "top":
        torch.save(_Payload(sentinel), path)
    else:
        torch.save({"state_dict": bundle.model.state_dict(), "hook": _Payload(sentinel)}, path)
    with pytest.raises(ModelLoadError) as info:
        load_state_dict_model(path, "Unet", "tu-lcnet_050", **TINY)
    message = str(info.value)
    assert "Refused" in message and "never executes code" in message and str(path) in message
    assert not sentinel.exists(), "the payload ran"
    with pytest.raises(ModelLoadError, match="never executes code"):
        load_model(path, "Unet", "tu-lcnet_050")
    assert not sentinel.exists()


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage", "text"])
def test_corrupt_pt_files_give_a_readable_error(tmp_path, bundle, damage):
    path = tmp_path / "w.pt"
    torch.save(bundle.model.state_dict(), path)
    data = path.read_bytes()
    path.write_bytes({
        "empty": b"",
        "truncated": data[: len(data) // 2],
        "garbage": np.random.default_rng(0).integers(0, 256, 2048, dtype=np.uint8).tobytes(),
        "text": b"hello world, not a model",
    }[damage])
    with pytest.raises(ModelLoadError) as info:
        load_state_dict_model(path, "Unet", "tu-lcnet_050", **TINY)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    assert "never executes code" not in message, "a damaged file is not reported as a pickle payload"


@pytest.mark.parametrize("content", [[1, 2, 3], {}, torch.zeros(3), {"state_dict": {}}])
def test_pt_file_without_a_state_dict(tmp_path, content):
    path = tmp_path / "w.pt"
    torch.save(content, path)
    with pytest.raises(ModelLoadError, match=r"state dict|do not fit"):
        load_state_dict_model(path, "Unet", "tu-lcnet_050", **TINY)


def test_missing_state_dict_file(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_state_dict_model(tmp_path / "nope.pt", "Unet", "tu-lcnet_050")


# ---------------------------------------------------------------- network


@pytest.fixture
def no_network(monkeypatch):
    """Make every connection attempt and every Hugging Face download fail loudly."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import huggingface_hub

    for name in ("hf_hub_download", "snapshot_download"):
        if hasattr(huggingface_hub, name):
            monkeypatch.setattr(huggingface_hub, name, refuse)
    try:
        import huggingface_hub.file_download as fd

        monkeypatch.setattr(fd, "hf_hub_download", refuse)
    except (ImportError, AttributeError):  # pragma: no cover - other hub versions
        pass
    return attempts


def test_loading_never_touches_the_network(saved, bundle, tmp_path, no_network):
    loaded = load_bundle(saved)
    assert torch.equal(_outputs(bundle.model), _outputs(loaded.model))
    loaded = load_model(str(saved))
    path = tmp_path / "w.pt"
    torch.save(bundle.model.state_dict(), path)
    load_state_dict_model(path, "Unet", "tu-lcnet_050", **TINY)
    assert no_network == []


@pytest.mark.filterwarnings("ignore:For 'tu-'")
def test_imagenet_weights_offline_fail_without_trying_the_network(no_network, monkeypatch):
    """Offline, no connection (and so no network timeout) is even tried before the guidance."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        create_model("Unet", "tu-lcnet_050", 1, 1, encoder_weights="imagenet", **TINY)
    message = str(info.value)
    assert "no network" in message and "'none'" in message and "local model file" in message
    assert no_network == [], "no connection was even tried"
    assert os.environ["HF_HUB_OFFLINE"] == "1", "the environment is restored"


def test_create_model_without_weights_works_offline(no_network):
    b = create_model("Unet", "tu-lcnet_050", 2, 1, **TINY)
    assert b.in_channels == 2 and b.classes == 1 and b.settings.channel_names == ["channel 0", "channel 1"]
    assert b.settings.provenance["encoder_weights"] == "none"
    assert not b.model.training


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"architecture": "NoNet"}, "Unknown architecture"), ({"encoder": "nope"}, "Encoder 'nope' is unknown"),
     ({"classes": 33}, "at most 32 classes"), ({"in_channels": 0}, "at least 1")],
)
def test_create_model_errors(kwargs, match):
    args = {"architecture": "Unet", "encoder": "tu-lcnet_050", **kwargs}
    with pytest.raises(ModelLoadError, match=match):
        create_model(**args, **TINY)


def test_errors_are_segloop_errors():
    assert issubclass(ModelLoadError, SegloopError)


# ---------------------------------------------------------------- describe


def test_describe(make_bundle):
    b = make_bundle(
        threshold=0.42, object_size=20.0, scale_factor=0.8,
        postprocess=PostProcess(min_size=10, fill_holes=True),
        provenance={"note": "my cells", "seed": 3, "history": [{"epoch": 1}, {"epoch": 2, "loss": 0.1}]},
    )
    info = b.describe()
    assert info["architecture"] == "Unet" and info["encoder"] == "tu-lcnet_050"
    assert info["input channels"] == "1 (c0)" and info["classes"] == "1"
    assert info["threshold"] == "0.42"
    assert info["normalization"] == "percentile 1-99.8 per channel"
    assert "20" in info["scale"] and "0.8" in info["scale"]
    assert info["tiling"] == "256 px tiles, overlap 0.25"
    assert info["post-processing"] == "remove < 10 px, fill holes"
    assert info["note"] == "my cells" and info["seed"] == "3"
    assert info["training history"].startswith("2 entries")
    n = sum(p.numel() for p in b.model.parameters())
    n_enc = sum(p.numel() for p in b.model.encoder.parameters())
    assert info["parameters"] == f"{n / 1e6:.2f} M ({n_enc / 1e6:.2f} M in the encoder)"
    assert info["frozen"].startswith("nothing") and info["encoder weights"] == "none"
    assert all(isinstance(v, str) for v in info.values())
    json.dumps(info)


def test_describe_of_fixed_normalisation_and_no_postprocessing(make_bundle):
    b = make_bundle(normalization=Normalization(kind="fixed", mean=[0.5], std=[0.2]))
    info = b.describe()
    assert info["normalization"] == "fixed mean [0.5] std [0.2]"
    assert info["post-processing"] == "none"
    assert info["scale"] == "factor 1"


def test_save_into_an_impossible_folder_is_a_model_load_error(tmp_path, bundle):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(ModelLoadError, match="Could not save") as info:
        save_bundle(bundle, blocker / "sub" / "model")
    assert str(blocker / "sub" / "model") in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


def test_disk_full_while_writing_weights_keeps_the_previous_bundle(
    tmp_path, bundle, make_bundle, monkeypatch
):
    """safetensors reports a full disk as SafetensorError (seen on a full tmpfs), not OSError."""
    import safetensors.torch
    from safetensors import SafetensorError

    target = tmp_path / "m"
    save_bundle(bundle, target)

    def full(model, filename, *args, **kwargs):
        Path(filename).write_bytes(b"partial")
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_model", full)
    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(ModelLoadError, match="No space left on device"):
        save_bundle(make_bundle(seed=4, threshold=0.8), target, overwrite=True)
    monkeypatch.undo()
    loaded = load_bundle(target)
    assert loaded.settings.threshold == 0.5
    assert torch.equal(_outputs(bundle.model), _outputs(loaded.model))
    assert _siblings(target) == []


def test_pickle_payload_is_refused_without_suggesting_the_unsafe_loader(tmp_path):
    """torch's own message advises weights_only=False; segloop must never pass that on."""
    import pickle

    path = tmp_path / "weights.pt"
    with open(path, "wb") as fh:  # protocol 4 with a set: refused by torch's safe reader
        pickle.dump({"w": {1, 2}}, fh, protocol=4)
    with pytest.raises(ModelLoadError) as info:
        load_state_dict_model(path, "Unet", "resnet18")
    text = str(info.value)
    assert "not a readable PyTorch weights file" in text
    assert "weights_only" not in text and "will likely succeed" not in text

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"w": torch.zeros(1), "x": Payload()}, path)
    with pytest.raises(ModelLoadError) as info:
        load_state_dict_model(path, "Unet", "resnet18")
    text = str(info.value)
    assert "Refused to load" in text and "state_dict" in text
    assert str(path) in text
    assert "weights_only" not in text and "will likely succeed" not in text
