"""``segloop evaluate`` of OME-Zarr maps in bounded memory (core.evaluation.out_of_core)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import evaluate
from napari_segloop.core.evaluation.curve import otsu_threshold
from napari_segloop.core.evaluation.out_of_core import evaluate_out_of_core
from napari_segloop.core.events import Notice, run_to_end


def run(gen):
    """Drain a generator; return (what it yielded, what it returned)."""
    events: list = []
    return events, run_to_end(gen, events.append)


@pytest.fixture
def maps(tmp_path):
    rng = np.random.default_rng(1)
    truth = (rng.random((200, 230)) < 0.35).astype(np.uint8)
    prob = np.clip(0.3 + 0.4 * truth + rng.normal(0, 0.15, truth.shape), 0, 1).astype(np.float32)
    for name, arr in (("p.zarr", prob), ("t.zarr", truth)):
        zarr.create_array(str(tmp_path / name), shape=arr.shape, chunks=(64, 64), dtype=arr.dtype)[...] = arr
    return tmp_path / "p.zarr", tmp_path / "t.zarr", prob, truth


def test_otsu_and_the_default_threshold_match_memory(maps):
    p, t, prob, truth = maps
    _, report = run(evaluate_out_of_core(p, t))
    row = report.rows[0]
    ref = evaluate(prob, truth, 0.5, objects=False).pixel
    assert (row["tp"], row["tn"], row["threshold"]) == (ref.tp, ref.tn, 0.5)
    assert row["threshold_method"] == "default"
    _, report = run(evaluate_out_of_core(p, t, threshold="otsu"))
    assert abs(report.rows[0]["threshold"] - otsu_threshold(prob, nbins=1000)) < 0.005
    assert report.single and report.rows[0]["object_f1"] is None


def test_auto_says_the_models_post_processing_is_not_applied(maps, tiny_model_dir, tmp_path):
    import shutil

    from napari_segloop.core.bundle.folder import set_bundle_threshold
    from napari_segloop.core.masks import PostProcess

    p, t, prob, truth = maps
    folder = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    set_bundle_threshold(folder, 0.61, PostProcess(min_size=10))
    events, report = run(evaluate_out_of_core(p, t, threshold="auto", model=str(folder)))
    ref = evaluate(prob, truth, 0.61, objects=False).pixel
    assert report.rows[0]["threshold"] == pytest.approx(0.61) and report.rows[0]["fp"] == ref.fp
    assert any(isinstance(e, Notice) and "not applied" in e.text for e in events)


def test_a_mask_is_refused_as_a_prediction(maps):
    _, t, _, _ = maps
    with pytest.raises(InputError, match="probability map"):
        run(evaluate_out_of_core(t, t))
