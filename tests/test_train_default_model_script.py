"""``scripts/train_default_model.py`` trains with the product's trainer and writes a usable bundle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from napari_segloop.core.bundle import load_model
from napari_segloop.core.inference.predict import predict_array

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_default_model.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("train_default_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_target_separates_touching_objects(script):
    labels = np.zeros((20, 20), np.int32)
    labels[5:15, 2:10] = 1
    labels[5:15, 10:18] = 2
    target = script.target_mask(labels)
    assert target[10, 5] == 1 and target[10, 14] == 1
    assert not target[5:15, 9:11].any()  # the line where they touch is background


def test_a_tiny_run_goes_through_the_trainer_and_saves_a_usable_bundle(script, tmp_path, monkeypatch,
                                                                        one_torch_thread):
    calls = []
    import napari_segloop.core.training as training

    real = training.train

    def spy(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    out = tmp_path / "default"
    rc = script.main(["--steps", "4", "--n-train", "3", "--n-val", "2", "--train-size", "96",
                      "--val-size", "64", "--crop", "64", "--val-every", "2", "--batch", "2",
                      "--out", str(out)])
    assert rc == 0 and len(calls) == 1
    _, pairs, config = calls[0]
    assert config.mode == "dense" and config.max_steps == 4 and config.patience == 0
    assert sum(p.validation for p in pairs) == 2 and len(pairs) == 5
    bundle = load_model(out)
    prov = bundle.settings.provenance
    assert prov["trainer"].startswith("napari_segloop.core.training.train")
    assert [h["step"] for h in prov["history"]] == [2, 4]
    assert bundle.settings.threshold in (0.3, 0.4, 0.5, 0.6, 0.7)
    prob = predict_array(bundle, np.random.default_rng(0).random((70, 90)).astype(np.float32),
                         device="cpu")
    assert prob.shape == (70, 90) and np.isfinite(prob).all()
