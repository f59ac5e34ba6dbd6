"""Several classes, end to end in the core: labels, losses, training, prediction, scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import load_bundle, save_bundle
from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.multiclass import (
    class_confusion_image,
    class_map,
    confusion_matrix,
    evaluate_classes,
    per_class_scores,
)
from napari_segloop.core.events import run_to_end
from napari_segloop.core.inference.ensemble import Ensemble, predict_ensemble
from napari_segloop.core.inference.predict import predict
from napari_segloop.core.models.registry import create_model
from napari_segloop.core.synthetic import (
    border_classes,
    make_nuclei,
    make_nuclei_classes,
    simulate_class_scribbles,
)
from napari_segloop.core.training import TrainConfig, TrainingPair, train
from napari_segloop.core.training.annotations import check_labels, is_annotated, plane_target
from napari_segloop.core.training.losses import multiclass_weights, training_loss
from tests.core.tiny_models import TINY_DECODER

FAST = {"batch_size": 4, "crop": 64, "val_every": 10, "device": "cpu", "threads": 1,
        "preview_seconds": 0.0, "refresh_seconds": 0.0}


def tiny_classes(k: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    return create_model("Unet", "tu-lcnet_050", 1, k, encoder_weights=None, encoder_depth=3,
                        decoder_channels=TINY_DECODER[:3])


# ------------------------------------------------------------------ labels


def test_k_class_scribbles_use_k_for_background_and_zero_for_nothing():
    plane = np.array([[0, 1, 2, 3]], np.uint8)
    t = plane_target(plane, "scribbles", classes=3)
    np.testing.assert_array_equal(t.weight, [[0, 1, 1, 1]])
    np.testing.assert_array_equal(t.target, [[0, 1, 2, 0]])
    assert (t.n_foreground, t.n_background) == (2, 1)
    # the binary convention is the same with K = 2
    b = plane_target(np.array([[0, 1, 2]], np.uint8), "scribbles", classes=2)
    np.testing.assert_array_equal(b.target, [[0, 1, 0]])
    np.testing.assert_array_equal(b.weight, [[0, 1, 1]])


def test_k_class_dense_and_correction_labels():
    d = plane_target(np.array([[0, 1, 2]], np.uint8), "dense", classes=3)
    np.testing.assert_array_equal(d.target, [[0, 1, 2]])
    np.testing.assert_array_equal(d.weight, [[1, 1, 1]])
    # correction: value K (unassigned in a class map) is not used; changed pixels weigh more
    c = plane_target(np.array([[0, 1, 2, 3]], np.uint8), "correction",
                     reference=np.array([[0, 2, 2, 1]]), changed_weight=4.0, classes=3)
    np.testing.assert_array_equal(c.weight, [[1, 4, 1, 0]])
    np.testing.assert_array_equal(c.target, [[0, 1, 2, 0]])
    assert is_annotated(np.array([[3, 3]]), "correction", 3) is False
    assert is_annotated(np.array([[0, 3]]), "scribbles", 3) is True


@pytest.mark.parametrize(("mode", "values", "match"), [
    ("scribbles", [0, 4], "1 to 2 for the classes and 3 for background"),
    ("dense", [0, 3], "0 = background and 1 to 2"),
    ("correction", [0, 4], "3 for unassigned"),
])
def test_k_class_labels_out_of_range_are_refused(mode, values, match):
    with pytest.raises(InputError, match=match):
        check_labels(np.array([values], np.uint8), mode, classes=3)
    check_labels(np.array([[0, 2]], np.uint8), mode, classes=3)


# ------------------------------------------------------------------ scores


def test_confusion_matrix_counts_every_pair_and_unassigned_pixels():
    truth = np.array([[0, 0, 1, 1, 2, 2]])
    pred = np.array([[0, 1, 1, 3, 2, 0]])  # 3 = unassigned
    cm = confusion_matrix(pred, truth, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]])
    s = per_class_scores(cm)
    # class 1: TP 1, FP 1 (a background pixel), FN 1 (the unassigned one)
    assert s["dice"][1] == pytest.approx(0.5)
    assert s["precision"][1] == pytest.approx(0.5) and s["recall"][1] == pytest.approx(0.5)
    # class 2: TP 1, FN 1
    assert s["iou"][2] == pytest.approx(0.5) and s["precision"][2] == pytest.approx(1.0)
    # background: TP 1, FP 1, FN 1 -> IoU 1/3; mIoU over the three classes
    assert s["miou"] == pytest.approx((1 / 3 + 1 / 3 + 0.5) / 3)
    assert s["mean_dice"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert s["accuracy"] == pytest.approx(3 / 6)
    m = evaluate_classes(pred, truth, 3)
    assert m.unassigned == 1 and m.summary()["unassigned"] == pytest.approx(1 / 6)
    assert [r["name"] for r in m.rows()] == ["background", "class 1", "class 2"]
    assert (m + m).confusion.sum() == 12
    region = np.array([[True, True, True, True, False, False]])
    assert confusion_matrix(pred, truth, 3, region).sum() == 4


def test_a_class_absent_from_truth_and_prediction_does_not_count_in_the_means():
    truth = np.array([[0, 1]])
    s = per_class_scores(confusion_matrix(truth, truth, 3))
    assert np.isnan(s["dice"][2]) and s["mean_dice"] == 1.0 and s["miou"] == 1.0
    assert evaluate_classes(truth, truth, 3).rows()[2]["dice"] is None


def test_class_map_takes_the_arg_max_and_leaves_unsure_pixels_unassigned():
    prob = np.array([[[0.7, 0.2, 0.34]], [[0.2, 0.7, 0.33]], [[0.1, 0.1, 0.33]]], np.float32)
    np.testing.assert_array_equal(class_map(prob), [[0, 1, 0]])
    np.testing.assert_array_equal(class_map(prob, 0.5), [[0, 1, 3]])
    with pytest.raises(InputError, match="K >= 2"):
        class_map(prob[:1])
    with pytest.raises(InputError, match="0 = background and 1 to 2"):
        confusion_matrix(np.zeros((1, 2), int), np.array([[0, 5]]), 3)


def test_class_confusion_image_shows_one_class():
    truth = np.array([[1, 1, 2, 0]])
    pred = np.array([[1, 2, 1, 0]])
    np.testing.assert_array_equal(class_confusion_image(pred, truth, 1), [[1, 3, 2, 0]])


def test_border_classes_separate_touching_objects():
    lab = np.zeros((10, 12), np.int32)
    lab[2:8, 1:6], lab[2:8, 6:11] = 1, 2
    cls = border_classes(lab, width=1)
    assert set(np.unique(cls)) == {0, 1, 2}
    assert (cls[:, 5] == 2)[2:8].all() and (cls[:, 6] == 2)[2:8].all()  # where they touch
    assert cls[4, 3] == 1 and cls[0, 0] == 0


# ------------------------------------------------------------------ losses


def test_multiclass_loss_ignores_unannotated_pixels_and_keep_term_is_zero_at_the_teacher():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    target = torch.randint(0, 3, (2, 1, 8, 8)).float()
    weight = torch.zeros(2, 1, 8, 8)
    weight[:, :, :4] = 1
    loss, terms = training_loss(logits, target, weight, "bce+dice")
    loss.backward()
    assert set(terms) == {"bce", "dice"}
    assert logits.grad[:, :, 4:].abs().sum() == 0  # unannotated rows get no gradient
    teacher = torch.softmax(logits.detach(), 1)
    keep = 1 - weight
    _, t = training_loss(logits.detach(), target, torch.zeros_like(weight), "bce", teacher=teacher,
                         keep=keep, keep_weight=1.0)
    assert t["keep"] == pytest.approx(0.0, abs=1e-5)
    none, _ = training_loss(logits.detach(), target, torch.zeros_like(weight), "dice")
    assert none is None


def test_multiclass_weights_give_each_class_an_equal_share():
    w = multiclass_weights([800, 150, 50])
    counts = np.array([800, 150, 50])
    shares = counts * np.array(w.per_class)
    np.testing.assert_allclose(shares / shares.sum(), [1 / 3] * 3)


# ------------------------------------------------------------------ training and prediction


@pytest.fixture(scope="module")
def sample():
    return make_nuclei_classes((128, 128), seed=3, radius=(8.0, 14.0))


def test_a_three_class_model_learns_borders_and_predicts_softmax_channels(sample, tmp_path):
    img, cls = sample
    start = tiny_classes()
    assert start.settings.output_kind == "classes" and start.settings.threshold == 0.0
    result = run_to_end(train(start, [TrainingPair(img, cls)],
                              TrainConfig(**{**FAST, "mode": "dense", "max_steps": 80, "lr": 3e-3})))
    assert "miou" in result.best and result.best["dice"] > 0.5
    prob = run_to_end(predict(result.bundle, img))
    assert prob.shape == (3, *img.shape)
    np.testing.assert_allclose(prob.sum(axis=0), 1.0, atol=1e-4)
    scores = evaluate_classes(prob, cls, 3).scores
    assert scores["dice"][1] > 0.6 and scores["dice"][2] > 0.3  # the thin border class is learnt
    # save and load keeps the classes and gives the same probabilities
    save_bundle(result.bundle, tmp_path / "m")
    again = load_bundle(tmp_path / "m")
    assert again.classes == 3 and again.settings.output_kind == "classes"
    np.testing.assert_allclose(run_to_end(predict(again, img)), prob, atol=1e-5)
    assert again.describe()["classes"].startswith("3 (background, class 1, class 2)")


def test_fine_tuning_a_three_class_model_on_scribbles_uses_the_teacher(sample):
    img, cls = sample
    start = tiny_classes(seed=1)
    start.source = "start"
    scr = simulate_class_scribbles(cls, 3, fraction=0.03, seed=2)
    assert set(np.unique(scr)) == {0, 1, 2, 3}
    result = run_to_end(train(start, [TrainingPair(img, scr)],
                              TrainConfig(**{**FAST, "mode": "scribbles", "max_steps": 20})))
    assert result.baseline is not None and "miou" in result.baseline
    assert result.best["dice"] >= result.baseline["dice"] - 1e-4  # never returns worse weights


def test_training_refuses_labels_missing_a_class(sample):
    img, cls = sample
    with pytest.raises(InputError, match="no pixel of class 2"):
        run_to_end(train(tiny_classes(), [TrainingPair(img, np.where(cls == 2, 1, cls))],
                         TrainConfig(**{**FAST, "mode": "dense", "max_steps": 2})))


def test_ensembles_of_class_models_average_the_channels(sample):
    img, _ = sample
    a, b = tiny_classes(seed=4), tiny_classes(seed=5)
    out = run_to_end(predict_ensemble(Ensemble([a, b]), img))
    pa, pb = run_to_end(predict(a, img)), run_to_end(predict(b, img))
    np.testing.assert_allclose(out.probability, (pa + pb) / 2, atol=1e-5)
    assert out.disagreement.shape == img.shape
    np.testing.assert_allclose(out.disagreement, np.abs(pa - pb).max(axis=0), atol=1e-4)


def test_binary_models_still_predict_one_map():
    img, _ = make_nuclei((64, 64), seed=1)
    torch.manual_seed(0)
    b = create_model("Unet", "tu-lcnet_050", 1, 1, encoder_weights=None, encoder_depth=3,
                     decoder_channels=TINY_DECODER[:3])
    assert run_to_end(predict(b, img)).shape == (64, 64)
    assert b.settings.output_kind == "binary"


def test_postprocessing_cleans_each_class_on_its_own():
    from napari_segloop.core.masks import PostProcess, postprocess_classes

    cmap = np.zeros((20, 20), np.uint8)
    cmap[2:10, 2:10] = 1
    cmap[5, 5] = 0  # a hole in class 1
    cmap[15, 15] = 2  # a speck of class 2
    cmap[12:18, 2:8] = 2
    out = postprocess_classes(cmap, 3, PostProcess(min_size=4, fill_holes=True))
    assert out[5, 5] == 1  # the hole is filled with its class
    assert out[15, 15] == 0  # the speck became background
    assert (out[12:18, 2:8] == 2).all() and (out[2:10, 2:10] == 1).all()
    assert out.dtype == cmap.dtype and cmap[5, 5] == 0  # the input is not changed
    speck = np.zeros((20, 20), np.uint8)
    speck[1, 1] = 2
    assert postprocess_classes(speck, 3, PostProcess(min_size=4))[1, 1] == 0
    assert postprocess_classes(cmap, 3, PostProcess()) is cmap  # nothing switched on


def test_filling_holes_keeps_the_class_inside_a_ring():
    from napari_segloop.core.masks import PostProcess, postprocess_classes

    cmap = np.zeros((12, 12), np.uint8)
    cmap[2:10, 2:10] = 2  # a border ring ...
    cmap[4:8, 4:8] = 1  # ... around an interior
    cmap[5, 5] = 0  # a background hole in the interior
    out = postprocess_classes(cmap, 3, PostProcess(fill_holes=True))
    assert (out[4:8, 4:8] == 1).all()  # the interior stays interior, its hole is filled
    assert (out[2:10, 2:4] == 2).all()


def test_two_softmax_classes_are_refused():
    from napari_segloop.core.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="classes 1"):
        create_model("Unet", "tu-lcnet_050", 1, 2, encoder_weights=None, encoder_depth=3,
                     decoder_channels=TINY_DECODER[:3])


def test_a_class_painted_only_in_held_out_blocks_is_reported():
    from napari_segloop.core.bundle.settings import Normalization
    from napari_segloop.core.training.data import TrainingData

    img = np.random.default_rng(0).random((256, 256)).astype(np.float32)
    lab = np.zeros((256, 256), np.uint8)
    lab[:, :128] = 3  # background scribbles everywhere on the left
    lab[10:20, 10:20] = 1
    lab[200:210, 10:20] = 1
    lab[140:150, 140:150] = 2  # class 2 in one block only
    found = []
    for seed in range(40):
        data = TrainingData([TrainingPair(img, lab)], "scribbles", 1, Normalization(), seed=seed,
                            val_fraction=0.5, classes=3)
        data.build()
        if data.split_warnings:
            found.append(seed)
            assert "Class 2 is painted only where the labels are held out" in data.split_warnings[0]
            break
    assert found  # some split holds the lone class-2 block out


def test_a_hole_inside_two_classes_goes_to_the_innermost_whatever_the_class_order():
    from napari_segloop.core.masks import PostProcess, postprocess_classes

    for ring, inner in ((2, 1), (1, 2)):
        cmap = np.zeros((12, 12), np.uint8)
        cmap[2:10, 2:10] = ring
        cmap[4:8, 4:8] = inner
        cmap[5, 5] = 0
        out = postprocess_classes(cmap, 3, PostProcess(fill_holes=True))
        assert out[5, 5] == inner and (out[2:10, 2] == ring).all()
