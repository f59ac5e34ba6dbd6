"""Reading and writing images for the CLI: round trips, clear errors, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.errors import InputError
from napari_segloop.core.io import images as imageio
from napari_segloop.core.io.images import expand_inputs, is_image_path, read_image, write_image


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp")


@pytest.mark.parametrize(
    ("suffix", "data"),
    [
        (".tif", np.random.default_rng(0).random((37, 53)).astype(np.float32)),
        (".tiff", np.random.default_rng(0).integers(0, 65535, (3, 20, 30), dtype=np.uint16)),
        (".tif", np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)),
        (".tif", np.arange(-50, 50, dtype=np.int32).reshape(10, 10)),
        (".npy", np.random.default_rng(0).random((4, 5, 6))),
        (".npy", np.eye(5, dtype=bool)),
        (".png", np.random.default_rng(0).integers(0, 255, (21, 33), dtype=np.uint8)),
        (".png", np.random.default_rng(0).integers(0, 65535, (21, 33), dtype=np.uint16)),
    ],
)
def test_round_trip(tmp_path, suffix, data):
    path = tmp_path / f"image{suffix}"
    assert write_image(path, data) == path
    back = read_image(path)
    assert back.dtype == data.dtype and back.shape == data.shape
    np.testing.assert_array_equal(back, data)
    assert _leftovers(tmp_path) == [], "no temporary file is left behind"


def test_reads_rgb_png_and_jpeg(tmp_path):
    import imageio.v3 as iio

    rgb = np.random.default_rng(0).integers(0, 255, (16, 24, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgb)
    iio.imwrite(tmp_path / "b.jpg", rgb)
    assert read_image(tmp_path / "b.jpg").shape == (16, 24, 3)


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "out.tif"
    write_image(path, np.zeros((4, 4), np.uint8))
    write_image(path, np.ones((6, 6), np.float32))
    np.testing.assert_array_equal(read_image(path), np.ones((6, 6), np.float32))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.tif"
    with pytest.raises(InputError, match="not found") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_folder_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="folder") as info:
        read_image(tmp_path)
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("name", ["notes.txt", "data.csv", "noext"])
def test_unsupported_suffix(tmp_path, name):
    path = tmp_path / name
    path.write_text("hello")
    with pytest.raises(InputError, match="unsupported") as info:
        read_image(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("name", ["bad.tif", "bad.png", "bad.npy", "bad.jpg", "empty.tif"])
def test_corrupt_file_is_an_input_error_naming_the_path(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"" if name.startswith("empty") else b"this is not an image \x00\x01\x02" * 10)
    with pytest.raises(InputError, match="cannot read") as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message


def test_truncated_tiff(tmp_path):
    path = tmp_path / "trunc.tif"
    write_image(path, np.random.default_rng(0).random((64, 64)).astype(np.float32))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_npy_with_python_objects_is_refused(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    with pytest.raises(InputError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_write_unsupported_suffix_or_missing_folder(tmp_path):
    data = np.zeros((4, 4), np.float32)
    with pytest.raises(InputError, match="cannot write"):
        write_image(tmp_path / "out.jpg", data)
    missing = tmp_path / "no" / "such" / "out.tif"
    with pytest.raises(InputError, match="does not exist") as info:
        write_image(missing, data)
    assert str(missing) in str(info.value)
    assert not (tmp_path / "no").exists()


def test_png_refuses_float_and_leaves_nothing(tmp_path):
    with pytest.raises(InputError, match="PNG"):
        write_image(tmp_path / "prob.png", np.zeros((4, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "out.tif"
    write_image(path, np.full((4, 4), 3, np.uint8))

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(imageio.os, "replace", fail)
    with pytest.raises(InputError, match="No space left") as info:
        write_image(path, np.zeros((8, 8), np.uint8))
    assert str(path) in str(info.value)
    monkeypatch.undo()
    np.testing.assert_array_equal(read_image(path), np.full((4, 4), 3, np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_failing_encoder_leaves_no_temp(tmp_path, monkeypatch):
    import tifffile

    def fail(filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(tifffile, "imwrite", fail)
    with pytest.raises(InputError, match="Input/output error"):
        write_image(tmp_path / "out.tif", np.zeros((8, 8), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_is_image_path():
    assert is_image_path("a.TIF") and is_image_path("b.npy") and is_image_path("c.jpeg")
    assert not is_image_path("d.txt") and not is_image_path("e")


def test_expand_inputs_on_a_folder_with_mixed_files(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("b.tif", "a.png", "c.npy", "notes.txt", ".hidden.tif", "README"):
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.tif").write_bytes(b"x")
    single = tmp_path / "single.tif"
    files, skipped = expand_inputs([folder, single, tmp_path / "missing.tif"])
    assert [p.name for p in files] == ["a.png", "b.tif", "c.npy", "single.tif", "missing.tif"]
    assert len(skipped) == 2
    assert any("notes.txt" in s for s in skipped) and any("README" in s for s in skipped)


def test_expand_inputs_on_a_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    files, skipped = expand_inputs([tmp_path])
    assert files == []
    assert any("no image files" in s for s in skipped)


@pytest.mark.parametrize("n_slices", [2, 3, 4])
def test_small_stacks_are_written_as_grayscale_pages_not_rgb(tmp_path, n_slices):
    import tifffile

    path = tmp_path / "stack.tif"
    data = np.random.default_rng(0).random((n_slices, 20, 30)).astype(np.float32)
    write_image(path, data)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
        assert len(tif.pages) == n_slices
    np.testing.assert_array_equal(read_image(path), data)


def test_rgb_image_is_written_as_rgb(tmp_path):
    import tifffile

    path = tmp_path / "rgb.tif"
    data = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    write_image(path, data)
    with tifffile.TiffFile(path) as tif:
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.RGB
    np.testing.assert_array_equal(read_image(path), data)
