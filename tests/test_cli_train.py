"""``segloop train``: a usable bundle with its labels, refusals with one line and the right exit code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.bundle import BundleSettings, create_model, load_bundle, save_bundle
from napari_segloop.core.synthetic import make_nuclei
from napari_segloop.core.training.runs import read_annotations

FAST = ["--max-steps", "3", "--batch-size", "2", "--crop", "64", "--device", "cpu", "--threads", "1", "-q"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def start(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, settings=BundleSettings(channel_names=["gray"]),
                          encoder_depth=3, decoder_channels=(16, 16, 16))
    return save_bundle(bundle, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def files(tmp_path) -> dict[str, Path]:
    img, lab = make_nuclei((128, 128), seed=4)
    stack = np.stack([img, img[::-1]])
    stack_labels = np.zeros(stack.shape, np.uint8)
    stack_labels[1] = (lab[::-1] > 0)
    paths = {"img": tmp_path / "img.tif", "lab": tmp_path / "lab.tif",
             "stack": tmp_path / "stack.tif", "stack_lab": tmp_path / "stack_lab.tif"}
    tifffile.imwrite(paths["img"], img)
    tifffile.imwrite(paths["lab"], lab.astype(np.uint16))
    tifffile.imwrite(paths["stack"], stack, metadata={"axes": "ZYX"})
    tifffile.imwrite(paths["stack_lab"], stack_labels, metadata={"axes": "ZYX"})
    return paths


def test_train_saves_a_bundle_that_predict_uses_at_once(tmp_path, files, start, capsys):
    out = tmp_path / "tuned"
    rc = main(["train", "--image", str(files["img"]), "--labels", str(files["lab"]), "--mode", "dense",
               "--model", str(start), "--output", str(out), *FAST])
    assert rc == EXIT_OK, capsys.readouterr().err
    assert "saved" in capsys.readouterr().err
    bundle = load_bundle(out)
    assert bundle.settings.provenance["parent"] == str(start)
    mode, items = read_annotations(out)
    assert mode == "dense" and items[0].name == "img.tif"
    prob = tmp_path / "p.tif"
    assert main(["predict", str(files["img"]), "--model", str(out), "--output", str(prob), "-q",
                 "--device", "cpu"]) == EXIT_OK
    assert tifffile.imread(prob).shape == (128, 128)


def test_a_partly_annotated_stack_trains_on_its_annotated_slice(tmp_path, files, start, capsys):
    out = tmp_path / "tuned"
    rc = main(["train", "--image", str(files["stack"]), "--labels", str(files["stack_lab"]),
               "--mode", "dense", "--model", str(start), "--output", str(out), *FAST])
    assert rc == EXIT_OK, capsys.readouterr().err
    assert load_bundle(out).settings.provenance["training"]["annotated_planes"] == 1


def test_an_existing_output_needs_overwrite(tmp_path, files, start, capsys):
    out = tmp_path / "tuned"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["train", "--image", str(files["img"]), "--labels", str(files["lab"]), "--mode", "dense",
            "--model", str(start), "--output", str(out), *FAST]
    assert main(args) == EXIT_USAGE
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "mine"
    assert main([*args, "--overwrite"]) == EXIT_OK
    assert load_bundle(out) is not None


def test_a_new_model_from_scratch(tmp_path, files, capsys):
    out = tmp_path / "new"
    rc = main(["train", "--image", str(files["img"]), "--labels", str(files["lab"]), "--mode", "dense",
               "--architecture", "FPN", "--encoder", "tu-lcnet_050", "--output", str(out), *FAST])
    assert rc == EXIT_OK, capsys.readouterr().err
    bundle = load_bundle(out)
    assert bundle.architecture == "FPN"
    assert bundle.settings.provenance["parent"] is None


@pytest.mark.parametrize("extra, code, message", [
    (["--labels", "LAB", "LAB"], EXIT_USAGE, "one labels file per image"),
    (["--loss", "focal"], EXIT_USAGE, None),  # argparse refuses
    (["--max-steps", "0"], EXIT_USAGE, "step budget"),
    (["--device", "cuda:7"], EXIT_USAGE, "cuda"),
])
def test_usage_errors_are_one_line(tmp_path, files, start, capsys, extra, code, message):
    base = ["train", "--image", str(files["img"]), "--mode", "dense", "--model", str(start),
            "--output", str(tmp_path / "o"), *FAST]
    extra = [str(files["lab"]) if e == "LAB" else e for e in extra]
    if "--labels" not in extra:
        base += ["--labels", str(files["lab"])]
    try:
        rc = main([*base, *extra])
    except SystemExit as exc:  # argparse
        rc = exc.code
    assert rc == code
    err = capsys.readouterr().err
    if message:
        assert message in err and "Traceback" not in err
        assert len([ln for ln in err.splitlines() if ln.startswith("segloop: error")]) == 1
    assert not (tmp_path / "o").exists()


def test_bad_labels_fail_with_what_to_do(tmp_path, files, start, capsys):
    wrong = tmp_path / "wrong.tif"
    tifffile.imwrite(wrong, np.zeros((64, 64), np.uint8))
    empty = tmp_path / "empty.tif"
    tifffile.imwrite(empty, np.zeros((128, 128), np.uint8))
    for labels, message in [(wrong, "shape"), (empty, "paint some labels")]:
        rc = main(["train", "--image", str(files["img"]), "--labels", str(labels), "--mode", "dense",
                   "--model", str(start), "--output", str(tmp_path / "o"), *FAST])
        assert rc == EXIT_FAILED
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_output_may_not_replace_an_input(tmp_path, files, start, capsys):
    rc = main(["train", "--image", str(files["img"]), "--labels", str(files["lab"]), "--mode", "dense",
               "--model", str(start), "--output", str(files["img"]), "--overwrite", *FAST])
    assert rc == EXIT_USAGE
    assert files["img"].exists() and tifffile.imread(files["img"]).shape == (128, 128)
