"""``segloop evaluate`` of OME-Zarr maps: pixel metrics block by block, as in memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.evaluation import evaluate
from napari_segloop.core.evaluation import histograms as histograms_mod
from napari_segloop.core.evaluation.curve import ThresholdCurve


def _write_ome(path, data):
    g = zarr.open_group(str(path), mode="w")
    g.create_array("0", data=data, chunks=(64, 64))
    g.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": "y", "type": "space"},
                                                          {"name": "x", "type": "space"}],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": [1.0, 1.0]}]}]}]


@pytest.fixture
def pair(tmp_path, monkeypatch):
    monkeypatch.setattr(histograms_mod, "BLOCK", 100)  # several blocks of 128 (chunk-aligned)
    rng = np.random.default_rng(0)
    truth = (rng.random((260, 300)) < 0.3).astype(np.uint16) * 4
    prob = np.clip(0.25 + 0.5 * (truth > 0) + rng.normal(0, 0.2, truth.shape), 0, 1).astype(np.float32)
    _write_ome(tmp_path / "slide.ome.zarr", prob)
    tifffile.imwrite(tmp_path / "slide_gt.tif", truth, tile=(64, 64))
    return tmp_path / "slide.ome.zarr", tmp_path / "slide_gt.tif", prob, truth


def test_an_ome_zarr_map_is_scored_block_by_block_like_in_memory(pair, capsys, tmp_path):
    pred, gt, prob, truth = pair
    assert main(["evaluate", "-p", str(pred), "-t", str(gt), "--threshold", "0.4321", "--json"]) == EXIT_OK
    row = json.loads(capsys.readouterr().out)
    ref = evaluate(prob, truth, 0.4321, objects=False).pixel
    assert (row["tp"], row["fp"], row["fn"], row["tn"]) == (ref.tp, ref.fp, ref.fn, ref.tn)
    assert row["name"] == "slide" and row["object_f1"] is None and "block by block" in row["notes"]
    assert main(["evaluate", "-p", str(pred), "-t", str(gt), "--best-threshold",
                 "--csv", str(tmp_path / "m.csv")]) == EXIT_OK
    out = capsys.readouterr()
    # The exact optimum over every probability value, as in memory (not only the best slider step).
    ref = ThresholdCurve(prob, truth).best_threshold("dice")
    steps = [evaluate(prob, truth, t, objects=False).pixel.dice for t in np.linspace(0, 1, 1001)]
    assert ref.score > max(steps)
    assert f"best threshold {ref.threshold!r} (Dice {ref.score:.4f})" in out.out
    assert "block by block" in out.err
    assert (tmp_path / "m.csv").read_text().count("\n") == 2


def test_options_that_need_the_map_in_memory_are_refused_in_one_line(pair, capsys):
    pred, gt, prob, _ = pair
    assert main(["evaluate", "-p", str(pred), "-t", str(gt), "--min-size", "20"]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "--min-size" in err and "block by block" in err and len(err.splitlines()) == 1
    bad = pred.parent / "bad.ome.zarr"
    broken = prob.copy()
    broken[200, 10] = np.nan
    _write_ome(bad, broken)
    assert main(["evaluate", "-p", str(bad), "-t", str(gt)]) == EXIT_FAILED
    assert "NaN" in capsys.readouterr().err
    assert main(["evaluate", "-p", str(gt), "-t", str(pred)]) == EXIT_FAILED
    assert "probability map" in capsys.readouterr().err
