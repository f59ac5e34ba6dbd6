"""The exact best threshold of a map larger than memory (core.evaluation.refine).

The reference is the in-memory exact search (ThresholdCurve.best_threshold, a sort of every
value): the refined result must score the same and give the same mask, while reading the map
block by block and keeping only the pixels of the candidate bins.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.curve import ThresholdCurve
from napari_segloop.core.evaluation.histograms import binned_curve, count_pixels
from napari_segloop.core.evaluation.refine import candidate_bins, exact_best_threshold
from napari_segloop.core.events import Progress, run_to_end
from tests.core.test_histograms import ReadLog, as_zarr, maps


def run(gen):
    events: list = []
    return events, run_to_end(gen, events.append)


def refined(prob, truth, metric="dice", **kw):
    _, curve = run(binned_curve(prob, truth))
    events, best = run(exact_best_threshold(prob, truth, curve, metric, **kw))
    return curve, events, best


def same_mask_counts(prob, truth, threshold):
    _, m = run(count_pixels(prob, truth, threshold))
    return m.tp, m.fp, m.fn, m.tn


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("metric", ["dice", "iou", "accuracy"])
def test_the_refined_best_equals_the_in_memory_exact_optimum(seed, metric):
    prob, truth = maps(seed=seed)
    reference = ThresholdCurve(prob, truth).best_threshold(metric)
    curve, events, best = refined(as_zarr(prob, (64, 64)), as_zarr(truth, (64, 64)), metric, block=100)
    assert best.exact
    assert best.score == reference.score
    m = best.metrics
    assert (m.tp, m.fp, m.fn, m.tn) == (reference.metrics.tp, reference.metrics.fp,
                                        reference.metrics.fn, reference.metrics.tn)
    # The threshold gives that mask (prob > t), and it is the in-memory one when it lies between steps.
    assert same_mask_counts(prob, truth, best.threshold) == (m.tp, m.fp, m.fn, m.tn)
    if curve.step_of(reference.threshold) is None:
        assert best.threshold == reference.threshold
    assert all(isinstance(e, Progress) for e in events)


def test_the_optimum_between_steps_is_found_where_the_best_step_misses_it():
    # Foreground is exactly the pixels above 0.50042: no slider step (0.500, 0.501) splits them,
    # so the best step scores below 1 and only the value 0.50042 gives Dice 1.
    rng = np.random.default_rng(7)
    prob = rng.random((200, 240), dtype=np.float32)
    prob.reshape(-1)[:4000] = rng.uniform(0.5, 0.501, 4000).astype(np.float32)
    t = np.float32(0.50042)
    truth = (prob > t).astype(np.uint8)
    curve, events, best = refined(prob, truth)
    step = curve.best_threshold("dice")
    assert step.score < 0.999
    assert best.exact and best.score == 1.0 and best.metrics.fp == best.metrics.fn == 0
    assert float(np.float32(best.threshold)) == float(prob[prob <= t].max())
    assert best.threshold < best.upper <= float(prob[prob > t].min())
    assert events and events[-1].done == events[-1].total  # one refining pass over the blocks


def test_only_the_candidate_bins_are_kept_and_no_read_is_whole():
    prob, truth = maps(seed=4)
    _, curve = run(binned_curve(prob, truth))
    step = curve.best_threshold("dice")
    bins = candidate_bins(curve, "dice", step.score)
    assert 0 < bins.size < curve.steps // 10
    log = ReadLog(as_zarr(prob, (50, 50)))
    _, best = run(exact_best_threshold(log, truth, curve, "dice", block=120))
    assert best.exact and max(log.reads) <= 150 * 150 < prob.size


def test_a_best_step_that_is_already_optimal_needs_no_second_pass():
    # A map whose values all lie on slider steps: no threshold between steps makes another mask.
    rng = np.random.default_rng(3)
    prob = (rng.integers(0, 1001, (120, 130)) / 1000).astype(np.float32)
    truth = (prob > 0.6).astype(np.uint8)
    log = ReadLog(prob)
    _, curve = run(binned_curve(log, truth))
    n_reads = len(log.reads)
    events, best = run(exact_best_threshold(log, truth, curve))
    assert best.exact and best.score == 1.0 and events == []
    assert len(log.reads) == n_reads


def test_too_many_candidate_pixels_keep_the_best_bins_and_say_not_exact():
    prob, truth = maps(seed=5)
    reference = ThresholdCurve(prob, truth).best_threshold("dice")
    curve, _, best = refined(prob, truth, limit=50)
    step = curve.best_threshold("dice")
    assert not best.exact and step.score <= best.score <= reference.score
    _, _, none = refined(prob, truth, limit=0)
    assert not none.exact and none.score == step.score


def test_the_refined_threshold_is_remembered_by_the_curve():
    prob, truth = maps(seed=6)
    curve, _, best = refined(prob, truth)
    assert curve.step_of(best.threshold) is None and not curve.known(best.threshold)
    with pytest.raises(InputError, match="between the slider's steps"):
        curve.counts(best.threshold)
    curve.remember(best.metrics)
    assert curve.known(best.threshold)
    assert curve.metrics(best.threshold) == best.metrics


def test_a_map_of_another_shape_than_its_curve_is_refused():
    prob, truth = maps(seed=0)
    _, curve = run(binned_curve(prob, truth))
    with pytest.raises(InputError, match="its curve was made from one of shape"):
        run(exact_best_threshold(prob[:100], truth[:100], curve))
