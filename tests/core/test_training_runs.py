"""Saving a training run with its labels, reading them back, versioned names (core.training.runs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import load_bundle, save_bundle
from napari_segloop.core.errors import BundleExistsError, InputError, ModelLoadError
from napari_segloop.core.events import Snapshot, TrainStep, run_to_end
from napari_segloop.core.inference.predict import predict_array
from napari_segloop.core.synthetic import make_nuclei
from napari_segloop.core.training import TrainConfig, TrainingPair, runs, train
from napari_segloop.core.training.runs import (
    next_version_path,
    partial_path,
    read_annotations,
    save_annotations,
    save_run,
    train_to_folder,
)
from tests.core.tiny_models import tiny_bundle


@pytest.fixture(scope="module")
def result():
    img, lab = make_nuclei((128, 128), seed=2)
    lab = (lab > 0).astype(np.uint8)
    cfg = TrainConfig(mode="dense", max_steps=3, batch_size=2, crop=64, device="cpu", threads=1)
    res = run_to_end(train(tiny_bundle(), [TrainingPair(img, lab, "cells.tif")], cfg))
    return res, img, lab


def test_a_saved_run_loads_predicts_and_gives_back_its_labels(tmp_path, result):
    res, img, lab = result
    path = save_run(res, tmp_path / "m-v001", ["cells.tif"], "dense", [img])
    bundle = load_bundle(path)
    prob = predict_array(bundle, img, device="cpu")
    np.testing.assert_allclose(prob, predict_array(res.bundle, img, device="cpu"), atol=1e-5)
    mode, items = read_annotations(path)
    assert mode == "dense" and len(items) == 1
    assert items[0].name == "cells.tif"
    np.testing.assert_array_equal(items[0].labels, lab)
    np.testing.assert_array_equal(items[0].image, img)
    prov = json.loads((path / "segloop.json").read_text())["provenance"]
    assert prov["training"]["labels_sha256"] == res.bundle.settings.provenance["training"]["labels_sha256"]


def test_an_existing_bundle_is_never_overwritten_silently(tmp_path, result):
    res, img, _ = result
    target = tmp_path / "m"
    save_bundle(tiny_bundle(seed=9), target)
    before = (target / "model.safetensors").read_bytes()
    with pytest.raises(BundleExistsError):
        save_run(res, target, ["a"], "dense", [img])
    assert (target / "model.safetensors").read_bytes() == before


def test_a_write_error_while_saving_leaves_the_previous_bundle_intact(tmp_path, result, monkeypatch):
    res, img, _ = result
    target = tmp_path / "m"
    save_bundle(tiny_bundle(seed=9), target)
    before = sorted(p.name for p in target.iterdir())
    weights = (target / "model.safetensors").read_bytes()

    def full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(runs, "write_annotations", full)
    with pytest.raises(ModelLoadError, match="No space left"):
        save_run(res, target, ["a"], "dense", [img], overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == before
    assert (target / "model.safetensors").read_bytes() == weights
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind


def test_annotations_saved_on_their_own_are_replaced_atomically(tmp_path):
    lab = np.zeros((8, 8), np.uint8)
    lab[2, 2] = 1
    folder = save_annotations(tmp_path / "run.labels", ["a"], [lab], "scribbles")
    lab2 = lab.copy()
    lab2[3, 3] = 2
    save_annotations(folder, ["a"], [lab2], "scribbles")
    mode, items = read_annotations(folder)
    assert mode == "scribbles" and items[0].image is None
    np.testing.assert_array_equal(items[0].labels, lab2)
    assert [p.name for p in tmp_path.iterdir()] == ["run.labels"]


def test_a_failed_swap_keeps_the_previously_saved_annotations(tmp_path, monkeypatch):
    lab = np.zeros((8, 8), np.uint8)
    lab[2, 2] = 1
    folder = save_annotations(tmp_path / "run.labels", ["a"], [lab], "scribbles")
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the new folder moving into place
            raise OSError(5, "Input/output error")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(ModelLoadError, match="Input/output error"):
        save_annotations(folder, ["a"], [np.full((8, 8), 2, np.uint8)], "scribbles")
    monkeypatch.undo()
    np.testing.assert_array_equal(read_annotations(folder)[1][0].labels, lab)
    assert [p.name for p in tmp_path.iterdir()] == ["run.labels"]


def test_big_images_are_not_stored_but_their_labels_are(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "MAX_STORED_IMAGES", 10)
    lab = np.ones((8, 8), np.uint8)
    save_annotations(tmp_path / "r", ["a"], [lab], "dense", images=[np.zeros((8, 8), np.float32)])
    _, items = read_annotations(tmp_path / "r")
    assert items[0].image is None
    np.testing.assert_array_equal(items[0].labels, lab)


def test_stored_labels_are_read_as_data_only(tmp_path):
    lab = np.ones((4, 4), np.uint8)
    folder = save_annotations(tmp_path / "r", ["a"], [lab], "dense")
    pair = folder / "training" / "pair_000.npz"
    np.savez(pair, labels=np.array([{"x": 1}], dtype=object))  # a pickle inside
    with pytest.raises(ModelLoadError, match="not a readable labels file"):
        read_annotations(folder)
    index = folder / "training" / "annotations.json"
    data = json.loads(index.read_text())
    data["items"][0]["file"] = "../../elsewhere.npz"
    index.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="unexpected file name"):
        read_annotations(folder)
    data["mode"] = "paint"
    index.write_text(json.dumps(data))
    with pytest.raises(ModelLoadError, match="not a segloop annotations index"):
        read_annotations(folder)
    with pytest.raises(InputError, match="no stored training labels"):
        read_annotations(tmp_path)


def test_oversized_stored_arrays_are_refused_before_decompression(tmp_path):
    from napari_segloop.core.io.limits import set_max_image_bytes

    lab = np.zeros((512, 512), np.uint8)
    lab[0, 0] = 1
    folder = save_annotations(tmp_path / "r", ["a"], [lab], "dense")
    set_max_image_bytes(1000)
    with pytest.raises(ModelLoadError, match="more than the image size limit"):
        read_annotations(folder)


def test_versions_count_up_and_never_reuse_a_name(tmp_path):
    assert next_version_path(tmp_path, "default").name == "default-v001"
    (tmp_path / "default-v001").mkdir()
    (tmp_path / "default-v007").mkdir()
    assert next_version_path(tmp_path, "default").name == "default-v008"
    assert next_version_path(tmp_path, "default-v007").name == "default-v008"
    assert next_version_path(tmp_path, "my model/../x").name == "my_model_.._x-v001"
    assert os.sep not in next_version_path(tmp_path, "a/b").name


def _pairs():
    img, lab = make_nuclei((128, 128), seed=6)
    return [TrainingPair(img, (lab > 0).astype(np.uint8), "cells.tif")]


FAST = {"mode": "dense", "batch_size": 2, "crop": 64, "device": "cpu", "threads": 1, "val_every": 2}


def test_train_to_folder_saves_the_bundle_and_removes_its_checkpoint(tmp_path):
    saved = run_to_end(train_to_folder(tiny_bundle(), _pairs(), TrainConfig(max_steps=4, **FAST),
                                       tmp_path / "m-v001"))
    assert saved.path == tmp_path / "m-v001"
    assert load_bundle(saved.path).settings.provenance["training"]["steps"] == 4
    assert not partial_path(saved.path).exists()
    assert read_annotations(saved.path)[1][0].name == "cells.tif"


def test_a_run_killed_midway_leaves_a_loadable_checkpoint_with_the_labels_and_best_weights(tmp_path):
    pairs = _pairs()
    gen = train_to_folder(tiny_bundle(), pairs, TrainConfig(max_steps=400, **FAST), tmp_path / "m",
                          checkpoint_seconds=0.0)
    best = None
    for event in gen:
        if isinstance(event, Snapshot) and event.step > 0:
            best = event
        if best is not None and isinstance(event, TrainStep) and event.step >= best.step + 1:
            break  # the process dies here: nothing after this line runs
    del gen
    part = partial_path(tmp_path / "m")
    assert part.is_dir() and not (tmp_path / "m").exists()
    bundle = load_bundle(part)
    for key, value in best.state_dict.items():
        assert torch.equal(bundle.model.state_dict()[key], value)
    np.testing.assert_array_equal(read_annotations(part)[1][0].labels, pairs[0].labels)


def test_the_labels_are_on_disk_before_the_first_step(tmp_path):
    gen = train_to_folder(tiny_bundle(), _pairs(), TrainConfig(max_steps=400, **FAST), tmp_path / "m")
    next(gen)  # the first event: the checkpoint is already written
    _, items = read_annotations(partial_path(tmp_path / "m"))
    assert items[0].labels.any()
    gen.close()


def test_an_existing_folder_is_refused_before_any_work(tmp_path):
    (tmp_path / "m").mkdir()
    with pytest.raises(BundleExistsError):
        next(train_to_folder(tiny_bundle(), _pairs(), TrainConfig(max_steps=4, **FAST), tmp_path / "m"))
    assert not partial_path(tmp_path / "m").exists()


def test_a_checkpoint_takes_its_version_number(tmp_path):
    (tmp_path / "m-v002.partial").mkdir()
    assert next_version_path(tmp_path, "m").name == "m-v003"
