"""Best threshold and curve of a post-processed mask (what the Threshold dock's Best does then)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.evaluation import evaluate
from napari_segloop.core.evaluation.curve import ThresholdCurve
from napari_segloop.core.evaluation.processed import (
    COARSE,
    best_processed_threshold,
    processed_curve,
)
from napari_segloop.core.events import Progress, run_to_end
from napari_segloop.core.masks import PostProcess, make_mask


def specks_case(seed=0):
    """Two squares with holes in a map full of one-pixel specks: post-processing changes the best."""
    truth = np.zeros((96, 96), dtype=np.int32)
    truth[10:40, 10:40] = 1
    truth[55:85, 50:90] = 2
    rng = np.random.default_rng(seed)
    prob = np.clip(0.2 + 0.5 * (truth > 0) + rng.normal(0, 0.22, truth.shape), 0, 1).astype(np.float32)
    return prob, truth


def test_best_processed_threshold_is_the_best_of_what_it_evaluated_and_beats_the_raw_optimum():
    prob, truth = specks_case()
    pp = PostProcess(min_size=20, fill_holes=True)
    raw = ThresholdCurve(prob, truth).best_threshold("dice")
    best = run_to_end(best_processed_threshold(prob, truth, pp, start=raw.threshold))
    assert best.score == pytest.approx(evaluate(make_mask(prob, best.threshold, pp), truth).pixel.dice)
    assert best.score == max(score for _, score in best.points)
    assert {round(t, 6) for t in COARSE} <= {round(t, 6) for t, _ in best.points}
    at_raw = evaluate(make_mask(prob, raw.threshold, pp), truth).pixel.dice
    assert best.score >= at_raw  # the raw optimum is one of the candidates
    # post-processing moves the optimum: the processed best is not the raw exact one
    assert best.threshold != pytest.approx(raw.threshold, abs=1e-6) or best.score > raw.score


def test_processed_curve_points_are_the_post_processed_masks_metrics():
    prob, truth = specks_case(1)
    pp = PostProcess(min_size=20)
    gen = processed_curve(prob, truth, pp, thresholds=(0.3, 0.5, 0.7))
    events = []
    try:
        while True:
            events.append(next(gen))
    except StopIteration as stop:
        points = stop.value
    assert all(isinstance(e, Progress) for e in events) and len(events) == 3
    for t, metrics in points:
        assert metrics.dice == pytest.approx(evaluate(make_mask(prob, t, pp), truth).pixel.dice)


def test_processed_search_scores_only_the_predicted_planes():
    prob, truth = specks_case(2)
    stack_p = np.zeros((4, *prob.shape), dtype=np.float32)
    stack_t = np.repeat(truth[None], 4, axis=0)
    stack_p[2] = prob
    pp = PostProcess(min_size=20)
    best = run_to_end(best_processed_threshold(stack_p, stack_t, pp, planes=[2]))
    alone = run_to_end(best_processed_threshold(prob, truth, pp))
    assert best.threshold == pytest.approx(alone.threshold)
    assert best.score == pytest.approx(alone.score)
