"""Ensembles (core.inference.ensemble): mean of members of any architecture, and their disagreement."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Progress, run_to_end
from napari_segloop.core.inference.ensemble import Ensemble, predict_any, predict_ensemble
from napari_segloop.core.inference.files import predict_file
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.io.images import read_image, write_image
from napari_segloop.core.models.registry import create_model
from tests.core.tiny_models import tiny_bundle

OPTS = PredictOptions(device="cpu", tile_size=64)


@pytest.fixture(scope="module")
def members():
    torch.manual_seed(3)
    other = create_model("ClassicUNet", None, base_channels=4)  # input multiple 16, not 32
    other.settings.threshold = 0.3
    first = tiny_bundle(seed=1)
    first.settings.threshold = 0.7
    return [first, other]


def test_the_ensemble_averages_its_members_whatever_their_architecture(members):
    image = np.random.default_rng(0).random((50, 77)).astype(np.float32)
    singles = [run_to_end(predict(m, image, OPTS)) for m in members]
    events = []
    result = run_to_end(predict_ensemble(Ensemble(members), image, OPTS), events.append)
    np.testing.assert_allclose(result.probability, (singles[0] + singles[1]) / 2, atol=1e-6)
    # Two members: twice the standard deviation is their absolute difference.
    np.testing.assert_allclose(result.disagreement, np.clip(np.abs(singles[0] - singles[1]), 0, 1),
                               atol=1e-5)
    assert result.members == 2
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total
    assert {e.message for e in progress} >= {"model 1 of 2", "model 2 of 2"}
    np.testing.assert_array_equal(run_to_end(predict_any(Ensemble(members), image, OPTS)),
                                  result.probability)


def test_identical_members_disagree_nowhere(members):
    image = np.random.default_rng(1).random((40, 40)).astype(np.float32)
    result = run_to_end(predict_ensemble([members[0], members[0], members[0]], image, OPTS))
    assert result.disagreement.max() == 0.0


def test_members_of_different_tasks_are_refused(members):
    with pytest.raises(InputError, match="input channel"):
        Ensemble([members[0], tiny_bundle(in_channels=2)])
    with pytest.raises(InputError, match="at least two"):
        Ensemble([members[0]])


def test_an_ensemble_file_prediction_uses_the_first_models_threshold(members, tmp_path):
    image = np.random.default_rng(2).random((48, 48)).astype(np.float32)
    src = tmp_path / "img.tif"
    write_image(src, image)
    ens = Ensemble(members)
    run_to_end(predict_file(ens, src, tmp_path / "prob.tif", OPTS))
    run_to_end(predict_file(ens, src, tmp_path / "mask.tif", OPTS, threshold="auto"))
    prob = read_image(tmp_path / "prob.tif")
    mask = read_image(tmp_path / "mask.tif")
    np.testing.assert_array_equal(mask > 0, prob > 0.7)  # model 1's threshold, no post-processing
    assert ens.settings is members[0].settings and "ClassicUNet" in ens.architecture
