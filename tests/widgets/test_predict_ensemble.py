"""Ensembles in napari: the Predict dock averages the checked session models and shows where they
disagree; the Uncertainty dock ranks regions by that disagreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import create_model
from napari_segloop.core.events import run_to_end
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.widgets.outputs import find_output


def _tiny(seed: int, classes: int = 1):
    torch.manual_seed(seed)
    return create_model("Unet", "tu-lcnet_050", 1, classes, encoder_depth=3, decoder_channels=(16, 16, 16))


@pytest.fixture
def two_models():
    return _tiny(1), _tiny(2)


def test_checked_models_are_averaged_and_their_disagreement_shown(docks, two_models, qtbot, wait_job):
    a, b = two_models
    viewer, _, dock = docks(a)
    session = dock.session
    session.set_model(b, label="second")
    rng = np.random.default_rng(0)
    img = rng.random((64, 64), dtype=np.float32)
    layer = viewer.add_image(img, name="cells")
    dock.tile_spin.setValue(64)
    assert dock.ensemble_list.count() == 2
    dock.set_ensemble([dock.ensemble_list.item(0).text(), "second"])
    assert len(dock.ensemble_members()) == 2 and session.ensemble == [a, b]
    assert "Ensemble of 2 models" in dock.status.text()
    assert dock.run()
    wait_job(session)
    opts = PredictOptions(tile_size=64)
    pa, pb = run_to_end(predict(a, img, opts)), run_to_end(predict(b, img, opts))
    np.testing.assert_allclose(viewer.layers["cells probability"].data, (pa + pb) / 2, atol=1e-5)
    spread = find_output(viewer, "uncertainty", "cells")
    np.testing.assert_allclose(spread.data, np.clip(np.abs(pa - pb), 0, 1), atol=1e-4)
    assert "ensemble of 2 models" in spread.metadata["napari-segloop"]["description"]
    assert dock.command_edit.text().count("--model") == 2
    np.testing.assert_array_equal(layer.data, img)
    # unchecking one model predicts with the current model alone again
    dock.set_ensemble([])
    assert session.ensemble == []


def test_models_of_different_tasks_are_refused_as_an_ensemble(docks, two_models, wait_job,
                                                              notifications):
    viewer, _, dock = docks(two_models[0])
    dock.session.set_model(_tiny(3, classes=3), label="three classes")
    viewer.add_image(np.zeros((64, 64), np.float32), name="cells")
    dock.set_ensemble([dock.ensemble_list.item(0).text(), "three classes"])
    assert "class" in dock.status.text()
    assert dock.run() is False
    assert any("class" in n.message for n in notifications())


def test_the_uncertainty_dock_ranks_regions_by_the_ensemble_disagreement(docks, two_models, qtbot):
    from napari_segloop.core.active import uncertainty
    from napari_segloop.widgets.uncertainty_dock import UncertaintyDock

    a, b = two_models
    viewer, _, predict_dock = docks(a)
    session = predict_dock.session
    session.set_model(b, label="second")
    img = np.random.default_rng(1).random((64, 64), dtype=np.float32)
    viewer.add_image(img, name="cells")
    dock = UncertaintyDock(viewer)
    dock.method_combo.setCurrentIndex(dock.method_combo.findData("ensemble"))
    dock.side_spin.setValue(32)
    assert dock.compute() is False  # nothing checked yet
    predict_dock.set_ensemble([predict_dock.ensemble_list.item(0).text(), "second"])
    assert dock.compute()
    qtbot.waitUntil(lambda: not session.busy and dock.worker is None, timeout=60_000)
    expected = run_to_end(uncertainty(a, img, None, "ensemble", members=[b])).uncertainty
    np.testing.assert_allclose(find_output(viewer, "uncertainty", "cells").data, expected, atol=1e-5)
