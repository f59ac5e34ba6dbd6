"""The Threshold and Confusion docks on a zarr-backed map larger than memory: scored from histograms.

The thresholds of "larger than memory" are lowered (the ``large`` fixture) so
a 300 x 380 map takes the block-by-block path; the scores must equal those
of the whole arrays in memory, and the in-memory path must never run.
"""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_segloop.core.evaluation import confusion_image, evaluate
from napari_segloop.core.evaluation.curve import ThresholdCurve
from napari_segloop.core.evaluation.histograms import BinnedCurve
from napari_segloop.core.io.omezarr import downsample, pyramid_shapes
from napari_segloop.widgets import large_layers, outputs

da = pytest.importorskip("dask.array")


@pytest.fixture
def large(monkeypatch):
    """Count every layer of more than 100 kB as larger than memory, and forbid the in-memory path."""
    monkeypatch.setattr(large_layers, "LARGE_BYTES", 100_000)
    monkeypatch.setattr(large_layers, "LARGE_PIXELS", 100_000)

    def refuse(*_args, **_kwargs):
        raise AssertionError("the in-memory threshold curve was built for a map larger than memory")

    monkeypatch.setattr(ThresholdCurve, "__init__", refuse)


def zarr_pyramid(prob, chunk=64):
    levels = [prob]
    for shape in pyramid_shapes(prob.shape, chunk)[1:]:
        levels.append(downsample(levels[-1], "probability", shape[-2:]))
    out = []
    for level in levels:
        z = zarr.create_array(store={}, shape=level.shape, chunks=(chunk, chunk), dtype=np.float32)
        z[...] = level
        out.append(z)
    return out


def maps(seed=0, shape=(300, 380)):
    rng = np.random.default_rng(seed)
    yy, xx = np.indices(shape)
    truth = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(rng.integers(20, min(shape) - 20, (25, 2)), start=1):
        truth[(yy - y) ** 2 + (xx - x) ** 2 < 120] = i
    prob = np.clip(0.2 + 0.55 * (truth > 0) + rng.normal(0, 0.15, shape), 0, 1).astype(np.float32)
    return prob, truth


@pytest.fixture
def large_docks(make_napari_viewer, qtbot, large):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.confusion_dock import ConfusionDock
    from napari_segloop.widgets.session import METADATA_KEY
    from napari_segloop.widgets.threshold_dock import ThresholdDock

    prob, truth = maps()
    viewer = make_napari_viewer()
    layer = viewer.add_image(zarr_pyramid(prob), multiscale=True, name="slide probability",
                             metadata={METADATA_KEY: {"role": "probability", "image": "slide"}})
    viewer.add_labels(da.from_array(truth, chunks=64), name="slide truth")
    tdock, cdock = ThresholdDock(PublicOnlyProxy(viewer)), ConfusionDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(tdock)
    viewer.window.add_dock_widget(cdock)
    tdock.state.probability = layer
    tdock.state.set_truth(viewer.layers["slide truth"])
    wait = lambda: qtbot.waitUntil(lambda: not (tdock.busy or cdock.busy), timeout=30_000)  # noqa: E731
    wait()
    return viewer, tdock, cdock, prob, truth, wait


def test_the_docks_score_a_map_larger_than_memory_from_histograms(large_docks):
    viewer, tdock, cdock, prob, truth, wait = large_docks
    engine = tdock.engine
    assert engine.inputs.large and isinstance(engine.whole_curve, BinnedCurve)
    assert "larger than memory" in tdock.status.text() and "larger than memory" in cdock.status.text()
    tdock.set_threshold(0.5)
    tdock.refresh_mask()
    wait()
    ref = evaluate(prob, truth, 0.5, objects=False).pixel
    assert cdock.table.text("tp", 0) == f"{ref.tp:,}" and cdock.table.text("fp", 0) == f"{ref.fp:,}"
    assert cdock.table.text("dice", 0) == f"{ref.dice:.4f}"
    assert f"Dice {ref.dice:.3f}" in tdock.readout.text()
    assert tdock.plot.has_curve
    # The mask is a lazy pyramid of the raw threshold, exact at full resolution.
    mask = tdock.mask_layer()
    assert mask.multiscale and len(mask.data) == len(tdock.state.probability.data)
    assert isinstance(mask.data[0], da.Array)
    np.testing.assert_array_equal(np.asarray(mask.data[0]), (prob > np.float32(0.5)).astype(np.uint8))
    # A threshold between the slider's steps is counted exactly by one more pass.
    tdock.set_threshold(0.4567)
    tdock.refresh_mask()
    wait()
    off = evaluate(prob, truth, 0.4567, objects=False).pixel
    assert cdock.table.text("fn", 0) == f"{off.fn:,}"
    # The errors overlay: lazy confusion codes, exact at full resolution.
    tdock.state.show = "errors"
    wait()
    codes = outputs.find_output(viewer, outputs.CONFUSION_ROLE, "slide")
    assert codes is not None and codes.visible and codes.multiscale
    expected = confusion_image(prob > np.float32(0.4567), truth)
    np.testing.assert_array_equal(np.asarray(codes.data[0]), expected)
    assert codes.data[1].shape == tdock.state.probability.data[1].shape
    # Objects are not computed: n/a, never "updating" forever.
    assert cdock.table.text("dice", 0) == f"{off.dice:.4f}"
    assert "updating" not in cdock.status.text()


def exact_best_dice(prob, truth):
    """The exact best Dice over every threshold, by brute force (a sort of every value)."""
    v, fg = prob.ravel(), truth.ravel() > 0
    order = np.argsort(v, kind="stable")
    s, below_pos = v[order], np.cumsum(fg[order])
    last = np.append(s[:-1] != s[1:], True)  # cut after the last copy of each value
    tp = fg.sum() - below_pos
    predicted = v.size - np.arange(1, v.size + 1)
    dice = np.where(last, 2 * tp / (predicted + fg.sum()), -1)
    i = int(np.argmax(dice))
    return float(s[i]), float(dice[i])


def test_best_is_the_exact_optimum_and_otsu_comes_from_the_histogram(large_docks, monkeypatch):
    from skimage.filters import threshold_otsu

    from napari_segloop.widgets import eval_engine

    _, tdock, cdock, prob, truth, wait = large_docks

    def no_counting_pass(*_args, **_kwargs):
        raise AssertionError("the best threshold's counts were counted again")

    monkeypatch.setattr(eval_engine, "count_pixels", no_counting_pass)
    tdock.best_threshold()
    wait()
    best = tdock.best
    threshold, score = exact_best_dice(prob, truth)
    scores = [evaluate(prob, truth, t, objects=False).pixel.dice for t in np.linspace(0, 1, 1001)]
    assert score > max(scores)  # the optimum lies between the slider's steps
    assert best.exact and best.score == pytest.approx(score, abs=1e-12)
    assert best.threshold == threshold and tdock.threshold == pytest.approx(threshold)
    assert "exact optimum" in tdock.status.text()
    # Its counts came with it: the table shows them without another counting pass.
    ref = evaluate(prob, truth, threshold, objects=False).pixel
    assert tdock.engine.whole_curve.known(threshold)
    assert cdock.table.text("tp", 0) == f"{ref.tp:,}" and cdock.table.text("dice", 0) == f"{ref.dice:.4f}"
    tdock.otsu()
    wait()
    assert abs(tdock.threshold - threshold_otsu(prob, nbins=1000)) < 0.01
    assert "Otsu" in tdock.status.text()


def test_post_processing_and_regions_are_refused_with_a_reason(large_docks):
    from napari_segloop.core.masks import PostProcess

    viewer, tdock, cdock, prob, truth, wait = large_docks
    tdock.set_postprocess(PostProcess(min_size=50, fill_holes=True))
    wait()
    assert tdock.state.raw_only and tdock.state.effective_postprocess() is None
    assert not tdock.pp_box.isEnabled() and "block by block" in tdock.pp_box.toolTip()
    ref = evaluate(prob, truth, tdock.threshold, objects=False).pixel
    assert cdock.table.text("tp", 0) == f"{ref.tp:,}"  # the raw mask, as the dock says
    tdock.state.region = "view"
    wait()
    assert tdock.engine.inputs.truth is None
    assert "Choose 'whole image'" in cdock.status.text()
    # Back to an ordinary map: post-processing is offered again.
    small = viewer.add_image(prob[:100, :100].copy(), name="crop probability")
    tdock.state.region = "all"
    tdock.state.probability = small
    wait()
    assert not tdock.state.raw_only and tdock.pp_box.isEnabled()


def test_a_map_predicted_block_by_block_is_scored_again_when_it_is_done(docks, tiny_bundle, wait_job, large,
                                                                         small_blocks, qtbot):
    """Predict dock -> zarr-backed map -> Threshold/Confusion docks, the loop a whole-slide user runs."""
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.confusion_dock import ConfusionDock
    from napari_segloop.widgets.session import session_for
    from napari_segloop.widgets.threshold_dock import ThresholdDock

    _, truth = maps(seed=3)
    viewer, _, predict = docks(tiny_bundle)
    image = viewer.add_image(da.from_array((truth > 0) * 150.0 + 20.0, chunks=100).astype(np.float32),
                             name="slide")
    viewer.add_labels(truth, name="slide truth")
    tdock, cdock = ThresholdDock(PublicOnlyProxy(viewer)), ConfusionDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(tdock)
    viewer.window.add_dock_widget(cdock)
    predict.image_combo.set_layer(image)
    assert predict.run()
    qtbot.waitUntil(lambda: "slide probability" in viewer.layers, timeout=30_000)
    prob_layer = viewer.layers["slide probability"]
    tdock.state.probability = prob_layer
    tdock.state.set_truth(viewer.layers["slide truth"])
    wait_job(session_for(viewer))
    qtbot.waitUntil(lambda: not (tdock.busy or cdock.busy), timeout=30_000)
    assert tdock.engine.inputs.large and "Still being predicted" not in cdock.status.text()
    prob = np.asarray(prob_layer.data[0][:])
    ref = evaluate(prob, truth, tdock.threshold, objects=False).pixel
    assert tdock.engine.whole_curve.metrics(tdock.threshold) == ref  # the curve of the finished map
    assert cdock.table.text("tp", 0) == f"{ref.tp:,}"


def test_correcting_the_mask_of_a_map_larger_than_memory_is_refused(large_docks, notifications):
    """A correction layer is an in-memory copy of the mask: of a lazy pyramid it is refused, not read."""
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.finetune_dock import FinetuneDock

    viewer, tdock, *_ = large_docks
    tdock.refresh_mask()
    image = viewer.add_image(da.zeros((300, 380), np.float32, chunks=64), name="slide")
    mask = tdock.mask_layer()
    assert mask.multiscale
    fdock = FinetuneDock(PublicOnlyProxy(viewer))
    before = [(layer.name, layer.visible) for layer in viewer.layers]
    assert fdock.correction_layer(image) is None
    assert [(layer.name, layer.visible) for layer in viewer.layers] == before
    assert any("larger than memory" in n.message and "scribbles" in n.message for n in notifications())
