"""Save model as…: the model saved from the GUI reproduces the mask on screen from the CLI."""

from __future__ import annotations

import numpy as np
import tifffile

from napari_segloop.cli import EXIT_OK, main
from napari_segloop.core.bundle import PostProcess, load_bundle, load_model, save_bundle
from napari_segloop.core.synthetic import make_nuclei


def _threshold_dock(viewer):
    from napari.utils._proxies import PublicOnlyProxy

    from napari_segloop.widgets.threshold_dock import ThresholdDock

    dock = ThresholdDock(PublicOnlyProxy(viewer))
    viewer.window.add_dock_widget(dock, name="Threshold")
    return dock


def test_saved_default_model_reproduces_the_napari_mask_on_the_cli(docks, qtbot, wait_job, tmp_path):
    image, _ = make_nuclei((160, 192), seed=3)
    path = tmp_path / "cells.tif"
    tifffile.imwrite(path, image)
    viewer, model_dock, predict_dock = docks(load_model("default"))
    (layer,) = viewer.open(str(path), plugin="napari")
    predict_dock.image_combo.set_layer(layer)
    assert predict_dock.run()
    wait_job(predict_dock.session)

    dock = _threshold_dock(viewer)
    qtbot.waitUntil(lambda: dock.probability_layer is not None, timeout=10_000)
    pp = PostProcess(min_size=40, fill_holes=True)
    dock.set_postprocess(pp)
    dock.set_threshold(0.3125)
    dock.refresh_mask()
    qtbot.waitUntil(lambda: not dock.busy and model_dock.session.mask_settings is not None
                    and model_dock.session.mask_settings.threshold == 0.3125
                    and model_dock.session.mask_settings.postprocess == pp, timeout=30_000)
    on_screen = np.asarray(dock.mask_layer().data).copy()
    assert 0 < on_screen.mean() < 0.9  # a real mask, not empty or full

    folder = tmp_path / "my nuclei model"
    assert model_dock.save_as(str(folder))
    wait_job(model_dock.session)
    saved = load_bundle(folder)
    assert saved.settings.threshold == 0.3125
    assert saved.settings.postprocess == pp
    assert model_dock.session.bundle.source == str(folder)
    assert saved.settings.provenance["parent"] == "default"

    out = tmp_path / "mask.tif"
    assert main(["predict", str(path), "--model", str(folder), "--threshold", "auto",
                 "--output", str(out), "--quiet"]) == EXIT_OK
    np.testing.assert_array_equal(tifffile.imread(out), on_screen)


def test_save_as_never_replaces_an_existing_bundle_silently(docks, tiny_bundle, wait_job, tmp_path,
                                                            notifications):
    folder = save_bundle(tiny_bundle, tmp_path / "taken")
    before = (folder / "model.safetensors").read_bytes()
    _viewer, model_dock, _ = docks(tiny_bundle)
    model_dock.session.set_mask_settings(0.7, PostProcess())
    assert model_dock.save_as(str(folder))
    wait_job(model_dock.session)
    assert any("already exists" in str(n.message) for n in notifications())
    assert (folder / "model.safetensors").read_bytes() == before
    assert load_bundle(folder).settings.threshold == tiny_bundle.settings.threshold
    # confirmed: replaced
    assert model_dock.save_as(str(folder), overwrite=True)
    wait_job(model_dock.session)
    assert load_bundle(folder).settings.threshold == 0.7


def test_save_as_without_a_model_says_so(docks):
    _viewer, model_dock, _ = docks()
    assert not model_dock.save_button.isEnabled()
    assert model_dock.save_as("/nonexistent/x") is False
    assert "No model is loaded" in model_dock.status.text()
