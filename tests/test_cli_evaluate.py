"""``segloop evaluate``: JSON against the core, best threshold, folders with a bad pair, errors."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.bundle import BundleSettings, PostProcess, set_bundle_threshold
from napari_segloop.core.evaluation import evaluate
from napari_segloop.core.evaluation.curve import ThresholdCurve

KEYS = ("threshold", "tp", "fp", "fn", "tn", "dice", "iou", "precision", "recall", "accuracy",
        "object_precision", "object_recall", "object_f1")


def _scene(seed: int, shape=(48, 64)) -> tuple[np.ndarray, np.ndarray]:
    """Instance labels of a few discs and a noisy probability map of them."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.uint16)
    for i in range(5):
        cy, cx, rad = r.uniform(6, shape[0] - 6), r.uniform(6, shape[1] - 6), r.uniform(3, 7)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < rad**2) & (labels == 0)] = i + 1
    prob = np.clip((labels > 0) * 0.6 + r.normal(0.2, 0.15, shape), 0, 1).astype(np.float32)
    return prob, labels


@pytest.fixture
def pair(tmp_path) -> tuple[Path, Path]:
    prob, labels = _scene(0)
    p, t = tmp_path / "img_probability.tif", tmp_path / "img_labels.tif"
    tifffile.imwrite(p, prob)
    tifffile.imwrite(t, labels)
    return p, t


def _run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["evaluate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_keys_and_values_match_the_core(pair, capsys):
    p, t = pair
    code, out, err = _run(capsys, "--prediction", p, "--truth", t, "--threshold", "0.4", "--json")
    assert code == EXIT_OK, err
    row = json.loads(out)
    for key in KEYS:
        assert key in row
    ref = evaluate(tifffile.imread(p), tifffile.imread(t), 0.4).to_dict()
    for key, value in ref.items():
        assert row[key] == pytest.approx(value), key
    assert row["threshold"] == 0.4
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == 48 * 64


def test_best_threshold_reports_the_exact_optimum(pair, capsys):
    p, t = pair
    code, out, err = _run(capsys, "-p", p, "-t", t, "--best-threshold", "--json")
    assert code == EXIT_OK, err
    row = json.loads(out)
    prob, labels = tifffile.imread(p), tifffile.imread(t)
    best = ThresholdCurve(prob, labels).best_threshold()
    assert row["threshold"] == best.threshold
    assert row["dice"] == pytest.approx(best.score)
    assert row["threshold_method"] == "best"
    # the reported threshold reproduces the reported Dice with the > rule
    assert evaluate(prob, labels, row["threshold"], objects=False).pixel.dice == pytest.approx(row["dice"])
    # and no slider-like threshold does better
    for t_ in np.linspace(0, 1, 101):
        assert evaluate(prob, labels, float(t_), objects=False).pixel.dice <= row["dice"] + 1e-12


def test_table_output_and_default_threshold(pair, capsys):
    p, t = pair
    code, out, err = _run(capsys, "-p", p, "-t", t)
    assert code == EXIT_OK
    lines = out.strip().splitlines()
    assert lines[0].split()[:3] == ["name", "threshold", "dice"]
    assert lines[1].split()[0] == "img" and lines[1].split()[1] == "0.5000"
    assert "0.5" in err  # a note says which threshold was used


def test_a_mask_prediction_needs_no_threshold(tmp_path, capsys):
    prob, labels = _scene(1)
    mask = (prob > 0.5).astype(np.uint8)
    p, t = tmp_path / "m.tif", tmp_path / "gt.tif"
    tifffile.imwrite(p, mask)
    tifffile.imwrite(t, labels)
    code, out, _ = _run(capsys, "-p", p, "-t", t, "--json")
    assert code == EXIT_OK
    row = json.loads(out)
    assert row["threshold"] is None
    assert row["dice"] == pytest.approx(evaluate(prob, labels, 0.5, objects=False).pixel.dice)
    code, _, err = _run(capsys, "-p", p, "-t", t, "--best-threshold")
    assert code == EXIT_FAILED and "probability map" in err and len(err.strip().splitlines()) == 1


def _folders(tmp_path) -> tuple[Path, Path]:
    pd, td = tmp_path / "pred", tmp_path / "truth"
    pd.mkdir()
    td.mkdir()
    for i, name in enumerate(("a", "b", "c")):
        prob, labels = _scene(10 + i)
        tifffile.imwrite(pd / f"{name}_probability.tif", prob)
        tifffile.imwrite(td / f"{name}_mask.tif", labels)
    # a bad pair: the truth has another shape
    prob, labels = _scene(20)
    tifffile.imwrite(pd / "bad_probability.tif", prob)
    tifffile.imwrite(td / "bad.tif", labels[:, :40])
    return pd, td


def test_folders_with_one_bad_pair(tmp_path, capsys):
    pd, td = _folders(tmp_path)
    out_csv = tmp_path / "metrics.csv"
    code, out, err = _run(capsys, "-p", pd, "-t", td, "--threshold", "0.45", "--json", "--csv", out_csv)
    assert code == EXIT_FAILED
    data = json.loads(out)
    assert [r["name"] for r in data["rows"]] == ["a", "b", "c"]
    assert len(data["errors"]) == 1 and "(48, 40)" in data["errors"][0]["error"]
    assert "(48, 64)" in data["errors"][0]["error"]
    assert data["summary"]["pairs"] == 4 and data["summary"]["failed"] == 1
    # the summary pools the counts of the good pairs
    assert data["summary"]["tp"] == sum(r["tp"] for r in data["rows"])
    rows = data["rows"]
    pooled = sum(r["tp"] for r in rows) * 2 / sum(2 * r["tp"] + r["fp"] + r["fn"] for r in rows)
    assert data["summary"]["dice"] == pytest.approx(pooled)
    assert data["summary"]["mean_dice"] == pytest.approx(np.mean([r["dice"] for r in data["rows"]]))
    for r in data["rows"]:
        prob = tifffile.imread(pd / f"{r['name']}_probability.tif")
        labels = tifffile.imread(td / f"{r['name']}_mask.tif")
        assert r["dice"] == pytest.approx(evaluate(prob, labels, 0.45, objects=False).pixel.dice)
    errors = [line for line in err.splitlines() if "error" in line]
    assert any("bad" in line for line in errors)
    assert "Traceback" not in err
    with open(out_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["name"] for r in rows] == ["a", "b", "c", "bad", "summary"]
    assert rows[3]["error"] and rows[3]["dice"] == ""


def test_folders_best_threshold_is_one_for_all_pairs(tmp_path, capsys):
    pd, td = _folders(tmp_path)
    (pd / "bad_probability.tif").unlink()
    (td / "bad.tif").unlink()
    code, out, err = _run(capsys, "-p", pd, "-t", td, "--best-threshold", "--json")
    assert code == EXIT_OK, err
    data = json.loads(out)
    thresholds = {r["threshold"] for r in data["rows"]}
    assert thresholds == {data["summary"]["best_threshold"]}
    assert data["summary"]["dice"] == pytest.approx(data["summary"]["best_dice"])


def test_pairing_by_order_and_unmatched_files(tmp_path, capsys):
    pd, td = tmp_path / "p", tmp_path / "t"
    pd.mkdir()
    td.mkdir()
    for i in range(2):
        prob, labels = _scene(30 + i)
        tifffile.imwrite(pd / f"x{i}.tif", prob)
        tifffile.imwrite(td / f"y{i}.tif", labels)
    code, out, err = _run(capsys, "-p", pd, "-t", td, "--json")
    assert code == EXIT_FAILED  # no names match
    assert json.loads(out)["rows"] == [] and err.count("error") >= 4
    code, out, err = _run(capsys, "-p", pd, "-t", td, "--json", "--pair-by", "order")
    assert code == EXIT_OK, err
    assert [r["name"] for r in json.loads(out)["rows"]] == ["x0", "x1"]


def test_empty_folders_are_an_error(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "t").mkdir()
    code, out, err = _run(capsys, "-p", tmp_path / "p", "-t", tmp_path / "t")
    assert code == EXIT_FAILED and "no image files" in err and out == ""


def test_threshold_auto_uses_the_bundle_and_otsu(pair, tmp_path, capsys):
    p, t = pair
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"_model_class": "Unet"}')
    (folder / "segloop.json").write_text(json.dumps(BundleSettings().to_json()))
    set_bundle_threshold(folder, 0.62, PostProcess(min_size=5))
    code, out, err = _run(capsys, "-p", p, "-t", t, "--threshold", "auto", "--model", folder, "--json")
    assert code == EXIT_OK, err
    row = json.loads(out)
    prob, labels = tifffile.imread(p), tifffile.imread(t)
    ref = evaluate(prob, labels, 0.62, postprocess=PostProcess(min_size=5))
    assert row["threshold"] == 0.62 and row["dice"] == pytest.approx(ref.pixel.dice)
    code, out, err = _run(capsys, "-p", p, "-t", t, "--threshold", "otsu", "--json")
    assert code == EXIT_OK and 0 < json.loads(out)["threshold"] < 1


def test_region_restricts_the_evaluation(pair, tmp_path, capsys):
    p, t = pair
    region = np.zeros((48, 64), np.uint8)
    region[:20] = 1
    rp = tmp_path / "region.tif"
    tifffile.imwrite(rp, region)
    code, out, _ = _run(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--region", rp, "--json")
    assert code == EXIT_OK
    row = json.loads(out)
    assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == 20 * 64


def test_per_slice_rows_for_stacks(tmp_path, capsys):
    probs, labels = zip(*(_scene(40 + i) for i in range(3)), strict=True)
    p, t = tmp_path / "s.tif", tmp_path / "s_gt.tif"
    tifffile.imwrite(p, np.stack(probs), photometric="minisblack")
    tifffile.imwrite(t, np.stack(labels), photometric="minisblack")
    code, out, _ = _run(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--per-slice", "--json")
    assert code == EXIT_OK
    rows = json.loads(out)["rows"]
    assert [r["slice"] for r in rows] == [0, 1, 2, "all"]
    assert rows[-1]["tp"] == sum(r["tp"] for r in rows[:3])


def test_missing_file_is_one_line_without_traceback(pair, tmp_path):
    _, t = pair
    proc = subprocess.run(
        [sys.executable, "-m", "napari_segloop.cli", "evaluate", "--prediction",
         str(tmp_path / "nope.tif"), "--truth", str(t)],
        capture_output=True, text=True,
    )
    assert proc.returncode == EXIT_FAILED
    assert proc.stderr.strip().count("\n") == 0 and "nope.tif" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_float_truth_and_usage_errors(pair, tmp_path, capsys):
    p, t = pair
    ft = tmp_path / "float_gt.tif"
    tifffile.imwrite(ft, tifffile.imread(t).astype(np.float32))
    code, _, err = _run(capsys, "-p", p, "-t", ft, "--threshold", "0.5")
    assert code == EXIT_FAILED and "floating-point" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "-p", p, "-t", tmp_path)
    assert code == EXIT_USAGE
    with pytest.raises(SystemExit) as info:
        main(["evaluate", "-p", str(p), "-t", str(t), "--threshold", "0.5", "--best-threshold"])
    assert info.value.code == EXIT_USAGE


# ---------------------------------------------------------------- 3-D objects


def _ball_stack() -> np.ndarray:
    """20 balls of radius 5 in a (30, 64, 64) stack, each cut by 11 slices: 220 objects in 2-D."""
    zz, yy, xx = np.indices((30, 64, 64))
    labels = np.zeros((30, 64, 64), np.uint16)
    centres = [(z, y, x) for z in (8, 21) for y in (8, 20, 32, 44, 56) for x in (16, 44)]
    for i, (z, y, x) in enumerate(centres):
        labels[(zz - z) ** 2 + (yy - y) ** 2 + (xx - x) ** 2 <= 25] = i + 1
    return labels


@pytest.fixture
def balls(tmp_path) -> tuple[Path, Path]:
    labels = _ball_stack()
    p, t = tmp_path / "balls_probability.tif", tmp_path / "balls_labels.tif"
    tifffile.imwrite(p, np.where(labels > 0, 0.9, 0.1).astype(np.float32), photometric="minisblack")
    tifffile.imwrite(t, labels, photometric="minisblack")
    return p, t


@pytest.mark.parametrize(("objects", "count"), [("3d", 20), ("2d", 220), ("auto", 20)])
def test_objects_of_stacks_in_3d_or_2d(balls, capsys, objects, count):
    p, t = balls
    code, out, err = _run(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--objects", objects, "--json")
    assert code == EXIT_OK, err
    row = json.loads(out)
    assert row["n_true_objects"] == row["n_pred_objects"] == row["matched_objects"] == count
    assert row["object_dims"] == (2 if objects == "2d" else 3)
    assert ("counted in 3-D" in err) == (objects == "auto")


def test_a_time_series_file_has_2d_objects_by_default(tmp_path, capsys):
    labels = _ball_stack()
    p, t = tmp_path / "series.tif", tmp_path / "series_gt.tif"
    tifffile.imwrite(p, (labels > 0).astype(np.uint8), photometric="minisblack", metadata={"axes": "TYX"})
    tifffile.imwrite(t, labels, photometric="minisblack", metadata={"axes": "TYX"})
    code, out, err = _run(capsys, "-p", p, "-t", t, "--json")
    assert code == EXIT_OK, err
    assert json.loads(out)["n_true_objects"] == 220
    code, out, err = _run(capsys, "-p", p, "-t", t, "--objects", "3d", "--json")
    assert json.loads(out)["n_true_objects"] == 20


def test_per_slice_rows_with_3d_objects(balls, capsys):
    p, t = balls
    code, out, _ = _run(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--objects", "3d", "--per-slice",
                        "--json")
    assert code == EXIT_OK
    rows = json.loads(out)["rows"]
    assert len(rows) == 31 and rows[-1]["slice"] == "all" and rows[-1]["n_true_objects"] == 20
    assert all(r["n_true_objects"] is None for r in rows[:-1])
    assert rows[-1]["tp"] == sum(r["tp"] for r in rows[:-1])


@pytest.mark.parametrize("value", ["-1", "0", "abc", "nan"])
def test_a_bad_object_diameter_is_one_line_and_a_usage_error(pair, capsys, value):
    p, t = pair
    code, out, err = _run(capsys, "-p", p, "-t", t, "--split-touching", f"--object-diameter={value}")
    assert code == EXIT_USAGE and out == ""
    assert err.count("\n") == 1 and "--object-diameter" in err and "Traceback" not in err


def _touching_pairs(tmp_path) -> tuple[Path, Path]:
    """Three pairs of touching discs (diameter 24, centres 20 px apart)."""
    yy, xx = np.indices((40, 160))
    labels = np.zeros((40, 160), np.uint16)
    for k, cx in enumerate((25, 75, 125)):
        labels[(yy - 20) ** 2 + (xx - cx + 10) ** 2 <= 144] = 2 * k + 1
        labels[((yy - 20) ** 2 + (xx - cx - 10) ** 2 <= 144) & (xx >= cx)] = 2 * k + 2
    p, t = tmp_path / "pairs_probability.tif", tmp_path / "pairs_labels.tif"
    tifffile.imwrite(p, np.where(labels > 0, 0.9, 0.1).astype(np.float32))
    tifffile.imwrite(t, labels)
    return p, t


def _model(folder: Path, **settings) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text('{"_model_class": "Unet"}')
    (folder / "segloop.json").write_text(json.dumps(BundleSettings(**settings).to_json()))
    return folder


def test_threshold_auto_splits_at_the_models_object_size(tmp_path, capsys):
    p, t = _touching_pairs(tmp_path)
    pp = PostProcess(split_touching=True, instances=True)
    for size, n in ((24.0, 6), (100.0, 3)):  # seeds of one pair are 20 px apart
        model = _model(tmp_path / f"model{int(size)}", threshold=0.5, object_size=size, postprocess=pp)
        code, out, err = _run(capsys, "-p", p, "-t", t, "--threshold", "auto", "--model", model, "--json")
        assert code == EXIT_OK, err
        assert json.loads(out)["n_pred_objects"] == n, size
    # the given diameter wins over the model's
    code, out, _ = _run(capsys, "-p", p, "-t", t, "--threshold", "auto", "--model", tmp_path / "model100",
                        "--object-diameter", "24", "--json")
    assert json.loads(out)["n_pred_objects"] == 6
    # and is stored in the post-processing block of a bundle
    model = _model(tmp_path / "stored", threshold=0.5, object_size=24.0,
                   postprocess=PostProcess(split_touching=True, instances=True, object_diameter=100.0))
    code, out, _ = _run(capsys, "-p", p, "-t", t, "--threshold", "auto", "--model", model, "--json")
    assert json.loads(out)["n_pred_objects"] == 3


def test_object_diameter_with_split_touching_alone(tmp_path, capsys):
    p, t = _touching_pairs(tmp_path)
    for value, n in (("24", 6), ("100", 3)):
        code, out, err = _run(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--split-touching",
                              "--object-diameter", value, "--json")
        assert code == EXIT_OK, err
        assert json.loads(out)["n_pred_objects"] == n
    code, _, err = _run(capsys, "-p", p, "-t", t, "--threshold", "0.5", "--object-diameter", "24")
    assert code == EXIT_OK and "only" in err and "--split-touching" in err
