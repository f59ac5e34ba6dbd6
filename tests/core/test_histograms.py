"""Curves and pixel counts of maps larger than memory, block by block (core.evaluation.histograms)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.curve import ThresholdCurve
from napari_segloop.core.evaluation.histograms import (
    BinnedCurve,
    binned_curve,
    block_slices,
    count_pixels,
)
from napari_segloop.core.events import Progress, run_to_end


def run(gen):
    """Drain a generator; return (what it yielded, what it returned)."""
    events: list = []
    return events, run_to_end(gen, events.append)


class ReadLog:
    """An array that records the size of every read (to prove no read is whole)."""

    def __init__(self, array):
        self.array = array
        self.shape, self.dtype = array.shape, array.dtype
        self.chunks = getattr(array, "chunks", None)
        self.reads: list[int] = []

    def __getitem__(self, index):
        block = np.asarray(self.array[index])
        self.reads.append(block.size)
        return block


def maps(shape=(300, 410), seed=0):
    rng = np.random.default_rng(seed)
    prob = rng.random(shape, dtype=np.float32)
    # Values exactly on slider edges and at the ends: the bins must treat them as prob > t does.
    flat = prob.reshape(-1)
    flat[:2000] = np.linspace(0, 1, 1001, dtype=np.float32)[rng.integers(0, 1001, 2000)]
    flat[2000:2100] = 0.0
    flat[2100:2200] = 1.0
    truth = (rng.random(shape) < prob * 0.8).astype(np.uint16) * rng.integers(1, 9, shape).astype(np.uint16)
    return prob, truth


def as_zarr(arr, chunks):
    z = zarr.create_array(store={}, shape=arr.shape, chunks=chunks, dtype=arr.dtype)
    z[...] = arr
    return z


def test_the_binned_curve_equals_the_exact_curve_at_every_step():
    prob, truth = maps()
    exact = ThresholdCurve(prob, truth)
    steps, curve = run(binned_curve(as_zarr(prob, (64, 64)), as_zarr(truth, (64, 64)), block=100))
    assert isinstance(curve, BinnedCurve)
    assert all(isinstance(p, Progress) for p in steps)
    assert steps[-1].done == steps[-1].total == 3 * 4  # blocks of 128² (100 rounded up to the chunks)
    a, b = exact.curve(), curve.curve()
    for name in ("tp", "fp", "fn", "tn"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (curve.n_pixels, curve.n_positive, curve.shape) == (exact.n_pixels, exact.n_positive, prob.shape)
    for t in (0.0, 0.25, 0.5, 0.731, 1.0):
        assert curve.metrics(t) == exact.metrics(t)
        assert curve.counts(t)[0] == int(np.count_nonzero((prob > np.float32(t)) & (truth > 0)))


def test_the_best_threshold_is_the_best_step_and_says_it_is_not_exact():
    prob, truth = maps(seed=1)
    exact = ThresholdCurve(prob, truth)
    _, curve = run(binned_curve(prob, truth))
    best = curve.best_threshold("dice")
    assert not best.exact and exact.best_threshold("dice").exact
    assert best.threshold == exact.threshold_at(exact.best_step("dice"))
    assert best.upper == pytest.approx(best.threshold + 0.001, abs=1e-6)
    assert best.score == pytest.approx(best.metrics.dice)
    # The best step is at most a little below the exact optimum.
    assert exact.best_threshold("dice").score - best.score < 1e-3


def test_counts_between_steps_need_a_pass_that_is_exact():
    prob, truth = maps(seed=2)
    _, curve = run(binned_curve(prob, truth))
    with pytest.raises(InputError, match="between the slider's steps"):
        curve.counts(0.4567)
    log = ReadLog(as_zarr(prob, (50, 50)))
    _, m = run(count_pixels(log, truth, 0.4567, block=120))
    fg, mask = truth > 0, prob > np.float32(0.4567)
    assert (m.tp, m.fp, m.fn, m.tn) == (int(np.sum(mask & fg)), int(np.sum(mask & ~fg)),
                                        int(np.sum(~mask & fg)), int(np.sum(~mask & ~fg)))
    assert m.threshold == 0.4567
    assert max(log.reads) <= 150 * 150 < prob.size  # chunk-aligned blocks, never the whole map


def test_a_stack_is_read_one_plane_block_at_a_time():
    prob, truth = maps(shape=(3, 90, 70), seed=3)
    log = ReadLog(prob)
    _, curve = run(binned_curve(log, truth, block=64))
    assert max(log.reads) == 64 * 64
    np.testing.assert_array_equal(curve.curve().tp, ThresholdCurve(prob, truth).curve().tp)


def test_otsu_of_the_histogram_splits_like_otsu_of_the_values():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(4)
    prob = np.clip(np.concatenate([rng.normal(0.2, 0.05, 40000), rng.normal(0.7, 0.08, 20000)]),
                   0, 1).astype(np.float32).reshape(200, 300)
    _, curve = run(binned_curve(prob))
    t = curve.otsu()
    assert curve.step_of(t) is not None
    assert abs(t - threshold_otsu(prob, nbins=1000)) < 0.005
    assert curve.n_positive == 0 and curve.n_pixels == prob.size
    _, constant = run(binned_curve(np.full((20, 20), 0.3, np.float32)))
    assert np.count_nonzero(np.full((20, 20), 0.3, np.float32) > constant.otsu()) == 0


def test_bad_blocks_are_refused_with_where_they_are():
    prob, truth = maps(shape=(200, 200), seed=5)
    prob[150, 10] = np.nan
    with pytest.raises(InputError, match=r"NaN.*block starting at index \(128, 0\)"):
        run(binned_curve(prob, truth, block=128))
    with pytest.raises(InputError, match="shape"):
        run(binned_curve(prob[:100], truth))
    with pytest.raises(InputError, match="floating-point"):
        run(count_pixels(truth, truth, 0.5))
    with pytest.raises(InputError, match="ground truth"):
        run(count_pixels(prob, None, 0.5))


def test_blocks_tile_the_shape_once_and_follow_the_chunks():
    z = as_zarr(np.zeros((250, 130), np.float32), (40, 40))
    seen = np.zeros((250, 130), int)
    for index in block_slices(z.shape, 50, z):
        assert (index[0].stop - index[0].start) <= 80 and index[0].start % 80 == 0
        seen[index] += 1
    assert (seen == 1).all()
