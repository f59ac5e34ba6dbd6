"""``segloop export`` and bioimage.io packages on the command line (predict, info)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.synthetic import make_nuclei


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def package(tiny_model_dir, tmp_path_factory):
    """The tiny bundle exported as a bioimage.io package (without the model test, run elsewhere)."""
    out = tmp_path_factory.mktemp("export") / "tiny.zip"
    assert main(["export", str(tiny_model_dir), "-o", str(out), "--no-test", "--author",
                 "Ada Lovelace; Lab", "--description", "nuclei"]) == EXIT_OK
    return out


def test_export_onnx_prints_its_parity(capsys, tiny_model_dir, tmp_path):
    out = tmp_path / "m.onnx"
    code, stdout, stderr = _run(capsys, "export", tiny_model_dir, "-f", "onnx", "-o", out, "--json")
    assert code == EXIT_OK, stderr
    result = json.loads(stdout)
    assert result["output"] == str(out) and result["parity"]["onnx"] < 1e-4
    code, _, stderr = _run(capsys, "export", tiny_model_dir, "-f", "onnx", "-o", out)
    assert code == EXIT_FAILED and "already exists" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,message", [
    (["--author", "Bob; lab; 12"], "ORCID"),
    (["--cite", "paper; nowhere"], "DOI"),
])
def test_bad_metadata_is_a_usage_error(capsys, tiny_model_dir, tmp_path, argv, message):
    code, _, stderr = _run(capsys, "export", tiny_model_dir, "-o", tmp_path / "m.zip", *argv)
    assert code == EXIT_USAGE and message in stderr
    assert not (tmp_path / "m.zip").exists()


def test_wrong_suffix_is_refused(capsys, tiny_model_dir, tmp_path):
    code, _, stderr = _run(capsys, "export", tiny_model_dir, "-f", "torchscript", "-o", tmp_path / "m.onnx")
    assert code == EXIT_FAILED and ".pt file" in stderr


def test_predict_with_a_package_equals_the_bundle(capsys, package, tiny_model_dir, tmp_path):
    image = make_nuclei((80, 112), seed=2)[0]
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, image)
    for model, name in ((tiny_model_dir, "a.tif"), (package, "b.tif")):
        code, _, stderr = _run(capsys, "predict", src, "--model", model, "-o", tmp_path / name, "-q",
                               "--device", "cpu")
        assert code == EXIT_OK, stderr
    a, b = tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif")
    assert np.abs(a - b).max() < 1e-6
    code, _, stderr = _run(capsys, "predict", src, "--model", package, "--weights-format", "onnx",
                           "-o", tmp_path / "c.tif", "-q", "--device", "cpu")
    assert code == EXIT_OK, stderr
    assert np.abs(tifffile.imread(tmp_path / "c.tif") - a).max() < 1e-4


def test_info_of_a_package_and_the_torchscript_refusal(capsys, package):
    code, stdout, _ = _run(capsys, "info", package, "--json")
    assert code == EXIT_OK and json.loads(stdout)["architecture"] == "Unet"
    code, _, stderr = _run(capsys, "info", package, "--weights-format", "torchscript")
    assert code == EXIT_FAILED and "--allow-torchscript" in stderr
    code, stdout, _ = _run(capsys, "info", package, "--weights-format", "torchscript",
                           "--allow-torchscript", "--json")
    assert code == EXIT_OK and json.loads(stdout)["architecture"] == "TorchScript"


def test_predict_with_the_onnx_engine(capsys, tiny_model_dir, tmp_path, monkeypatch):
    from napari_segloop.core.export import engine

    monkeypatch.setenv(engine.CACHE_ENV, str(tmp_path / "cache"))
    image = make_nuclei((80, 112), seed=4)[0]
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, image)
    outs = []
    for k, extra in enumerate(([], ["--engine", "onnx"], ["--engine", "onnx"])):
        out = tmp_path / f"p{k}.tif"
        code, _, stderr = _run(capsys, "predict", src, "--model", tiny_model_dir, "-o", out, "-q",
                               "--device", "cpu", *extra)
        assert code == EXIT_OK, stderr
        assert ("Exporting the model to ONNX once" in stderr) == (k == 1)
        outs.append(tifffile.imread(out))
    assert np.abs(outs[1] - outs[0]).max() < 1e-4 and np.array_equal(outs[1], outs[2])
