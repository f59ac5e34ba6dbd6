"""``segloop suggest`` and ``segloop simulate-active-learning``: outputs, refusals, exit codes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.active import rank_regions, uncertainty
from napari_segloop.core.bundle import BundleSettings, create_model, load_bundle, save_bundle
from napari_segloop.core.events import run_to_end
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.core.io.images import read_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU = ["--device", "cpu", "--threads", "1"]
H, W = 100, 70  # with regions of 32: 4 x 3 regions, the last row and column cut short


def _blobs(shape, seed) -> np.ndarray:
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = r.normal(20, 5, shape)
    for _ in range(10):
        cy, cx, rad = r.uniform(0, shape[0]), r.uniform(0, shape[1]), r.uniform(4, 10)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] += 120
    return np.clip(img, 0, 255).astype(np.uint8)


def _tiny(seed: int):
    torch.manual_seed(seed)
    settings = BundleSettings(channel_names=["gray"], tile_size=64)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, settings=settings, encoder_depth=3,
                          decoder_channels=(16, 16, 16))
    with torch.no_grad():  # probabilities spread over (0, 1), not all close to 0.5
        bundle.model.segmentation_head[0].weight.mul_(30)
    return bundle


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("models")
    return [save_bundle(_tiny(seed), folder / f"tiny{seed}") for seed in (0, 1)]


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.tif" for name in ("img", "lab", "stack", "img2", "truth")}
    img = _blobs((H, W), 1)
    tifffile.imwrite(paths["img"], img)
    labels = np.zeros((H, W), np.uint8)
    labels[40, 40] = 1  # in the region (32, 32, 64, 64)
    labels[99, 69] = 2  # in the bottom-right corner region (96, 64, 100, 70)
    tifffile.imwrite(paths["lab"], labels)
    tifffile.imwrite(paths["stack"], np.stack([img[:64, :64], _blobs((64, 64), 2)]), metadata={"axes": "ZYX"})
    tifffile.imwrite(paths["img2"], _blobs((64, 64), 3))
    square = _blobs((96, 128), 4)  # pool: 3 x 2 regions of 32 (validation and test bands on the right)
    paths["square"] = tmp_path / "square.tif"
    tifffile.imwrite(paths["square"], square)
    tifffile.imwrite(paths["truth"], (square > 80).astype(np.uint8))
    return paths


def run(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("segloop: error:")]


def _one_error(err: str) -> str:
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("segloop: error:"), err
    return lines[0]


def _grid(h: int, w: int, side: int) -> set[tuple[int, ...]]:
    return {(y, x, min(y + side, h), min(x + side, w)) for y in range(0, h, side) for x in range(0, w, side)}


# ---------------------------------------------------------------- suggest


def test_suggest_json_ranks_every_region_of_the_grid(capsys, models, files):
    code, out, err = run(capsys, "suggest", "--model", models[0], "--image", files["img"], "--region", 32,
                         "--json", *CPU)
    assert code == EXIT_OK, err
    regions = json.loads(out)
    assert isinstance(regions, list)
    assert len(regions) == math.ceil(H / 32) * math.ceil(W / 32) == 12
    assert {tuple(r["bbox"]) for r in regions} == _grid(H, W, 32)
    scores = [r["score"] for r in regions]
    assert scores == sorted(scores, reverse=True)
    assert all(0 <= s <= 1 for s in scores) and max(scores) > min(scores)
    assert all(set(r) == {"bbox", "score"} for r in regions)
    # The scores are the mean entropy of the model's probability over each region.
    image = read_image(files["img"])
    expected = run_to_end(uncertainty(load_bundle(models[0]), image, PredictOptions(device="cpu")))
    ranked = rank_regions(expected.uncertainty, 32)
    assert [r["bbox"] for r in regions] == [list(r.bbox) for r in ranked]
    assert scores == pytest.approx([r.score for r in ranked], abs=1e-5)


def test_suggest_top_limits_the_list(capsys, models, files):
    code, out, _ = run(capsys, "suggest", "-m", models[0], "--image", files["img"], "--region", 32, "--json",
                       *CPU)
    everything = json.loads(out)
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], "--region", 32,
                         "--json", "--top", 3, *CPU)
    assert code == EXIT_OK, err
    assert json.loads(out) == everything[:3]


def test_suggest_skips_annotated_regions(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], "--labels",
                         files["lab"], "--region", 32, "--json", *CPU)
    assert code == EXIT_OK, err
    bboxes = {tuple(r["bbox"]) for r in json.loads(out)}
    assert bboxes == _grid(H, W, 32) - {(32, 32, 64, 64), (96, 64, 100, 70)}
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], "--labels",
                         files["lab"], "--mode", "dense", "--region", 32, "--json", *CPU)
    assert code == EXIT_OK, err
    assert json.loads(out) == []


def test_suggest_on_a_stack_gives_five_element_bboxes(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["stack"], "--region", 32,
                         "--json", *CPU)
    assert code == EXIT_OK, err
    regions = json.loads(out)
    assert len(regions) == 2 * 2 * 2
    assert all(len(r["bbox"]) == 5 for r in regions)
    assert {tuple(r["bbox"]) for r in regions} == {(z, *b) for z in (0, 1) for b in _grid(64, 64, 32)}


def test_suggest_table_has_a_header_and_one_line_per_region(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], "--region", 32,
                         "--top", 5, *CPU)
    assert code == EXIT_OK, err
    lines = out.splitlines()
    assert lines[0].split("\t") == ["rank", "y0", "x0", "y1", "x1", "score"]
    assert len(lines) == 1 + 5
    assert [line.split("\t")[0] for line in lines[1:]] == ["1", "2", "3", "4", "5"]
    scores = [float(line.split("\t")[-1]) for line in lines[1:]]
    assert scores == sorted(scores, reverse=True)
    assert "entropy" in err and "Traceback" not in err
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["stack"], "--region", 32, *CPU)
    assert code == EXIT_OK, err
    assert out.splitlines()[0].split("\t") == ["rank", "slice", "y0", "x0", "y1", "x1", "score"]


def test_suggest_on_several_images_names_them(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], files["img2"],
                         "--region", 32, "--json", *CPU)
    assert code == EXIT_OK, err
    regions = json.loads(out)
    assert len(regions) == 12 + 4
    assert {r["image"] for r in regions} == {str(files["img"]), str(files["img2"])}
    scores = [r["score"] for r in regions]
    assert scores == sorted(scores, reverse=True)


def test_suggest_with_two_models_is_an_ensemble(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "-m", models[1], "--image", files["img2"],
                         "--region", 32, *CPU)
    assert code == EXIT_OK, err
    assert "2 models" in err
    assert len(out.splitlines()) == 1 + 4
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img2"], "--region", 32,
                         "--method", "tta", "--passes", 2, "--json", *CPU)
    assert code == EXIT_OK, err
    assert len(json.loads(out)) == 4


def test_suggest_labels_count_mismatch_is_a_usage_error(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], files["img2"],
                         "--labels", files["lab"], *CPU)
    assert code == EXIT_USAGE
    assert "--labels" in _one_error(err) and out == ""


def test_suggest_ensemble_of_one_model_is_a_usage_error(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img"], "--method", "ensemble",
                         *CPU)
    assert code == EXIT_USAGE
    assert "two --model" in _one_error(err) and out == ""
    code, _, err = run(capsys, "suggest", "-m", models[0], "-m", models[1], "--image", files["img"],
                       "--method", "tta", *CPU)
    assert code == EXIT_USAGE
    assert "ensemble" in _one_error(err)


def test_suggest_a_missing_image_fails_with_one_line(capsys, models, tmp_path):
    missing = tmp_path / "nope.tif"
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", missing, "--json", *CPU)
    assert code == EXIT_FAILED
    line = _one_error(err)
    assert str(missing) in line and "not found" in line
    assert out == ""


def test_suggest_labels_of_another_shape_fail_with_one_line(capsys, models, files):
    code, out, err = run(capsys, "suggest", "-m", models[0], "--image", files["img2"], "--labels",
                         files["lab"], "--json", *CPU)
    assert code == EXIT_FAILED
    assert "shape" in _one_error(err) and out == ""


def test_suggest_mc_dropout_on_a_model_without_dropout_fails_with_one_line(capsys, models, files):
    code, _, err = run(capsys, "suggest", "-m", models[0], "--image", files["img2"], "--method", "mc-dropout",
                       *CPU)
    assert code == EXIT_FAILED
    assert "tta" in _one_error(err)


@pytest.mark.parametrize("args", [["--region", "0"], ["--top", "-1"], ["--passes", "x"]])
def test_suggest_bad_numbers_are_usage_errors(capsys, models, files, args):
    with pytest.raises(SystemExit) as info:
        main(["suggest", "-m", str(models[0]), "--image", str(files["img"]), *args])
    assert info.value.code == EXIT_USAGE
    assert "Traceback" not in capsys.readouterr().err


# ---------------------------------------------------------------- simulate-active-learning


SIM = ["--steps", "2", "--rounds", "1", "--seeds", "0", "--region", "32", "--initial", "1", "--per-round",
       "1", "--batch-size", "2", "--crop", "32", "-q", *CPU]


def test_simulate_writes_the_csv_and_the_plot_and_refuses_to_overwrite(capsys, models, files, tmp_path):
    out = tmp_path / "study"
    code, stdout, err = run(capsys, "simulate-active-learning", "--image", files["square"], "--labels",
                            files["truth"], "--model", models[0], "--output", out, *SIM)
    assert code == EXIT_OK, err
    assert "Traceback" not in err
    csv_path, png_path = out / "active_learning.csv", out / "active_learning.png"
    rows = list(csv.DictReader(csv_path.open(encoding="utf-8")))
    assert len(rows) == 2 + 2 * 1
    assert [(r["strategy"], r["round"]) for r in rows] == [("uncertainty", "0"), ("random", "0"),
                                                           ("uncertainty", "1"), ("random", "1")]
    assert [float(r["fraction"]) for r in rows] == pytest.approx([1 / 6, 1 / 6, 2 / 6, 2 / 6], abs=1e-5)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Dice" in stdout and len(stdout.splitlines()) == 2 + 2, "title, header, one line per round"
    assert f"wrote {csv_path}" in err

    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (csv_path, png_path)}
    code, stdout, err = run(capsys, "simulate-active-learning", "--image", files["square"], "--labels",
                            files["truth"], "--model", models[0], "--output", out, *SIM)
    assert code == EXIT_USAGE
    assert "--overwrite" in _one_error(err) and stdout == ""
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (csv_path, png_path)} == before
    assert sorted(p.name for p in out.iterdir()) == ["active_learning.csv", "active_learning.png"]


def test_simulate_refusals(capsys, models, files, tmp_path):
    base = ["simulate-active-learning", "--image", files["square"], "--output", tmp_path / "o", *CPU]
    code, _, err = run(capsys, *base, "--labels", files["truth"], files["truth"])
    assert code == EXIT_USAGE and "--labels" in _one_error(err)
    code, _, err = run(capsys, *base, "--labels", files["truth"], "--model", models[0],
                       "--architecture", "Unet")
    assert code == EXIT_USAGE and "--architecture" in _one_error(err)
    code, _, err = run(capsys, *base, "--labels", files["truth"], "--model", models[0], "--region", "4")
    assert code == EXIT_USAGE and "8 pixels" in _one_error(err)
    code, _, err = run(capsys, *base, "--labels", files["truth"], "--model", models[0], "--region", "32",
                       "--initial", "9")
    assert code == EXIT_FAILED and "pool has only 6" in _one_error(err)
    code, _, err = run(capsys, *base, "--labels", files["truth"], "--model", models[0],
                       "--val-fraction", "0.7")
    assert code == EXIT_USAGE and "val-fraction" in _one_error(err)
    code, _, err = run(capsys, *base, "--labels", tmp_path / "missing.tif", "--model", models[0])
    assert code == EXIT_FAILED and "not found" in _one_error(err)
    assert not (tmp_path / "o" / "active_learning.csv").exists()
