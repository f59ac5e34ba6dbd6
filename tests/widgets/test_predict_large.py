"""The Predict dock on a layer larger than memory: a zarr-backed probability layer filled block by block."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_segloop.core.events import run_to_end
from napari_segloop.core.inference.blocks import ArrayWriter, predict_blocks
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.core.io.lazy import LazyImage
from napari_segloop.widgets import large_layers
from napari_segloop.widgets.session import session_for

da = pytest.importorskip("dask.array")


@pytest.fixture
def large(monkeypatch, tmp_path, small_blocks):
    """Count every layer of more than 100 kB as "larger than memory"; blocks of 128 px, chunks of 64."""
    monkeypatch.setattr(large_layers, "LARGE_BYTES", 100_000)
    monkeypatch.setattr(large_layers, "LARGE_PIXELS", 100_000)
    image = (np.random.default_rng(0).random((300, 380)) * 200).astype(np.float32)
    return image


def test_a_dask_layer_is_predicted_into_a_zarr_backed_multiscale_layer(docks, tiny_bundle, wait_job, large,
                                                                      qtbot):
    viewer, _, predict = docks(tiny_bundle)
    image = large
    layer = viewer.add_image(da.from_array(image, chunks=100), name="slide")
    session = session_for(viewer)
    predict.image_combo.set_layer(layer)
    assert predict.run()
    wait_job(session)
    out = viewer.layers["slide probability"]
    assert out.multiscale and isinstance(out.data[0], zarr.Array)
    assert out.data[0].shape == image.shape and len(out.data) >= 3
    # The same values as the core's block-by-block prediction (which tests/core checks against memory).
    ref = np.zeros(image.shape, np.float32)
    opts = predict.options()
    run_to_end(predict_blocks(tiny_bundle, LazyImage(image), ArrayWriter(ref),
                              PredictOptions(**{**opts.__dict__, "channel_axis": None}), block=128))
    np.testing.assert_allclose(out.data[0][:], ref, atol=1e-6)
    assert out.data[1].shape == (150, 190)
    entry = session.probability(layer)
    assert entry is not None and entry.complete and entry.layer() is out
    assert "Done" in predict.status.text() and ".ome.zarr" in predict.status.text()
    assert np.asarray(layer.data).shape == image.shape  # the user's layer is untouched
    assert isinstance(layer.data, da.Array)


def test_the_blocks_on_screen_are_predicted_first(large):
    from napari_segloop.core.inference.blocks import plan_blocks, visible_first

    blocks = plan_blocks((), 1000, 1000, 200, 10)
    ordered = visible_first(blocks, (610, 790, 610, 790))
    assert (ordered[0].y0, ordered[0].x0) == (600, 600)
    on_screen = [b for b in ordered if not (b.y1 <= 610 or b.y0 >= 790 or b.x1 <= 610 or b.x0 >= 790)]
    assert ordered[: len(on_screen)] == on_screen
    assert sorted(ordered, key=lambda b: (b.y0, b.x0)) == blocks


def test_cancelling_keeps_the_blocks_done_and_says_so(docks, tiny_bundle, wait_job, large, monkeypatch):
    from napari_segloop.core.events import BlockWritten

    viewer, _, predict = docks(tiny_bundle)
    layer = viewer.add_image(da.from_array(large, chunks=100), name="slide")
    predict.image_combo.set_layer(layer)
    seen = []

    real_event = predict._on_event

    def on_event(event):
        real_event(event)
        if isinstance(event, BlockWritten):
            seen.append(event)
            if len(seen) == 2:
                predict.cancel()

    monkeypatch.setattr(predict, "_on_event", on_event)
    assert predict.run()
    predict.run_state.worker.yielded.disconnect()
    predict.run_state.worker.yielded.connect(on_event)
    wait_job(session_for(viewer))
    assert "blocks done so far stay" in predict.status.text()
    out = viewer.layers["slide probability"]
    assert out.multiscale
    entry = session_for(viewer).probability(layer)
    assert entry is not None and not entry.complete


def test_a_labels_layer_larger_than_memory_is_refused_by_the_confusion_dock(make_napari_viewer, large,
                                                                              notifications):
    from napari_segloop.widgets.eval_engine import engine_for

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    prob = viewer.add_image(da.from_array(rng.random((300, 380)).astype(np.float32)), name="huge probability")
    mask = viewer.add_labels(da.from_array((rng.random((300, 380)) > 0.5).astype(np.uint8)), name="huge mask")
    engine = engine_for(session_for(viewer))
    engine.state.probability = prob
    engine.read_inputs()
    assert engine.inputs is not None and engine.inputs.large  # scored from histograms
    engine.state.labels = mask
    assert engine.inputs is None and "segloop evaluate" in engine.message
    assert any("larger than memory" in str(n.message) for n in notifications())
