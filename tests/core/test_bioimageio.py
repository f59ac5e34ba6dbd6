"""bioimage.io packages: export tested by bioimageio.core, import of each weight format, refusals."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest
import torch
import yaml

from napari_segloop.core.bundle import load_model
from napari_segloop.core.bundle.from_bioimageio import ProbabilitiesAsLogits
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.events import run_to_end
from napari_segloop.core.export import Author, ExportMeta, export_model
from napari_segloop.core.inference.predict import predict_array
from napari_segloop.core.masks import PostProcess
from napari_segloop.core.models.registry import create_model
from napari_segloop.core.synthetic import make_nuclei
from tests.core.tiny_models import tiny_bundle

IMAGE = make_nuclei((96, 136), seed=5)[0]


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    """A tiny binary model with a non-default threshold and post-processing, and its package."""
    bundle = tiny_bundle(depth=3, tile_size=64, threshold=0.4,
                         postprocess=PostProcess(min_size=5, fill_holes=True))
    out = tmp_path_factory.mktemp("bio") / "tiny.zip"
    meta = ExportMeta(name="tiny nuclei", description="test model",
                      authors=[Author("Ada Lovelace", "Lab", "0000-0002-1825-0097")])
    result = run_to_end(export_model(bundle, "bioimageio", out, meta))
    return bundle, out, result


def _rewrite(src, dst, change):
    """Copy a package, changing its rdf.yaml with ``change(dict)``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                change(rdf)
                data = yaml.safe_dump(rdf).encode()
            zout.writestr(item.filename, data)
    return dst


def test_package_passes_bioimageio_model_test(binary):
    _, out, result = binary
    assert result.test.startswith("passed")
    for fmt in ("onnx", "pytorch_state_dict", "torchscript"):
        assert fmt in result.test
    assert result.parity["onnx"] < 1e-4 and result.parity["torchscript"] < 1e-4
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    assert {"weights.pt", "weights.onnx", "weights.torchscript.pt", "cover.png", "test_input.npy",
            "test_output.npy", "README.md"} <= names
    pre = [step["id"] for step in rdf["inputs"][0]["preprocessing"]]
    assert pre[:3] == ["ensure_dtype", "scale_range", "clip"]
    assert rdf["inputs"][0]["preprocessing"][1]["kwargs"]["max_percentile"] == 99.8
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "sigmoid"
    architecture = rdf["weights"]["pytorch_state_dict"]["architecture"]
    assert architecture["import_from"] == "segmentation_models_pytorch"
    assert rdf["weights"]["onnx"]["opset_version"] == 18
    assert rdf["authors"][0]["orcid"] == "0000-0002-1825-0097"
    assert rdf["config"]["segloop"]["threshold"] == 0.4
    assert "probability > **0.4**" in readme and "fill holes" in readme


@pytest.mark.parametrize("weights", ["pytorch_state_dict", "onnx", "torchscript"])
def test_round_trip_gives_the_same_probability_map(binary, weights):
    bundle, out, _ = binary
    imported = load_model(out, weights=weights, allow_torchscript=True)
    ref = predict_array(bundle, IMAGE, device="cpu")
    got = predict_array(imported, IMAGE, device="cpu")
    assert np.abs(got - ref).max() < (1e-6 if weights == "pytorch_state_dict" else 1e-4)
    s = imported.settings
    assert (s.threshold, s.postprocess.min_size, s.postprocess.fill_holes, s.tile_size) == (0.4, 5, True, 64)


def test_state_dict_import_can_be_fine_tuned(binary):
    from napari_segloop.core.models.registry import trainable_reason

    imported = load_model(binary[1])
    assert type(imported.model).__name__ == "Unet" and trainable_reason(imported.model) == ""
    onnx = load_model(binary[1], weights="onnx")
    assert "not fine-tune" in trainable_reason(onnx.model)
    assert imported.describe()["architecture"] == "Unet"
    assert onnx.describe()["architecture"] == "ONNX (Unet)"


def test_bioimageio_core_reproduces_segloop_predict(binary):
    """Without the halo padding bioimageio.core gives segloop's map; with it (what a consumer
    does: the input is padded by the output halo, 8 px here) the maps differ, most at the border
    (docs/sharing.md measures it on real images)."""
    from bioimageio.core import predict

    bundle, out, _ = binary
    image = IMAGE.astype(np.float32)
    ref = predict_array(bundle, image, device="cpu")
    got = predict(model=str(out), inputs=image[None, None]).members["probability"].data.values[0, 0]
    gap = np.abs(got - ref)
    assert gap[16:-16, 16:-16].max() < 2e-3
    assert gap.mean() < 1e-3
    from bioimageio.core import Sample, Tensor, create_prediction_pipeline, load_model_description
    from bioimageio.spec.model.v0_5 import TensorId

    pipeline = create_prediction_pipeline(load_model_description(out, perform_io_checks=False),
                                          weight_format="onnx")
    whole = predict_array(bundle, image, device="cpu", tile_size=136)  # one tile, as bioimageio.core
    axes = ("batch", "channel", "y", "x")
    sample = Sample(members={TensorId("input"): Tensor(image[None, None], dims=axes)}, stat={}, id="s")
    plain = pipeline.predict_sample_without_blocking(sample, skip_input_padding=True,
                                                     skip_output_cropping=True)
    assert np.abs(plain.members[TensorId("probability")].data.values[0, 0] - whole).max() < 1e-4


def test_package_without_segloop_settings_derives_them(binary, tmp_path):
    bundle, out, _ = binary
    plain = _rewrite(out, tmp_path / "plain.zip", lambda rdf: rdf["config"].pop("segloop"))
    imported = load_model(plain)
    norm = imported.settings.normalization
    assert (norm.kind, norm.low, norm.high, norm.clip, norm.clip_min) == ("percentile", 1.0, 99.8, True, -0.5)
    assert imported.settings.overlap == pytest.approx(2 * 8 / imported.settings.tile_size)
    assert imported.settings.tile_size == 256  # not in the description: segloop's default
    ref = predict_array(bundle, IMAGE, device="cpu", tile_size=256, overlap=imported.settings.overlap)
    assert np.abs(predict_array(imported, IMAGE, device="cpu") - ref).max() < 1e-6


def _arch_from_file(rdf):
    arch = rdf["weights"]["pytorch_state_dict"]["architecture"]
    arch.pop("import_from")
    arch["source"] = "README.md"
    arch["sha256"] = None


@pytest.mark.parametrize("change,message", [
    (_arch_from_file, "never executes code"),
    (lambda rdf: rdf["inputs"][0]["preprocessing"].insert(1, {"id": "zero_mean_unit_variance",
                                                             "kwargs": {"axes": ["y", "x"]}}),
     "zero_mean_unit_variance"),
    (lambda rdf: rdf["inputs"][0]["preprocessing"].__setitem__(
        slice(1, None), [{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x"]}}]),
     "zero_mean_unit_variance over x is not per image"),
    (lambda rdf: rdf["outputs"][0]["postprocessing"].insert(1, {"id": "binarize",
                                                               "kwargs": {"threshold": 0.5}}),
     "binarize"),
    (lambda rdf: [rdf["weights"].pop(k) for k in ("pytorch_state_dict", "onnx")]
     + [rdf["weights"]["torchscript"].pop("parent")], "--allow-torchscript"),
])
def test_what_cannot_be_honoured_is_refused_in_one_line(binary, tmp_path, change, message):
    bad = _rewrite(binary[1], tmp_path / "bad.zip", change)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model(bad, weights="pytorch_state_dict" if message == "never executes code" else "auto")
    assert "\n" not in str(info.value)


def test_unknown_architecture_falls_back_to_onnx(binary, tmp_path):
    def change(rdf):
        rdf["weights"]["pytorch_state_dict"]["architecture"]["import_from"] = "someones_package"

    other = _rewrite(binary[1], tmp_path / "other.zip", change)
    imported = load_model(other)
    assert "ONNX" in imported.describe()["architecture"]
    assert any("someones_package" in n for n in imported.notes)


def test_folder_packages_and_missing_files(binary, tmp_path):
    folder = tmp_path / "unpacked"
    shutil.unpack_archive(binary[1], folder)
    assert type(load_model(folder).model).__name__ == "Unet"
    (folder / "weights.pt").unlink()
    (folder / "weights.onnx").unlink()
    with pytest.raises(ModelLoadError):
        load_model(folder)


def test_zscore_normalisation_travels_both_ways(tmp_path):
    """Per-image z-scores export as zero_mean_unit_variance (bioimage.io's model test reproduces
    segloop's output with it) and a package with that step imports as the same normalisation."""
    from napari_segloop.core.bundle import BundleSettings, Normalization
    from napari_segloop.core.bundle import create_model as create_bundle

    torch.manual_seed(0)
    settings = BundleSettings(channel_names=["gray"], tile_size=64,
                              normalization=Normalization(kind="zscore", eps=1e-5))
    bundle = create_bundle("ClassicUNet", "plain", 1, 1, settings=settings, base_channels=4,
                           encoder_depth=2)
    out = tmp_path / "z.zip"
    result = run_to_end(export_model(bundle, "bioimageio", out))
    assert result.test.startswith("passed")
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    pre = rdf["inputs"][0]["preprocessing"]
    assert [step["id"] for step in pre][:2] == ["ensure_dtype", "zero_mean_unit_variance"]
    kwargs = pre[1]["kwargs"]  # PyYAML reads "1e-05" (no dot) back as a string
    assert kwargs["axes"] == ["y", "x"] and float(kwargs["eps"]) == 1e-5
    plain = _rewrite(out, tmp_path / "plain.zip", lambda rdf: rdf["config"].pop("segloop"))
    imported = load_model(plain)
    norm = imported.settings.normalization
    assert (norm.kind, norm.eps) == ("zscore", 1e-5)
    ref = predict_array(bundle, IMAGE, device="cpu", tile_size=256, overlap=imported.settings.overlap)
    assert np.abs(predict_array(imported, IMAGE, device="cpu") - ref).max() < 1e-6


def test_probabilities_as_logits_gives_the_probabilities_back():
    from napari_segloop.core.models.registry import probabilities

    x = torch.rand(2, 1, 8, 8)
    one = ProbabilitiesAsLogits(torch.nn.Sigmoid())
    assert torch.allclose(probabilities(one(x)), torch.sigmoid(x), atol=1e-6)
    many = ProbabilitiesAsLogits(torch.nn.Softmax(dim=1))
    y = torch.rand(2, 3, 8, 8)
    assert torch.allclose(probabilities(many(y)), torch.softmax(y, dim=1), atol=1e-6)


def test_multiclass_own_architecture_round_trip(tmp_path):
    torch.manual_seed(0)
    bundle = create_model("ClassicUNet", "plain", 1, 3, base_channels=4, encoder_depth=3)
    bundle.settings.tile_size = 64
    out = tmp_path / "classes.zip"
    result = run_to_end(export_model(bundle, "bioimageio", out, run_test=False))
    with zipfile.ZipFile(out) as z:
        rdf = yaml.safe_load(z.read("rdf.yaml"))
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "softmax"
    assert rdf["weights"]["pytorch_state_dict"]["architecture"]["import_from"].startswith("napari_segloop")
    assert "authors" in " ".join(result.notes)
    for weights in ("pytorch_state_dict", "onnx"):
        imported = load_model(out, weights=weights)
        assert imported.classes == 3 and imported.settings.output_kind == "classes"
        from napari_segloop.core.inference.predict import class_probability_head, predict_channels

        ref = run_to_end(predict_channels(bundle, IMAGE, None, None, class_probability_head, 3))
        got = run_to_end(predict_channels(imported, IMAGE, None, None, class_probability_head, 3))
        assert np.abs(got - ref).max() < 1e-4


def test_training_provenance_reaches_the_package():
    from napari_segloop.core.export.bioimageio_package import _training_details

    bundle = tiny_bundle(depth=3)
    bundle.settings.provenance = {"training": {"config": {"loss": "bce+dice", "lr": None, "batch_size": 8},
                                               "learning_rate": 0.0005, "steps": 120}}
    details = _training_details(bundle)
    assert details["loss_function"] == "bce+dice" and details["training_batch_size"] == 8
    assert details["initial_learning_rate"] == 0.0005 and "120 steps" in details["learning_rate_schedule"]
    assert "percentile normalisation 1-99.8" in details["training_preprocessing"]


def test_an_imported_state_dict_package_fine_tunes_and_saves_as_a_bundle(binary, tmp_path):
    from napari_segloop.core.bundle import save_bundle
    from napari_segloop.core.training import TrainConfig, TrainingPair, train

    imported = load_model(binary[1])
    image, labels = make_nuclei((96, 96), seed=8)
    config = TrainConfig(mode="dense", max_steps=4, batch_size=2, crop=64, patience=0, device="cpu",
                         threads=1, val_fraction=0.0)
    result = run_to_end(train(imported, [TrainingPair(image, labels, "nuclei")], config))
    assert result.steps == 4
    before = dict(imported.model.state_dict())
    assert any(not torch.equal(before[k], v) for k, v in result.bundle.model.state_dict().items())
    saved = load_model(save_bundle(result.bundle, tmp_path / "tuned"))
    assert type(saved.model).__name__ == "Unet"
