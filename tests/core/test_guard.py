"""The output guard: no output is (or is inside) an input, and bad outputs fail before any work."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.report import write_metrics_csv
from napari_segloop.core.io import guard
from napari_segloop.core.io.guard import (
    CSV_OUTPUT,
    OutputKind,
    OutputPlan,
    Protected,
    check_output,
    check_outputs,
    find_input,
)
from napari_segloop.core.io.images import IMAGE_OUTPUT, PROBABILITY_OUTPUT, READ_SUFFIXES, write_image

ROWS = [{"name": "a", "dice": 0.5}]


@pytest.fixture
def truth(tmp_path) -> Path:
    path = tmp_path / "truth.tif"
    path.write_bytes(b"the ground truth")
    return path


def _refused(output, inputs, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        check_output(output, inputs, **kwargs)
    text = str(info.value)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------- an output that is an input


def test_the_same_spelling_names_the_input_once(truth):
    text = _refused(truth, [(truth, "the ground truth")], label="--csv", kind=CSV_OUTPUT)
    assert text == f"--csv {truth} is one of the inputs (the ground truth); choose another file name."


def test_a_hard_link_is_the_same_file(truth, tmp_path):
    link = tmp_path / "metrics.csv"
    os.link(truth, link)
    text = _refused(link, [(truth, "the ground truth")], label="--csv", kind=CSV_OUTPUT)
    assert text == (f"--csv {link} is one of the inputs (the ground truth, {truth}); "
                    "choose another file name.")


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
def test_a_symbolic_link_to_the_input_and_a_linked_folder(truth, tmp_path):
    link = tmp_path / "out.csv"
    link.symlink_to(truth)
    assert f"({'the ground truth'}, {truth})" in _refused(link, [(truth, "the ground truth")])
    alias = tmp_path / "alias"
    alias.symlink_to(tmp_path, target_is_directory=True)
    assert "is one of the inputs" in _refused(alias / "truth.tif", [(truth, "the ground truth")])


def test_dot_dot_spellings_are_the_same_file(truth, tmp_path):
    (tmp_path / "sub").mkdir()
    spelled = tmp_path / "sub" / ".." / "." / "truth.tif"
    assert "is one of the inputs" in _refused(spelled, [truth])
    relative = Path(os.path.relpath(truth))
    assert "is one of the inputs" in _refused(relative, [(truth, "the ground truth")])
    # and the other way round: the input spelled oddly
    assert find_input(truth, [tmp_path / "sub" / ".." / "truth.tif"]) is not None


def test_a_case_insensitive_spelling_is_checked_by_identity(truth, tmp_path, monkeypatch):
    """On macOS and Windows TRUTH.TIF is truth.tif: the guard compares file identities, not names.

    Simulated here (Linux file systems are case-sensitive): ``os.stat`` folds case as they do.
    """
    upper = tmp_path / "TRUTH.TIF"
    real_stat = os.stat

    def folding_stat(path, *args, **kwargs):
        p = Path(path)
        if p.parent == tmp_path and p.name.casefold() == truth.name:
            return real_stat(truth, *args, **kwargs)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(guard.os, "stat", folding_stat)
    assert _refused(upper, [(truth, "the ground truth")], label="--csv") == (
        f"--csv {upper} is one of the inputs (the ground truth, {truth}); choose another file name.")


def test_an_output_inside_an_input_folder(tmp_path):
    bundle = tmp_path / "model"
    bundle.mkdir()
    (bundle / "weights.safetensors").write_bytes(b"w")
    text = _refused(bundle / "notes.csv", [(bundle, "the model")], label="--csv")
    assert text == (f"--csv {bundle / 'notes.csv'} is inside one of the inputs (the model, {bundle}); "
                    "choose another file name.")
    deep = bundle / "sub" / "x.tif"
    assert "inside one of the inputs" in _refused(deep, [(bundle, "the model")], create_folders=True)
    assert "inside one of the inputs" in _refused(bundle / "weights.safetensors", [(bundle, "the model")])
    assert "is one of the inputs (the model)" in _refused(bundle, [(bundle, "the model")])


def test_an_input_that_does_not_exist_is_compared_by_resolved_path(tmp_path):
    missing = tmp_path / "later" / "truth.tif"
    found = find_input(tmp_path / "later" / ".." / "later" / "truth.tif", [missing])
    assert found is not None and found[1] is False
    found = find_input(tmp_path / "later" / "x.csv", [tmp_path / "later"])
    assert found is not None and found[1] is True


def test_neighbours_are_not_inputs(truth, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model2").mkdir()
    inputs = [(truth, "the ground truth"), (tmp_path / "model", "the model")]
    for ok in (tmp_path / "truth.csv", tmp_path / "truth.tif.csv", tmp_path / "model2" / "m.csv",
               tmp_path / "modelx.csv"):
        assert find_input(ok, inputs) is None
        check_output(ok, inputs, kind=CSV_OUTPUT)


def test_inputs_as_protected_pairs_or_paths_and_none_is_skipped(truth):
    assert find_input(truth, [Protected(truth, "x")])[0].what == "x"
    assert find_input(truth, [str(truth)])[0].what == "an input"
    assert find_input(truth, [None, (None, "the region"), ""]) is None


# ---------------------------------------------------------------- suffixes, folders, duplicates


@pytest.mark.parametrize("name", ["m.tif", "m.TIFF", "m.png", "m.npy", "m.jpg", "m.pt", "m.safetensors"])
def test_csv_refuses_image_and_model_suffixes(tmp_path, name):
    text = _refused(tmp_path / name, [], label="--csv", kind=CSV_OUTPUT)
    assert text.startswith(f"--csv {tmp_path / name}: ") and "format, not CSV" in text
    assert text.endswith("choose a name ending in .csv.")


@pytest.mark.parametrize("name", ["m.csv", "m.CSV", "m.txt", "metrics"])
def test_csv_accepts_other_names(tmp_path, name):
    check_output(tmp_path / name, [], kind=CSV_OUTPUT)


def test_the_csv_kind_refuses_every_readable_image_suffix():
    assert set(READ_SUFFIXES) <= set(CSV_OUTPUT.refused)
    from napari_segloop.core.bundle.settings import STATE_DICT_SUFFIXES

    assert set(STATE_DICT_SUFFIXES) <= set(CSV_OUTPUT.refused)


def test_image_kinds(tmp_path):
    assert _refused(tmp_path / "x.jpg", [], label="-o", kind=IMAGE_OUTPUT) == (
        f"-o {tmp_path / 'x.jpg'}: cannot write .jpg; use .tif, .tiff, .png or .npy.")
    assert "use .tif, .tiff or .npy" in _refused(tmp_path / "p.png", [], kind=PROBABILITY_OUTPUT)
    assert "files without a suffix" in _refused(tmp_path / "p", [], kind=IMAGE_OUTPUT)
    check_output(tmp_path / "p.TIF", [], kind=PROBABILITY_OUTPUT)
    assert OutputKind("x", (".a",)).problem(tmp_path / "f.a") is None


def test_missing_folder_file_in_the_way_and_folder_output(tmp_path):
    missing = tmp_path / "missing" / "m.csv"
    assert _refused(missing, [], label="--csv") == (
        f"--csv {missing}: the folder {missing.parent} does not exist.")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "is not a folder" in _refused(blocker / "m.csv", [])
    assert "is not a folder" in _refused(blocker / "deeper" / "m.csv", [], create_folders=True)
    check_output(tmp_path / "new" / "deeper" / "m.tif", [], create_folders=True)
    assert not (tmp_path / "new").exists(), "checking creates nothing"
    (tmp_path / "d.csv").mkdir()
    assert _refused(tmp_path / "d.csv", [], label="--csv") == (
        f"--csv {tmp_path / 'd.csv'} is a folder; give a file name.")
    spelled = f"{tmp_path / 'results'}{os.sep}"
    assert _refused(spelled, [], label="--csv") == (
        f"--csv {tmp_path / 'results'}{os.sep} is a folder; give a file name.")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="root (and Windows) ignore a folder's write permission")
def test_a_read_only_folder_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        assert _refused(folder / "m.csv", [], label="--csv") == (
            f"--csv {folder / 'm.csv'}: the folder {folder} is not writable.")
    finally:
        folder.chmod(0o700)


def test_a_read_only_folder_is_refused_even_as_root(tmp_path, monkeypatch):
    """Root ignores permissions, so the check is exercised through ``os.access``."""
    folder = tmp_path / "ro"
    folder.mkdir()
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(guard.os, "access", access)
    assert "is not writable" in _refused(folder / "m.csv", [])
    assert "is not writable" in _refused(folder / "new" / "m.tif", [], create_folders=True)


def test_two_outputs_that_are_one_file(tmp_path):
    a = tmp_path / "a.tif"
    (tmp_path / "x").mkdir()
    with pytest.raises(InputError, match="would be the same file"):
        check_outputs([a, tmp_path / "x" / ".." / "a.tif"], [])
    with pytest.raises(InputError, match="would be the same file"):
        check_outputs([a, tmp_path / "A.TIF"], [])  # one file on macOS and Windows
    check_outputs([a, tmp_path / "b.tif"], [])


def test_the_plan_checks_everything_and_names_the_first_problem(truth, tmp_path):
    plan = OutputPlan([(truth, "the ground truth")])
    plan.protect(None, "the region")  # an optional input not given
    plan.add(tmp_path / "ok.csv", "--csv", kind=CSV_OUTPUT)
    plan.check()
    plan.add(truth, "--csv", kind=CSV_OUTPUT)
    with pytest.raises(InputError, match=r"^--csv .*truth\.tif is one of the inputs \(the ground truth\)"):
        plan.check()


# ---------------------------------------------------------------- the core writers protect themselves


def test_write_image_refuses_a_protected_file_and_leaves_it(truth, tmp_path):
    with pytest.raises(InputError, match="is one of the inputs"):
        write_image(truth, np.zeros((4, 4), np.uint8), protect=[(truth, "the image")])
    assert truth.read_bytes() == b"the ground truth"
    bundle = tmp_path / "model"
    bundle.mkdir()
    with pytest.raises(InputError, match="inside one of the inputs"):
        write_image(bundle / "p.tif", np.zeros((4, 4), np.uint8), protect=[bundle])
    assert list(bundle.iterdir()) == []


def test_write_metrics_csv_refuses_a_protected_file_and_image_suffixes(truth, tmp_path):
    link = tmp_path / "metrics.csv"
    os.link(truth, link)
    with pytest.raises(InputError, match="is one of the inputs"):
        write_metrics_csv(link, ROWS, protect=[(truth, "the ground truth")])
    with pytest.raises(InputError, match="image format, not CSV"):
        write_metrics_csv(tmp_path / "m.tif", ROWS)
    assert truth.read_bytes() == b"the ground truth"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv", "truth.tif"]
