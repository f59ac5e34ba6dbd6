"""The ``segloop`` command: outputs, per-file errors, exit codes, and never a traceback for user errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_segloop import __version__
from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.bundle import BundleSettings, PostProcess, create_model, save_bundle
from napari_segloop.core.masks import apply_threshold, postprocess

THRESHOLD = 0.45
POST = PostProcess(min_size=6, fill_holes=True, instances=True)


def _blobs(shape, seed) -> np.ndarray:
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = r.normal(10, 3, shape)
    for _ in range(8):
        cy, cx, rad = r.uniform(0, shape[0]), r.uniform(0, shape[1]), r.uniform(3, 9)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] += 60
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny test model runs fastest on one thread (two were far slower on busy shared cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny bundle whose probabilities span (0, 1), with a stored threshold and post-processing."""
    torch.manual_seed(0)
    settings = BundleSettings(channel_names=["gray"], tile_size=64, threshold=THRESHOLD, postprocess=POST)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, settings=settings,
                          encoder_depth=3, decoder_channels=(16, 16, 16))
    with torch.no_grad():
        bundle.model.segmentation_head[0].weight.mul_(300)
        bundle.model.segmentation_head[0].bias.zero_()
    return save_bundle(bundle, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def images(tmp_path) -> dict[str, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    paths = {}
    a = _blobs((45, 67), 1)
    paths["a"] = folder / "a.tif"
    tifffile.imwrite(paths["a"], a)
    paths["b"] = folder / "b.npy"
    np.save(paths["b"], _blobs((33, 40), 2).astype(np.uint16) * 100)
    paths["c"] = folder / "c.png"
    import imageio.v3 as iio

    iio.imwrite(paths["c"], _blobs((50, 31), 3))
    return paths


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err
    # Only our own lines: "segloop: ..." messages and "input -> output" reports.
    lines = [line for line in err.splitlines() if line.strip()]
    assert all(line.startswith("segloop: ") or " -> " in line for line in lines), err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("segloop: error:")]


# ---------------------------------------------------------------- predict


def test_predict_one_file_writes_a_float32_probability_tiff(capsys, model_dir, images, tmp_path):
    out = tmp_path / "prob.tif"
    code, _, err = run(capsys, "predict", images["a"], "--model", model_dir, "-o", out)
    assert code == EXIT_OK, err
    prob = tifffile.imread(out)
    assert prob.dtype == np.float32 and prob.shape == (45, 67)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    assert prob.std() > 0.05, "a real map, not a constant"
    assert f"{images['a']} -> {out}" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "prob.tif"], "no temporary file left"


def test_several_models_predict_as_an_ensemble(capsys, model_dir, images, tmp_path):
    torch.manual_seed(5)
    other = create_model("ClassicUNet", None, base_channels=4,
                         settings=BundleSettings(channel_names=["gray"], tile_size=64))
    other_dir = save_bundle(other, tmp_path / "classic")
    outs = {}
    for name, models in {"one": [model_dir], "two": [other_dir], "both": [model_dir, other_dir]}.items():
        out = tmp_path / f"{name}.tif"
        args = [a for m in models for a in ("--model", m)]
        code, _, err = run(capsys, "predict", images["a"], *args, "-o", out)
        assert code == EXIT_OK, err
        outs[name] = tifffile.imread(out)
    np.testing.assert_allclose(outs["both"], (outs["one"] + outs["two"]) / 2, atol=1e-6)
    # A model may not be overwritten by an output, whichever place it has in the ensemble.
    code, _, err = run(capsys, "predict", images["a"], "--model", model_dir, "--model", other_dir,
                       "-o", other_dir / "model.safetensors")
    assert code == EXIT_USAGE and "model" in _errors(err)[0]


def test_an_ensemble_of_models_of_different_tasks_is_one_line(capsys, model_dir, images, tmp_path):
    two = create_model("ClassicUNet", None, in_channels=2, base_channels=4)
    two_dir = save_bundle(two, tmp_path / "two")
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-m", two_dir,
                       "-o", tmp_path / "x.tif")
    assert code == EXIT_FAILED
    (line,) = _errors(err)
    assert "input channel" in line
    _no_traceback(err)


def test_quiet_prints_nothing(capsys, model_dir, images, tmp_path):
    code, stdout, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "p.tif", "-q")
    assert code == EXIT_OK
    assert stdout == "" and err == ""


def test_threshold_writes_a_uint8_mask(capsys, model_dir, images, tmp_path):
    run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "prob.tif", "-q")
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "mask.tif",
                       "--threshold", "0.5", "-q")
    assert code == EXIT_OK, err
    mask = tifffile.imread(tmp_path / "mask.tif")
    prob = tifffile.imread(tmp_path / "prob.tif")
    assert mask.dtype == np.uint8 and mask.shape == prob.shape
    np.testing.assert_array_equal(mask, (prob > 0.5).astype(np.uint8))
    assert 0 < mask.sum() < mask.size


def test_threshold_auto_uses_the_bundle_threshold_and_postprocessing(capsys, model_dir, images, tmp_path):
    run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "prob.tif", "-q")
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "auto.tif",
                       "--threshold", "auto", "-q")
    assert code == EXIT_OK, err
    prob = tifffile.imread(tmp_path / "prob.tif")
    labels = tifffile.imread(tmp_path / "auto.tif")
    expected = postprocess(apply_threshold(prob, THRESHOLD), POST)
    assert labels.dtype == expected.dtype == np.int32
    np.testing.assert_array_equal(labels, expected)
    assert labels.max() >= 1


@pytest.mark.parametrize("value", ["1.5", "-0.1", "half"])
def test_bad_threshold_is_a_usage_error(capsys, model_dir, images, tmp_path, value):
    with pytest.raises(SystemExit) as info:
        main(["predict", str(images["a"]), "-m", str(model_dir), "-o", str(tmp_path / "x.tif"),
              "--threshold", value])
    assert info.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "--threshold" in err and "Traceback" not in err


def test_a_folder_gives_one_output_per_input(capsys, model_dir, images, tmp_path):
    out = tmp_path / "out"
    (images["a"].parent / "notes.txt").write_text("not an image")
    code, _, err = run(capsys, "predict", images["a"].parent, "-m", model_dir, "-o", out)
    assert code == EXIT_OK, err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_probability.tif", "b_probability.tif", "c_probability.tif"]
    assert tifffile.imread(out / "a_probability.tif").shape == (45, 67)
    assert tifffile.imread(out / "b_probability.tif").shape == (33, 40)
    assert tifffile.imread(out / "c_probability.tif").shape == (50, 31)
    assert "notes.txt: skipped" in err
    _no_traceback(err)


def test_several_files_with_a_mask_threshold(capsys, model_dir, images, tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    code, _, err = run(capsys, "predict", images["a"], images["c"], "-m", model_dir, "-o", out,
                       "--threshold", "0.5", "-q")
    assert code == EXIT_OK, err
    assert sorted(p.name for p in out.iterdir()) == ["a_mask.tif", "c_mask.tif"]
    assert tifffile.imread(out / "c_mask.tif").dtype == np.uint8


def test_same_names_do_not_overwrite_each_other(capsys, model_dir, images, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(images["a"], other / "a.tif")
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", images["a"], other / "a.tif", "-m", model_dir, "-o", out, "-q")
    assert code == EXIT_OK, err
    assert sorted(p.name for p in out.iterdir()) == ["a_probability.tif", "a_probability_2.tif"]


def test_a_stack_gives_a_stack(capsys, model_dir, tmp_path):
    stack = np.stack([_blobs((40, 50), s) for s in range(3)])
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, stack, photometric="minisblack")
    code, _, err = run(capsys, "predict", src, "-m", model_dir, "-o", tmp_path / "p.tif", "-q")
    assert code == EXIT_OK, err
    prob = tifffile.imread(tmp_path / "p.tif")
    assert prob.shape == (3, 40, 50) and prob.dtype == np.float32


@pytest.mark.parametrize("objects", ["3d", "2d", "auto"])
def test_threshold_auto_post_processes_stacks_in_3d_or_2d(capsys, model_dir, tmp_path, objects):
    stack = np.stack([_blobs((40, 50), 1)] * 4)  # the same objects in every slice
    src, series = tmp_path / "stack.tif", tmp_path / "series.tif"
    tifffile.imwrite(src, stack, photometric="minisblack")
    tifffile.imwrite(series, stack, photometric="minisblack", metadata={"axes": "TYX"})
    run(capsys, "predict", src, "-m", model_dir, "-o", tmp_path / "prob.tif", "-q")
    prob = tifffile.imread(tmp_path / "prob.tif")
    for path, dims in ((src, 2 if objects == "2d" else 3), (series, 3 if objects == "3d" else 2)):
        out = tmp_path / f"{path.stem}_{objects}.tif"
        code, _, err = run(capsys, "predict", path, "-m", model_dir, "-o", out, "--threshold", "auto",
                           "--objects", objects, "-q")
        assert code == EXIT_OK, err
        labels = tifffile.imread(out)
        np.testing.assert_array_equal(labels, postprocess(apply_threshold(prob, THRESHOLD), POST,
                                                          object_dims=dims))
        per_slice = postprocess(apply_threshold(prob[0], THRESHOLD), POST).max()
        assert labels.max() == (per_slice if dims == 3 else 4 * per_slice) > 0


def test_one_bad_file_among_good_ones(capsys, model_dir, images, tmp_path):
    folder = images["a"].parent
    bad = folder / "broken.tif"
    bad.write_bytes(b"definitely not a tiff" * 20)
    missing = tmp_path / "missing.png"
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", folder, missing, "-m", model_dir, "-o", out)
    assert code == EXIT_FAILED
    assert sorted(p.name for p in out.iterdir()) == ["a_probability.tif", "b_probability.tif",
                                                     "c_probability.tif"]
    errors = _errors(err)
    assert len([e for e in errors if str(bad) in e]) == 1
    assert len([e for e in errors if str(missing) in e]) == 1
    assert errors[-1] == "segloop: error: 2 of 5 input(s) failed."
    assert len(errors) == 3
    _no_traceback(err)


def test_channel_mismatch_is_one_clear_line(capsys, model_dir, tmp_path):
    import imageio.v3 as iio

    src = tmp_path / "rgb.png"
    iio.imwrite(src, np.zeros((20, 30, 3), np.uint8))
    code, _, err = run(capsys, "predict", src, "-m", model_dir, "-o", tmp_path / "p.tif", "-q")
    assert code == EXIT_FAILED
    errors = _errors(err)
    assert str(src) in errors[0] and "expects 1 input channel" in errors[0] and "3 channels" in errors[0]
    assert not (tmp_path / "p.tif").exists()
    _no_traceback(err)
    # an explicit conversion makes it work
    code, _, err = run(capsys, "predict", src, "-m", model_dir, "-o", tmp_path / "p.tif", "-q",
                       "--convert", "gray")
    assert code == EXIT_OK, err
    assert tifffile.imread(tmp_path / "p.tif").shape == (20, 30)
    code, _, err = run(capsys, "predict", src, "-m", model_dir, "-o", tmp_path / "p1.tif", "-q",
                       "--channel", "1")
    assert code == EXIT_OK, err
    assert tifffile.imread(tmp_path / "p1.tif").shape == (20, 30)


def test_missing_model(capsys, images, tmp_path):
    missing = tmp_path / "no-model"
    code, _, err = run(capsys, "predict", images["a"], "-m", missing, "-o", tmp_path / "p.tif")
    assert code == EXIT_FAILED
    assert _errors(err) == [f"segloop: error: Model not found: {missing} does not exist."]
    _no_traceback(err)
    assert not (tmp_path / "p.tif").exists()


@pytest.mark.parametrize("damage", ["weights", "config", "settings"])
def test_corrupt_model(capsys, model_dir, images, tmp_path, damage):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    name = {"weights": "model.safetensors", "config": "config.json", "settings": "segloop.json"}[damage]
    data = (broken / name).read_bytes()
    (broken / name).write_bytes(data[: len(data) // 3])
    code, _, err = run(capsys, "predict", images["a"], "-m", broken, "-o", tmp_path / "p.tif")
    assert code == EXIT_FAILED
    errors = _errors(err)
    assert len(errors) == 1 and name in errors[0]
    _no_traceback(err)


def test_pickle_payload_model_is_refused(capsys, images, tmp_path):
    sentinel = tmp_path / "ran.txt"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(sentinel)!r}, 'w').write('x')",))

    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, evil)
    code, _, err = run(capsys, "predict", images["a"], "-m", evil, "--arch", "Unet", "--encoder",
                       "tu-lcnet_050", "-o", tmp_path / "p.tif")
    assert code == EXIT_FAILED
    assert "never executes code" in err
    assert not sentinel.exists()
    _no_traceback(err)


def test_output_in_a_missing_folder(capsys, model_dir, images, tmp_path):
    out = tmp_path / "no" / "such" / "p.tif"
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", out)
    assert code == EXIT_USAGE, "refused before the model is loaded"
    assert _errors(err) == [f"segloop: error: -o {out}: the folder {out.parent} does not exist."]
    _no_traceback(err)


def test_output_folder_that_cannot_be_created(capsys, model_dir, images, tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    code, _, err = run(capsys, "predict", images["a"], images["b"], "-m", model_dir, "-o", blocker / "out")
    assert code == EXIT_USAGE, "refused before the model is loaded"
    assert len(_errors(err)) == 1 and f"{blocker} is not a folder" in err
    _no_traceback(err)


def test_unwritable_output(capsys, model_dir, images, tmp_path, monkeypatch):
    """A read-only folder (simulated: root ignores permissions): clear error per file."""
    from napari_segloop.core.io import images as imageio

    def denied(src, dst):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(imageio.os, "replace", denied)
    out = tmp_path / "out"
    code, _, err = run(capsys, "predict", images["a"], images["b"], "-m", model_dir, "-o", out)
    assert code == EXIT_FAILED
    errors = _errors(err)
    assert len(errors) == 3 and all("Permission denied" in e for e in errors[:2])
    assert list(out.iterdir()) == [], "no partial or temporary file"
    _no_traceback(err)


def test_several_inputs_and_an_existing_file_as_output(capsys, model_dir, images, tmp_path):
    f = tmp_path / "exists.tif"
    f.write_bytes(b"x")
    code, _, err = run(capsys, "predict", images["a"], images["b"], "-m", model_dir, "-o", f)
    assert code == EXIT_USAGE
    assert len(_errors(err)) == 1 and "output folder" in err


def test_no_images_found(capsys, model_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(capsys, "predict", empty, "-m", model_dir, "-o", tmp_path / "out")
    assert code == EXIT_FAILED
    assert "no input images" in err
    _no_traceback(err)


@pytest.mark.parametrize(("args", "match"), [(["--tile", "100"], "positive multiple of"),
                                              (["--overlap", "0.95"], "Overlap"),
                                              (["--device", "tpu"], "device")])
def test_bad_options_are_one_line(capsys, model_dir, images, tmp_path, args, match):
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "p.tif", *args)
    assert code != EXIT_OK
    assert len(_errors(err)) >= 1 and match in err
    _no_traceback(err)


def test_output_without_suffix_for_one_input(capsys, model_dir, images, tmp_path):
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", tmp_path / "result")
    assert code == EXIT_USAGE and ".tif" in err


def test_npy_output(capsys, model_dir, images, tmp_path):
    code, _, err = run(capsys, "predict", images["b"], "-m", model_dir, "-o", tmp_path / "p.npy", "-q")
    assert code == EXIT_OK, err
    assert np.load(tmp_path / "p.npy").shape == (33, 40)


# ---------------------------------------------------------------- info, version, usage


def test_info(capsys, model_dir):
    code, out, err = run(capsys, "info", model_dir)
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert any(line.startswith("architecture") and "Unet" in line for line in lines)
    assert any(line.startswith("encoder") and "tu-lcnet_050" in line for line in lines)
    assert any(line.startswith("threshold") and "0.45" in line for line in lines)
    assert any(line.startswith("post-processing") and "instances" in line for line in lines)


def test_info_json(capsys, model_dir):
    code, out, _ = run(capsys, "info", model_dir, "--json")
    assert code == EXIT_OK
    info = json.loads(out)
    assert info["architecture"] == "Unet" and info["input channels"] == "1 (gray)"
    assert info["source"] == str(model_dir)
    assert info["segloop version"] == __version__


def test_info_of_a_missing_or_corrupt_model(capsys, tmp_path):
    code, out, err = run(capsys, "info", tmp_path / "nope")
    assert code == EXIT_FAILED and out == ""
    assert len(_errors(err)) == 1
    _no_traceback(err)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage" * 50)
    code, _, err = run(capsys, "info", bad, "--arch", "Unet", "--encoder", "tu-lcnet_050")
    assert code == EXIT_FAILED and str(bad) in err
    _no_traceback(err)


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"napari-segloop {__version__}"


def test_no_command_prints_help(capsys):
    assert main([]) == EXIT_USAGE
    assert "predict" in capsys.readouterr().err


# ---------------------------------------------------------------- the installed command


def _console_script() -> str:
    script = Path(sys.executable).with_name("segloop")
    if script.exists():
        return str(script)
    found = shutil.which("segloop")
    if found is None:  # pragma: no cover - not installed
        pytest.skip("the segloop console script is not installed")
    return found


def test_installed_console_script(model_dir, images, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"nope")
    proc = subprocess.run(
        [_console_script(), "predict", str(images["a"]), str(bad), "--model", str(model_dir),
         "-o", str(out), "--threshold", "0.5"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode == EXIT_FAILED, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"segloop: error: {bad}" in proc.stderr
    mask = tifffile.imread(out / "a_mask.tif")
    assert mask.dtype == np.uint8 and mask.shape == (45, 67)


def test_an_unavailable_gpu_is_one_error_and_nothing_is_written(capsys, model_dir, images, tmp_path, no_gpu):
    code, _, err = run(capsys, "predict", images["a"], images["b"], "-m", model_dir, "-o", tmp_path / "o",
                       "--device", "cuda")
    assert code == EXIT_USAGE
    assert _errors(err) == ["segloop: error: Device cuda is not available (no CUDA GPU found); "
                            "use --device auto or cpu."]
    assert "CPU instead" not in err
    assert not (tmp_path / "o").exists()
    _no_traceback(err)


def test_auto_without_a_gpu_uses_the_cpu_silently(capsys, model_dir, images, tmp_path, no_gpu):
    code, _, err = run(capsys, "predict", images["a"], images["b"], "-m", model_dir, "-o", tmp_path / "o",
                       "--device", "auto", "-q")
    assert code == EXIT_OK, err
    assert "CPU" not in err and not _errors(err)
    assert len(list((tmp_path / "o").iterdir())) == 2


def test_the_input_is_never_overwritten(capsys, model_dir, images, tmp_path):
    before = images["a"].read_bytes()
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", images["a"])
    assert code == EXIT_USAGE
    assert _errors(err) == [f"segloop: error: -o {images['a']} is one of the inputs (an input image); "
                            "choose another file name."]
    assert images["a"].read_bytes() == before
    _no_traceback(err)


def test_an_output_name_that_is_another_input_is_refused(capsys, model_dir, images, tmp_path):
    folder = images["a"].parent
    clash = folder / "a_probability.tif"
    shutil.copy(images["a"], clash)
    before = clash.read_bytes()
    code, _, err = run(capsys, "predict", images["a"], clash, "-m", model_dir, "-o", folder, "-q")
    assert code == EXIT_USAGE, "refused before any image is predicted"
    assert len(_errors(err)) == 1 and f"the output {clash} is one of the inputs" in err
    assert clash.read_bytes() == before, "the second input was not overwritten before being read"
    assert not (folder / "a_probability_probability.tif").exists()
    _no_traceback(err)


def test_output_with_a_trailing_slash_is_a_folder(capsys, model_dir, images, tmp_path):
    out = tmp_path / "new_folder"
    code, _, err = run(capsys, "predict", images["a"], "-m", model_dir, "-o", f"{out}{os.sep}", "-q")
    assert code == EXIT_OK, err
    assert out.is_dir() and [p.name for p in out.iterdir()] == ["a_probability.tif"]


def test_info_into_a_closed_pipe_exits_quietly():
    """``segloop info default | head -1``: the reader is gone; no BrokenPipeError traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write to the pipe now fails with EPIPE
    try:
        proc = subprocess.run([_console_script(), "info", "default"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    finally:
        os.close(write_end)
    assert proc.returncode == EXIT_OK, proc.stderr
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
