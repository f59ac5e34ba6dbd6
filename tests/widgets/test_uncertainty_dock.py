"""The Uncertainty dock with a real viewer and the real worker: layers, ranking, "Next region", refresh."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.active import uncertainty
from napari_segloop.core.bundle import ModelBundle, create_model
from napari_segloop.core.events import run_to_end
from napari_segloop.core.synthetic import make_nuclei


@pytest.fixture
def setup(make_napari_viewer, tiny_bundle, qtbot):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.session import session_for
    from napari_segloop.widgets.uncertainty_dock import UncertaintyDock

    def make(image: np.ndarray, bundle: ModelBundle = tiny_bundle, **image_kwargs):
        viewer = make_napari_viewer()
        layer = viewer.add_image(image, name="cells", **image_kwargs)
        session = session_for(viewer)
        session.set_model(bundle)
        dock = UncertaintyDock(PublicOnlyProxy(viewer))
        viewer.window.add_dock_widget(dock, name="Uncertainty")
        dock.image_combo.set_layer(layer)
        return viewer, dock, session, layer

    return make


def _compute(dock, session, qtbot) -> None:
    assert dock.compute()
    qtbot.waitUntil(lambda: not session.busy and dock.worker is None, timeout=60_000)


def _layer(viewer, role):
    from napari_segloop.widgets.outputs import find_output

    return find_output(viewer, role, "cells")


def test_compute_shows_the_map_and_the_ranked_regions(setup, qtbot, tiny_bundle):
    img, _ = make_nuclei((96, 128), seed=1)
    before = img.copy()
    viewer, dock, session, layer = setup(img)
    dock.side_spin.setValue(32)
    dock.top_spin.setValue(5)
    _compute(dock, session, qtbot)

    umap = _layer(viewer, "uncertainty")
    expected = run_to_end(uncertainty(tiny_bundle, img)).uncertainty
    np.testing.assert_allclose(umap.data, expected, atol=1e-6)
    regions = _layer(viewer, "regions")
    assert len(regions.data) == 5
    assert list(regions.features["rank"]) == [1, 2, 3, 4, 5]
    scores = [r.score for r in dock.queue.regions]
    assert scores == sorted(scores, reverse=True) and len(scores) == 3 * 4
    # The rectangles outline the five best regions (pixel edges, so -0.5).
    y0, x0, y1, x1 = dock.queue.regions[0].bbox
    np.testing.assert_allclose(regions.data[0].min(axis=0), [y0 - 0.5, x0 - 0.5])
    np.testing.assert_allclose(regions.data[0].max(axis=0), [y1 - 0.5, x1 - 0.5])
    np.testing.assert_array_equal(layer.data, before)  # the user's image is untouched


def test_next_region_moves_the_camera_and_opens_the_paint_tool(setup, qtbot):
    img, _ = make_nuclei((96, 128), seed=2)
    viewer, dock, session, _ = setup(img, scale=(2.0, 2.0), translate=(10.0, -4.0))
    dock.side_spin.setValue(32)
    _compute(dock, session, qtbot)
    first = dock.next_region()
    assert first is dock.queue.regions[0]
    cy, cx = first.centre
    from napari_segloop.widgets.session import camera_of

    np.testing.assert_allclose(camera_of(viewer).center[-2:], (10 + 2 * cy, -4 + 2 * cx), atol=1e-6)
    scribbles = viewer.layers.selection.active
    assert scribbles.name == "cells scribbles" and scribbles.mode == "paint"
    assert scribbles.data.shape == img.shape and not scribbles.data.any()
    assert tuple(scribbles.scale) == (2.0, 2.0)
    assert dock.labels_combo.layer() is scribbles
    assert "Region 1 of 12" in dock.status.text()


def test_regions_painted_since_the_ranking_are_skipped(setup, qtbot):
    img, _ = make_nuclei((96, 128), seed=3)
    viewer, dock, session, _ = setup(img)
    dock.side_spin.setValue(32)
    _compute(dock, session, qtbot)
    ranked = list(dock.queue.regions)
    assert dock.next_region() is ranked[0]
    scribbles = viewer.layers.selection.active
    y0, x0, _, _ = ranked[1].bbox
    data = scribbles.data.copy()
    data[y0 + 2, x0 + 2] = 1  # one stroke in the second-ranked region
    scribbles.data = data
    assert dock.next_region() is ranked[2]


def test_annotated_regions_are_left_out_of_the_ranking(setup, qtbot):
    img, _ = make_nuclei((64, 64), seed=4)
    viewer, dock, session, _ = setup(img)
    scribbles = np.zeros(img.shape, np.uint8)
    scribbles[40, 40] = 2  # the region (32, 32, 64, 64)
    labels = viewer.add_labels(scribbles, name="my labels")
    dock.side_spin.setValue(32)
    dock.labels_combo.set_layer(labels)
    _compute(dock, session, qtbot)
    boxes = [r.bbox for r in dock.queue.regions]
    assert len(boxes) == 3 and (32, 32, 64, 64) not in boxes


def test_a_stack_navigates_to_the_slice_of_the_region(setup, qtbot):
    img = np.stack([make_nuclei((64, 64), seed=s)[0] for s in range(3)])
    viewer, dock, session, _ = setup(img)
    dock.side_spin.setValue(32)
    _compute(dock, session, qtbot)
    assert _layer(viewer, "uncertainty").data.shape == img.shape
    assert len(dock.queue) == 3 * 4
    regions = _layer(viewer, "regions")
    assert regions.data[0].shape == (4, 3)  # z, y, x corners
    first = dock.next_region()
    assert viewer.dims.current_step[0] == first.index[0]
    second = dock.next_region()
    assert viewer.dims.current_step[0] == second.index[0]


def test_the_ranking_refreshes_when_training_gives_a_new_model(setup, qtbot):
    img, _ = make_nuclei((64, 64), seed=5)
    viewer, dock, session, _ = setup(img)
    dock.side_spin.setValue(32)
    _compute(dock, session, qtbot)
    old = _layer(viewer, "uncertainty").data.copy()
    torch.manual_seed(7)
    trained = create_model("Unet", "tu-lcnet_050", 1, 1, decoder_channels=(16, 16, 16, 16, 16))
    session.set_model(trained, label="cells-v001 (trained)")
    qtbot.waitUntil(lambda: dock.worker is None and not session.busy, timeout=60_000)
    new = _layer(viewer, "uncertainty").data
    expected = run_to_end(uncertainty(trained, img)).uncertainty
    np.testing.assert_allclose(new, expected, atol=1e-6)
    assert not np.allclose(new, old)

    dock.refresh_check.setChecked(False)
    session.set_model(create_model("Unet", "tu-lcnet_050", 1, 1, decoder_channels=(16, 16, 16, 16, 16)))
    assert dock.worker is None and not session.busy  # no new computation


def test_cancel_writes_nothing(setup, qtbot, slow_bundle):
    img, _ = make_nuclei((256, 256), seed=6)
    viewer, dock, session, _ = setup(img, bundle=slow_bundle)
    dock.method_combo.setCurrentIndex(dock.method_combo.findData("tta"))
    assert dock.compute()
    dock.cancel()
    qtbot.waitUntil(lambda: dock.worker is None and not session.busy, timeout=60_000)
    assert _layer(viewer, "uncertainty") is None and _layer(viewer, "regions") is None
    assert dock.queue is None and "Cancelled" in dock.status.text()


def test_mc_dropout_on_a_model_without_dropout_says_so(setup, qtbot):
    img, _ = make_nuclei((64, 64), seed=7)
    viewer, dock, session, _ = setup(img)
    dock.method_combo.setCurrentIndex(dock.method_combo.findData("mc-dropout"))
    _compute(dock, session, qtbot)
    assert "no dropout layers" in dock.status.text()
    assert _layer(viewer, "uncertainty") is None


def test_a_model_set_during_a_training_job_refreshes_when_the_job_ends(setup, qtbot):
    """The Fine-tune dock sets the trained model while its job still runs: wait for the job to end."""
    from napari_segloop.widgets.session import Job

    img, _ = make_nuclei((64, 64), seed=8)
    viewer, dock, session, _ = setup(img)
    dock.side_spin.setValue(32)
    _compute(dock, session, qtbot)
    job = Job("training", worker=None)
    session.job = job  # a training run in progress
    torch.manual_seed(9)
    trained = create_model("Unet", "tu-lcnet_050", 1, 1, decoder_channels=(16, 16, 16, 16, 16))
    session.set_model(trained, label="cells-v001 (trained)")
    assert dock.worker is None  # not while the training job holds the session
    session._job_finished(job)
    assert dock.worker is not None
    qtbot.waitUntil(lambda: dock.worker is None and not session.busy, timeout=60_000)
    expected = run_to_end(uncertainty(trained, img)).uncertainty
    np.testing.assert_allclose(_layer(viewer, "uncertainty").data, expected, atol=1e-6)


def test_an_image_larger_than_memory_is_refused_but_one_plane_of_it_is_computed(setup, qtbot, monkeypatch,
                                                                                notifications):
    import dask.array as da

    from napari_segloop.widgets import large_layers

    monkeypatch.setattr(large_layers, "LARGE_BYTES", 50_000)  # 3 x 96 x 128 float32 is 147 kB
    img = np.stack([make_nuclei((96, 128), seed=s)[0] for s in range(3)]).astype(np.float32)
    viewer, dock, session, _ = setup(da.from_array(img, chunks=(1, 64, 64)))
    before = [lyr.name for lyr in viewer.layers]
    assert not dock.compute()
    assert not session.busy and [lyr.name for lyr in viewer.layers] == before
    assert any("larger than memory" in n.message for n in notifications())
    dock.slice_check.setChecked(True)  # one plane of 49 kB fits
    _compute(dock, session, qtbot)
    assert _layer(viewer, "uncertainty") is not None
