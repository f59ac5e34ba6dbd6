"""``segloop predict`` and ``evaluate`` with hostile inputs: FIFOs, size limits, bad probability maps."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.bundle import BundleSettings, create_model, save_bundle
from napari_segloop.core.io.limits import ENV_VAR


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    settings = BundleSettings(channel_names=["gray"], tile_size=64)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, settings=settings,
                          encoder_depth=3, decoder_channels=(16, 16, 16))
    return save_bundle(bundle, tmp_path_factory.mktemp("models") / "tiny")


def _image(shape=(40, 48)) -> np.ndarray:
    r = np.random.default_rng(0)
    return r.integers(0, 255, shape).astype(np.uint8)


def _run_guarded(args: list[str], fifo: Path | None = None, timeout: float = 120.0) -> int:
    """Run the CLI in a thread; if it blocks on ``fifo``, unblock it and fail instead of hanging."""
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(main(args)), daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive() and fifo is not None:
        try:  # a reader blocked in open(): give it a writer, then EOF
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
        thread.join(10)
    assert not thread.is_alive() and result, "the command blocked on its input"
    return result[0]


# ------------------------------------------------------------------ FIFOs


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")


@needs_fifo
def test_predict_refuses_a_fifo(tmp_path, model_dir, capsys):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    code = _run_guarded(["predict", str(fifo), "-o", str(tmp_path / "out.tif"), "-m", str(model_dir),
                         "--device", "cpu", "-q"], fifo)
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "pipe.tif: is not a regular file (a FIFO or pipe); give an image file." in err
    assert "Traceback" not in err


@needs_fifo
@pytest.mark.parametrize("which", ["prediction", "truth"])
def test_evaluate_refuses_a_fifo(tmp_path, capsys, which):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, (_image() > 128).astype(np.uint8))
    pred, truth = (fifo, good) if which == "prediction" else (good, fifo)
    code = _run_guarded(["evaluate", "-p", str(pred), "-t", str(truth)], fifo)
    assert code == EXIT_FAILED
    assert "is not a regular file (a FIFO or pipe)" in capsys.readouterr().err


# ------------------------------------------------------------------ size limit


def test_predict_max_image_size(tmp_path, model_dir, capsys, monkeypatch):
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, _image())  # 1920 bytes decoded
    out = tmp_path / "out.tif"
    base = ["predict", str(src), "-o", str(out), "-m", str(model_dir), "--device", "cpu", "-q"]
    assert main([*base, "--max-image-size", "1KB"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "img.tif: the image would take 1.9 KB in memory once decoded (40 x 48 uint8)" in err
    assert "limit of 1 KB (set by --max-image-size)" in err and not out.exists()
    monkeypatch.setenv(ENV_VAR, "1000")
    assert main(base) == EXIT_FAILED
    assert "(set by SEGLOOP_MAX_IMAGE_BYTES); raise it with --max-image-size" in capsys.readouterr().err
    assert main([*base, "--max-image-size", "1MB"]) == EXIT_OK  # the option wins over the variable
    assert tifffile.imread(out).shape == (40, 48)
    monkeypatch.delenv(ENV_VAR)
    out.unlink()
    assert main(base) == EXIT_OK  # without the option, the earlier --max-image-size is forgotten


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_bad_max_image_size_is_a_usage_error(tmp_path, capsys, command, monkeypatch):
    src = tmp_path / "img.tif"
    tifffile.imwrite(src, _image())
    args = (["predict", str(src), "-o", str(tmp_path / "o.tif")] if command == "predict"
            else ["evaluate", "-p", str(src), "-t", str(src)])
    assert main([*args, "--max-image-size", "lots"]) == EXIT_USAGE
    assert "segloop: error: --max-image-size: 'lots' is not a size" in capsys.readouterr().err
    monkeypatch.setenv(ENV_VAR, "huge")
    assert main(args) == EXIT_USAGE
    assert "SEGLOOP_MAX_IMAGE_BYTES: 'huge' is not a size" in capsys.readouterr().err


def test_evaluate_max_image_size(tmp_path, capsys):
    mask = (_image() > 128).astype(np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", mask)
    tifffile.imwrite(tmp_path / "t.tif", mask)
    args = ["evaluate", "-p", str(tmp_path / "p.tif"), "-t", str(tmp_path / "t.tif")]
    assert main([*args, "--max-image-size", "1000"]) == EXIT_FAILED
    assert "p.tif: the image would take 1.9 KB" in capsys.readouterr().err
    assert main([*args, "--max-image-size", "none"]) == EXIT_OK


# ------------------------------------------------------------------ probability maps


def _strict_json(text: str) -> object:
    def refuse(name: str) -> object:
        raise AssertionError(f"{name} in the JSON output")

    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_evaluate_infinite_probabilities(tmp_path, capsys, bad):
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    pred_dir.mkdir()
    truth_dir.mkdir()
    truth = (_image() > 128).astype(np.uint8)
    good = np.where(truth > 0, 0.9, 0.1).astype(np.float32)
    broken = good.copy()
    broken[0, :3] = bad
    for name, prob in (("a", good), ("b", broken)):
        tifffile.imwrite(pred_dir / f"{name}.tif", prob)
        tifffile.imwrite(truth_dir / f"{name}.tif", truth)
    for threshold in (["--threshold", "otsu"], ["--best-threshold"], []):
        code = main(["evaluate", "-p", str(pred_dir), "-t", str(truth_dir), "--json", *threshold])
        out, err = capsys.readouterr()
        assert code == EXIT_FAILED
        assert "b.tif" in err and "contains 3 infinite value(s)" in err and "Traceback" not in err
        report = _strict_json(out)
        assert [row["name"] for row in report["rows"]] == ["a"]


def test_evaluate_logits_are_refused_with_a_hint(tmp_path, capsys):
    truth = (_image() > 128).astype(np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", np.where(truth > 0, 4.1, -3.2).astype(np.float32))
    tifffile.imwrite(tmp_path / "t.tif", truth)
    assert main(["evaluate", "-p", str(tmp_path / "p.tif"), "-t", str(tmp_path / "t.tif")]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "values from -3.2 to 4.1, which are not probabilities in [0, 1] (logits? apply a sigmoid" in err


def test_evaluate_uint8_probability_map_gets_a_note(tmp_path, capsys):
    yy, xx = np.mgrid[:40, :48]
    prob = np.clip(255 / (1 + np.exp((np.hypot(yy - 20, xx - 24) - 12) / 4)) + 3, 0, 255)
    tifffile.imwrite(tmp_path / "p.tif", prob.astype(np.uint8))
    tifffile.imwrite(tmp_path / "t.tif", (prob > 127).astype(np.uint8))
    assert main(["evaluate", "-p", str(tmp_path / "p.tif"), "-t", str(tmp_path / "t.tif")]) == EXIT_OK
    err = capsys.readouterr().err
    assert "segloop: note:" in err and "read as a mask or instance labels" in err
    assert "divide it by 255 and save it as float32" in err
