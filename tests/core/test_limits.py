"""Decompression bombs: the decoded size is checked from the header, before any pixel is decoded."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_segloop.core.errors import InputError
from napari_segloop.core.io import images, limits
from napari_segloop.core.io.images import read_image
from napari_segloop.core.io.limits import (
    ENV_VAR,
    check_decoded_size,
    default_max_image_bytes,
    format_size,
    max_image_bytes,
    parse_size,
    reset_max_image_bytes,
    set_max_image_bytes,
)


def _fail(*args, **kwargs):
    raise AssertionError("the image was decoded before its size was checked")


@pytest.mark.parametrize(("text", "value"), [
    ("20GB", 20 * 10**9), ("500MB", 500 * 10**6), ("500 mb", 500 * 10**6), ("1.5G", 1_500_000_000),
    ("2GiB", 2 * 2**30), ("123456", 123456), ("64KiB", 65536), ("10kb", 10_000), ("none", None),
    ("NONE", None), ("0", None), ("unlimited", None),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "lots", "-5GB", "5 parsecs", "1e999", "GB"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(InputError, match="is not a size"):
        parse_size(text)


def test_format_size():
    assert format_size(49152 * 49152 * 4) == "9.7 GB"
    assert format_size(64_000_000) == "64 MB"
    assert format_size(800) == "800 bytes"


def test_limit_precedence(monkeypatch):
    monkeypatch.setattr(limits, "_available_memory", lambda: 8 * 10**9)
    assert max_image_bytes() == default_max_image_bytes() == 2 * 10**9
    monkeypatch.setenv(ENV_VAR, "500MB")
    assert max_image_bytes() == 500 * 10**6
    monkeypatch.setenv(ENV_VAR, "none")
    assert max_image_bytes() is None
    set_max_image_bytes(1000)
    assert max_image_bytes() == 1000
    set_max_image_bytes(None)
    assert max_image_bytes() is None
    reset_max_image_bytes()
    monkeypatch.setenv(ENV_VAR, "twenty")
    with pytest.raises(InputError, match=f"{ENV_VAR}: 'twenty' is not a size"):
        max_image_bytes()


def test_default_limit_floor_and_fallback(monkeypatch):
    monkeypatch.setattr(limits, "_available_memory", lambda: 100 * 10**6)
    assert default_max_image_bytes() == limits.MIN_DEFAULT_BYTES
    monkeypatch.setattr(limits, "_available_memory", lambda: None)
    assert default_max_image_bytes() == limits.FALLBACK_BYTES
    monkeypatch.undo()
    assert limits._available_memory() is None or limits._available_memory() > 0


def test_check_message_names_size_and_override(tmp_path):
    set_max_image_bytes(10**9)
    with pytest.raises(InputError) as info:
        check_decoded_size(tmp_path / "big.tif", (49152, 49152), np.float32)
    msg = str(info.value)
    assert "9.7 GB" in msg and "49152 x 49152 float32" in msg and "1 GB" in msg
    assert "--max-image-size" in msg and ENV_VAR in msg and "\n" not in msg


def test_compressed_tiff_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "bomb.tif"
    tifffile.imwrite(path, np.zeros((8000, 8000), np.uint8), compression="zlib")
    assert path.stat().st_size < 1_000_000  # small on disk, 64 MB once decoded
    monkeypatch.setenv(ENV_VAR, "10MB")
    monkeypatch.setattr(tifffile, "imread", _fail)
    with pytest.raises(InputError, match=r"bomb\.tif: the image would take 64 MB .*8000 x 8000 uint8.*"
                                         r"10 MB \(set by SEGLOOP_MAX_IMAGE_BYTES\).*--max-image-size"):
        read_image(path)


def test_png_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    import imageio.v3 as iio

    path = tmp_path / "bomb.png"
    Image.new("RGB", (3000, 2000)).save(path)
    set_max_image_bytes(1_000_000)
    monkeypatch.setattr(iio, "imread", _fail)
    with pytest.raises(InputError, match=r"18 MB .*2000 x 3000 x 3 uint8.*--max-image-size"):
        read_image(path)


def test_npy_is_refused_from_its_header(tmp_path, monkeypatch):
    path = tmp_path / "big.npy"
    np.save(path, np.zeros((100, 100), np.float64))
    set_max_image_bytes(50_000)
    monkeypatch.setattr(np, "load", _fail)
    with pytest.raises(InputError, match=r"80 KB .*100 x 100 float64"):
        read_image(path)


def test_pil_decompression_bomb_error_is_the_same_one_line_message(tmp_path, monkeypatch):
    import imageio.v3 as iio

    path = tmp_path / "img.png"
    Image.new("L", (16, 16)).save(path)

    def bomb(*args, **kwargs):
        raise Image.DecompressionBombError("Image size (400000000 pixels) exceeds limit of "
                                           "178956970 pixels, could be decompression bomb DOS attack.")

    monkeypatch.setattr(iio, "imread", bomb)
    with pytest.raises(InputError, match=r"img\.png: the image is too large to decode safely.*"
                                         r"--max-image-size SIZE or SEGLOOP_MAX_IMAGE_BYTES"):
        read_image(path)


def test_our_limit_replaces_pils(tmp_path, monkeypatch):
    """PIL's own pixel limit does not refuse an image the user's limit allows (and is restored)."""
    path = tmp_path / "img.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert read_image(path).shape == (64, 64)
    assert Image.MAX_IMAGE_PIXELS == 100


@pytest.mark.parametrize("mode", ["L", "LA", "RGB", "RGBA", "P", "I;16", "1"])
def test_png_header_size_matches_the_decoded_array(tmp_path, mode):
    path = tmp_path / f"img_{mode.replace(';', '')}.png"
    Image.new(mode, (40, 30)).save(path)
    shape, dtype = images._pil_header(path)
    data = read_image(path)
    assert np.prod(shape) * dtype.itemsize >= data.nbytes
    assert shape[:2] == data.shape[:2] == (30, 40)


def test_tiff_and_npy_header_sizes_match(tmp_path):
    arr = np.zeros((2, 20, 30), np.uint16)
    np.save(tmp_path / "a.npy", arr)
    assert images._npy_header(tmp_path / "a.npy") == ((2, 20, 30), np.dtype(np.uint16))
    set_max_image_bytes(arr.nbytes)
    assert read_image(tmp_path / "a.npy").shape == arr.shape  # exactly at the limit: accepted
    tifffile.imwrite(tmp_path / "a.tif", arr)
    assert read_image(tmp_path / "a.tif").shape == arr.shape
    set_max_image_bytes(arr.nbytes - 1)
    with pytest.raises(InputError, match="2 x 20 x 30 uint16"):
        read_image(tmp_path / "a.tif")
