"""Several classes from the command line: train --classes, predict class maps, evaluate --classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.bundle import load_bundle
from napari_segloop.core.synthetic import make_nuclei_classes

FAST = ["--max-steps", "20", "--batch-size", "2", "--crop", "64", "--device", "cpu", "--threads", "1",
        "-q"]
NEW = ["--architecture", "Unet", "--encoder", "tu-lcnet_050", "--model-option", "encoder_depth=3",
       "--model-option", "decoder_channels=[16,16,16]"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mc")
    img, cls = make_nuclei_classes((128, 128), seed=5)
    paths = {"img": root / "img.tif", "cls": root / "cls.tif", "model": root / "m3"}
    tifffile.imwrite(paths["img"], img)
    tifffile.imwrite(paths["cls"], cls)
    rc = main(["train", "--image", str(paths["img"]), "--labels", str(paths["cls"]), "--mode", "dense",
               "--classes", "3", "--class-names", "background,interior,border", *NEW, *FAST,
               "--output", str(paths["model"])])
    assert rc == EXIT_OK
    return paths


def test_train_classes_makes_a_softmax_bundle_with_named_classes(trained, capsys):
    bundle = load_bundle(trained["model"])
    assert bundle.classes == 3 and bundle.class_names == ["background", "interior", "border"]
    assert main(["info", str(trained["model"])]) == EXIT_OK
    out = capsys.readouterr().out
    assert "3 (background, interior, border)" in out and "minimum confidence" in out


def test_predict_writes_class_probabilities_or_a_class_map(trained, tmp_path, capsys):
    prob, cmap = tmp_path / "p.tif", tmp_path / "c.tif"
    base = [str(trained["img"]), "-m", str(trained["model"]), "-q", "--device", "cpu"]
    assert main(["predict", *base, "-o", str(prob)]) == EXIT_OK
    p = tifffile.imread(prob)
    assert p.shape == (3, 128, 128) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-4)
    assert main(["predict", *base, "-o", str(cmap), "--threshold", "auto"]) == EXIT_OK
    np.testing.assert_array_equal(tifffile.imread(cmap), p.argmax(axis=0))
    # a number is the minimum confidence: unsure pixels get the value K
    assert main(["predict", *base, "-o", str(cmap), "--threshold", "0.9"]) == EXIT_OK
    c = tifffile.imread(cmap)
    np.testing.assert_array_equal(c == 3, p.max(axis=0) < 0.9)


def test_evaluate_classes_prints_per_class_scores_and_the_confusion(trained, tmp_path, capsys):
    cmap = tmp_path / "c.tif"
    main(["predict", str(trained["img"]), "-m", str(trained["model"]), "-q", "--device", "cpu",
          "-o", str(cmap), "--threshold", "auto"])
    capsys.readouterr()
    assert main(["evaluate", "-p", str(cmap), "-t", str(trained["cls"]), "--classes", "3", "--json",
                 "-m", str(trained["model"])]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    pred, truth = tifffile.imread(cmap), tifffile.imread(trained["cls"])
    total = data["total"]
    assert np.array(total["confusion"])[:, :3].sum() == truth.size
    assert total["accuracy"] == pytest.approx(float((pred == truth).mean()))
    assert [c["name"] for c in total["classes"]] == ["background", "interior", "border"]
    inter = (pred == 1) & (truth == 1)
    dice1 = 2 * inter.sum() / ((pred == 1).sum() + (truth == 1).sum())
    assert total["classes"][1]["dice"] == pytest.approx(dice1)
    csv = tmp_path / "m.csv"
    assert main(["evaluate", "-p", str(cmap), "-t", str(trained["cls"]), "--classes", "3",
                 "--csv", str(csv)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "mIoU" in out and "confusion (rows: truth, columns: prediction)" in out
    assert csv.read_text().count("\n") == 4  # header and one row per class


def test_multiclass_refusals_are_one_line(trained, tmp_path, capsys):
    base = ["train", "--image", str(trained["img"]), "--labels", str(trained["cls"]), "--mode", "dense",
            *FAST]
    assert main([*base, "--classes", "3", "-o", str(tmp_path / "a")]) == EXIT_FAILED
    assert "default model is binary" in capsys.readouterr().err
    assert main([*base, "--classes", "4", "-m", str(trained["model"]), "-o", str(tmp_path / "b")]) \
        == EXIT_FAILED
    assert "has 3 classes, not 4" in capsys.readouterr().err
    assert main([*base, "--classes", "3", "--class-names", "a,b", *NEW, "-o", str(tmp_path / "c")]) \
        == EXIT_FAILED
    assert "2 name(s) for 3 classes" in capsys.readouterr().err
    bad = tmp_path / "bad.tif"
    tifffile.imwrite(bad, np.full((128, 128), 5, np.uint8))
    # dense labels with a value beyond the classes
    assert main(["train", "--image", str(trained["img"]), "--labels", str(bad), "--mode", "dense",
                 *FAST, "--classes", "3", *NEW, "-o", str(tmp_path / "d")]) == EXIT_FAILED
    assert "Dense labels for 3 classes use 0 = background" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert main(["evaluate", "-p", str(bad), "-t", str(trained["cls"]), "--classes", "3"]) == EXIT_FAILED
    assert "class map has values up to 5" in capsys.readouterr().err
    assert main(["evaluate", "-p", str(bad), "-t", str(trained["cls"]), "--classes", "3",
                 "--best-threshold"]) == EXIT_USAGE


def test_evaluate_classes_applies_post_processing_and_refuses_binary_steps(trained, tmp_path, capsys):
    noisy = tifffile.imread(trained["cls"]).copy()
    noisy[0, 0] = 2  # a one-pixel speck of class 2
    pred = tmp_path / "noisy.tif"
    tifffile.imwrite(pred, noisy)
    base = ["evaluate", "-p", str(pred), "-t", str(trained["cls"]), "--classes", "3", "--json"]
    assert main(base) == EXIT_OK
    raw = json.loads(capsys.readouterr().out)["total"]
    assert main([*base, "--min-size", "4"]) == EXIT_OK
    cleaned = json.loads(capsys.readouterr().out)["total"]
    assert raw["accuracy"] < 1.0 and cleaned["accuracy"] > raw["accuracy"]
    assert main([*base, "--split-touching"]) == EXIT_USAGE
    assert "binary mask" in capsys.readouterr().err


def test_class_names_need_classes(trained, tmp_path, capsys):
    assert main(["train", "--image", str(trained["img"]), "--labels", str(trained["cls"]), "--mode",
                 "dense", *FAST, "--class-names", "a,b", "-o", str(tmp_path / "x")]) == EXIT_USAGE
    assert "3 or more classes" in capsys.readouterr().err
