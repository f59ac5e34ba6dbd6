"""Outputs of the ``segloop`` commands: no output destroys an input, and a bad output (or an
explicit device that is not there) fails before the model is loaded or any image is read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_segloop.cli import EXIT_OK, EXIT_USAGE, main
from napari_segloop.cli import predict as cli_predict
from napari_segloop.core.evaluation import batch
from napari_segloop.core.inference import files as inference_files
from napari_segloop.core.io import guard


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("segloop: error:")]


def _one_error(err: str) -> str:
    assert "Traceback" not in err
    (line,) = _errors(err)
    return line.removeprefix("segloop: error: ")


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    """A probability map and its ground truth."""
    truth = np.zeros((32, 40), np.uint8)
    truth[8:20, 10:30] = 1
    prob = np.clip(truth * 0.7 + 0.1, 0, 1).astype(np.float32)
    p, t = tmp_path / "pred.tif", tmp_path / "truth.tif"
    tifffile.imwrite(p, prob)
    tifffile.imwrite(t, truth)
    return p, t


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a model is loaded, an image predicted or a pair evaluated."""
    calls: list[str] = []

    def forbidden(name):
        def call(*args, **kwargs):
            calls.append(name)
            raise AssertionError(f"{name} was called before the outputs were checked")

        return call

    monkeypatch.setattr(cli_predict, "load_model", forbidden("load_model"))
    monkeypatch.setattr(inference_files, "predict_file", forbidden("predict_file"))
    monkeypatch.setattr(batch, "evaluate_files", forbidden("evaluate_files"))
    return calls


def _deny_writes(monkeypatch, folder: Path) -> None:
    """A read-only ``folder``, as ``os.access`` reports it (root ignores real permissions)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        return False if Path(path) == folder else real(path, mode, *args, **kwargs)

    monkeypatch.setattr(guard.os, "access", access)


def _evaluate(capsys, *args) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _predict(capsys, *args) -> tuple[int, str, str]:
    code = main(["predict", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


# ---------------------------------------------------------------- evaluate --csv


def test_csv_over_the_ground_truth_is_refused_and_the_truth_survives(pair, capsys, no_work):
    p, t = pair
    before = t.read_bytes()
    code, out, err = _evaluate(capsys, "-p", p, "-t", t, "--csv", t)
    assert code == EXIT_USAGE and out == ""
    assert _one_error(err) == f"--csv {t} is one of the inputs (the ground truth); choose another file name."
    assert t.read_bytes() == before
    assert not no_work


def test_csv_over_the_prediction_or_the_region_is_refused(pair, tmp_path, capsys, no_work):
    p, t = pair
    region = tmp_path / "region.npy"
    np.save(region, np.ones((32, 40), np.uint8))
    for target, what in ((p, "the prediction"), (region, "the region")):
        before = target.read_bytes()
        code, _, err = _evaluate(capsys, "-p", p, "-t", t, "--region", region, "--csv", target)
        assert code == EXIT_USAGE
        assert _one_error(err) == f"--csv {target} is one of the inputs ({what}); choose another file name."
        assert target.read_bytes() == before


def test_csv_as_a_hard_link_or_another_spelling_of_the_truth(pair, tmp_path, capsys, no_work):
    p, t = pair
    before = t.read_bytes()
    link = tmp_path / "metrics.csv"
    os.link(t, link)
    code, _, err = _evaluate(capsys, "-p", p, "-t", t, "--csv", link)
    assert code == EXIT_USAGE
    assert _one_error(err) == (f"--csv {link} is one of the inputs (the ground truth, {t}); "
                               "choose another file name.")
    (tmp_path / "sub").mkdir()
    spelled = tmp_path / "sub" / ".." / "truth.tif"
    code, _, err = _evaluate(capsys, "-p", p, "-t", t, "--csv", spelled)
    assert code == EXIT_USAGE and "is one of the inputs (the ground truth" in _one_error(err)
    assert t.read_bytes() == before


def test_csv_over_a_truth_of_a_folder_or_inside_the_model(tmp_path, capsys, no_work):
    preds, truths = tmp_path / "preds", tmp_path / "truths"
    preds.mkdir()
    truths.mkdir()
    tifffile.imwrite(preds / "a_probability.tif", np.full((8, 8), 0.7, np.float32))
    tifffile.imwrite(truths / "a.tif", np.ones((8, 8), np.uint8))
    code, _, err = _evaluate(capsys, "-p", preds, "-t", truths, "--csv", truths / "a.tif")
    assert code == EXIT_USAGE
    assert _one_error(err).startswith(f"--csv {truths / 'a.tif'} is one of the inputs (a ground truth in "
                                      f"{truths})")
    model = tmp_path / "model"
    model.mkdir()
    (model / "segloop.json").write_text("{}")
    code, _, err = _evaluate(capsys, "-p", preds, "-t", truths, "--model", model, "--threshold", "auto",
                             "--csv", model / "metrics.csv")
    assert code == EXIT_USAGE
    assert _one_error(err) == (f"--csv {model / 'metrics.csv'} is inside one of the inputs (the model, "
                               f"{model}); choose another file name.")
    assert sorted(p.name for p in model.iterdir()) == ["segloop.json"]


@pytest.mark.parametrize(("name", "message"), [
    ("missing/m.csv", "the folder {tmp}/missing does not exist."),
    ("m.tif", ".tif is an image format, not CSV; choose a name ending in .csv."),
    ("m.pt", ".pt is a model format, not CSV; choose a name ending in .csv."),
    ("results/", "is a folder; give a file name."),
])
def test_a_bad_csv_fails_before_the_evaluation(pair, tmp_path, capsys, no_work, name, message):
    p, t = pair
    code, _, err = _evaluate(capsys, "-p", p, "-t", t, "--csv", f"{tmp_path}/{name}")
    assert code == EXIT_USAGE
    assert _one_error(err).endswith(message.format(tmp=tmp_path))
    assert not no_work, "nothing was evaluated"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["pred.tif", "truth.tif"]


def test_a_read_only_csv_folder_fails_before_the_evaluation(pair, tmp_path, capsys, no_work, monkeypatch):
    p, t = pair
    folder = tmp_path / "ro"
    folder.mkdir()
    _deny_writes(monkeypatch, folder)
    code, _, err = _evaluate(capsys, "-p", p, "-t", t, "--csv", folder / "m.csv")
    assert code == EXIT_USAGE
    assert _one_error(err) == f"--csv {folder / 'm.csv'}: the folder {folder} is not writable."


def test_a_good_csv_name_is_written(pair, tmp_path, capsys):
    p, t = pair
    out = tmp_path / "metrics.txt"
    code, _, err = _evaluate(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--csv", out)
    assert code == EXIT_OK, err
    assert out.read_text().startswith("name,")


# ---------------------------------------------------------------- predict -o


@pytest.fixture
def image(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    path = folder / "a.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (24, 24), dtype=np.uint8))
    return path


@pytest.mark.parametrize(("output", "message"), [
    ("x.jpg", "-o {tmp}/x.jpg: cannot write .jpg; use .tif, .tiff or .npy."),
    ("x.png", "-o {tmp}/x.png: cannot write .png; use .tif, .tiff or .npy."),
    ("missing_dir/x.tif", "-o {tmp}/missing_dir/x.tif: the folder {tmp}/missing_dir does not exist."),
    ("in/a.tif", "-o {tmp}/in/a.tif is one of the inputs (an input image); choose another file name."),
])
def test_a_bad_output_fails_before_the_model_is_loaded(image, tmp_path, capsys, no_work, output, message):
    before = image.read_bytes()
    code, _, err = _predict(capsys, image, "-m", "default", "-o", f"{tmp_path}/{output}")
    assert code == EXIT_USAGE
    assert _one_error(err) == message.format(tmp=tmp_path)
    assert not no_work
    assert image.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["in"]


def test_a_png_mask_output_is_accepted_by_the_check(image, tmp_path, capsys, no_work):
    with pytest.raises(AssertionError, match="load_model was called"):
        _predict(capsys, image, "-o", tmp_path / "mask.png", "--threshold", "0.5")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root (and Windows) ignore a folder's write permission")
def test_a_read_only_output_folder_fails_before_the_model_is_loaded(image, tmp_path, capsys, no_work):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        code, _, err = _predict(capsys, image, "-o", folder / "p.tif")
    finally:
        folder.chmod(0o700)
    assert code == EXIT_USAGE
    assert _one_error(err) == f"-o {folder / 'p.tif'}: the folder {folder} is not writable."
    assert not no_work


def test_a_read_only_output_folder_as_root(image, tmp_path, capsys, no_work, monkeypatch):
    """Root ignores permissions: the same refusal through a patched ``os.access``."""
    folder = tmp_path / "ro"
    folder.mkdir()
    _deny_writes(monkeypatch, folder)
    code, _, err = _predict(capsys, image, "-o", folder / "p.tif")
    assert code == EXIT_USAGE
    assert _one_error(err) == f"-o {folder / 'p.tif'}: the folder {folder} is not writable."
    code, _, err = _predict(capsys, image, image, "-o", folder / "new" / "")
    assert code == EXIT_USAGE and "is not writable" in _one_error(err)
    assert not no_work and list(folder.iterdir()) == []


def test_an_output_inside_the_model_bundle_is_refused(image, tmp_path, capsys, no_work):
    model = tmp_path / "model"
    model.mkdir()
    (model / "segloop.json").write_text("{}")
    code, _, err = _predict(capsys, image, "-m", model, "-o", model / "p.tif")
    assert code == EXIT_USAGE
    assert _one_error(err) == (f"-o {model / 'p.tif'} is inside one of the inputs (the model, {model}); "
                               "choose another file name.")
    assert sorted(p.name for p in model.iterdir()) == ["segloop.json"]


def test_a_folder_output_that_would_overwrite_a_later_input(image, capsys, no_work):
    """``a.tif`` would write ``a_probability.tif``, which is the second input, not yet read."""
    clash = image.parent / "a_probability.tif"
    clash.write_bytes(image.read_bytes())
    before = clash.read_bytes()
    code, _, err = _predict(capsys, image, clash, "-o", image.parent)
    assert code == EXIT_USAGE
    assert _one_error(err) == (f"the output {clash} is one of the inputs (an input image); "
                               "choose another file name.")
    assert clash.read_bytes() == before
    assert not no_work


def test_a_hard_linked_output_is_refused(image, tmp_path, capsys, no_work):
    link = tmp_path / "p.tif"
    os.link(image, link)
    code, _, err = _predict(capsys, image, "-o", link)
    assert code == EXIT_USAGE
    assert _one_error(err) == (f"-o {link} is one of the inputs (an input image, {image}); "
                               "choose another file name.")


def test_names_that_differ_only_in_case_get_distinct_outputs(tmp_path):
    paths = cli_predict.output_paths([Path("in/a.tif"), Path("in/A.tif")], tmp_path, ".tif", "mask",
                                     create=False)
    assert [p.name for p in paths] == ["a_mask.tif", "A_mask_2.tif"]
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- predict --device


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_an_explicit_device_that_is_not_there_fails_before_the_model(image, tmp_path, capsys, no_work,
                                                                     no_gpu, device):
    code, _, err = _predict(capsys, image, "-o", tmp_path / "p.tif", "--device", device)
    assert code == EXIT_USAGE
    assert _one_error(err) == (f"Device {device} is not available (no CUDA GPU found); "
                               "use --device auto or cpu.")
    assert "CPU instead" not in err
    assert not no_work
    assert not (tmp_path / "p.tif").exists()


def test_the_installed_command_exits_non_zero_for_a_missing_gpu(image, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "napari_segloop.cli", "predict", str(image),
                           "-o", str(tmp_path / "p.tif"), "--device", "cuda"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == EXIT_USAGE, proc.stderr
    assert proc.stderr.strip() == ("segloop: error: Device cuda is not available (no CUDA GPU found); "
                                   "use --device auto or cpu.")
    assert not (tmp_path / "p.tif").exists()
