"""Tile grids cover the image, stay inside it, and blend with separable weights."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.inference.tiling import MULTIPLE, TileGrid, gaussian_window, round_up, tile_starts


@pytest.mark.parametrize("length", [1, 31, 32, 64, 65, 100, 127, 128, 129, 300, 1000])
@pytest.mark.parametrize("tile", [32, 64, 128])
@pytest.mark.parametrize("overlap", [0.0, 0.25, 0.5, 0.9])
def test_tile_starts_cover_stay_inside_and_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    assert starts == sorted(set(starts)), "origins are increasing and unique"
    assert starts[0] == 0
    covered = np.zeros(length, dtype=bool)
    for s in starts:
        covered[s:s + tile] = True
    assert covered.all(), "every pixel lies in a tile"
    if length <= tile:
        assert starts == [0]
        return
    assert all(0 <= s and s + tile <= length for s in starts), "tiles stay inside the image"
    assert starts[-1] == length - tile
    stride = max(1, round(tile * (1 - overlap)))
    gaps = np.diff(starts)
    # Neighbours share at least the requested overlap (the last tile may overlap more).
    assert (gaps <= stride).all()
    assert (gaps[:-1] == stride).all()


def test_round_up():
    assert [round_up(n) for n in (1, 31, 32, 33, 64, 65)] == [32, 32, 32, 64, 64, 96]


@pytest.mark.parametrize("size", [32, 64, 256])
def test_gaussian_window_is_symmetric_positive_with_peak_one(size):
    w = gaussian_window(size)
    assert w.dtype == np.float32 and w.shape == (size,)
    np.testing.assert_allclose(w, w[::-1])
    assert w.max() == pytest.approx(1.0)
    assert w.min() >= 1e-3, "tile edges never weigh exactly zero"
    assert w[size // 2] > w[0]


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(200, 300, 64, 0.5), (37, 53, 256, 0.25), (130, 64, 64, 0.0), (257, 99, 128, 0.9), (1, 1, 32, 0.5)],
)
def test_weight_sums_equal_brute_force_sum_of_tile_windows(height, width, tile, overlap):
    grid = TileGrid.build(height, width, tile, overlap)
    wy, wx = grid.windows()
    vh, vw = grid.valid()
    brute = np.zeros((height, width), dtype=np.float64)
    n = 0
    for y, x in grid.origins():
        brute[y:y + vh, x:x + vw] += np.outer(wy, wx)
        n += 1
    assert n == len(grid) == len(grid.ys) * len(grid.xs)
    sum_y, sum_x = grid.weight_sums()
    assert sum_y.shape == (height,) and sum_x.shape == (width,)
    np.testing.assert_allclose(np.outer(sum_y, sum_x), brute, rtol=1e-5, atol=1e-9)
    assert (brute > 0).all(), "every pixel has a positive total weight"


@pytest.mark.parametrize(("height", "width"), [(37, 53), (1, 1), (300, 410), (64, 20)])
def test_build_uses_multiples_of_32_and_never_more_than_the_tile(height, width):
    grid = TileGrid.build(height, width, 256, 0.25)
    assert grid.tile_h % MULTIPLE == 0 and grid.tile_w % MULTIPLE == 0
    assert grid.tile_h <= 256 and grid.tile_w <= 256
    assert grid.tile_h >= min(height, 256) and grid.tile_w >= min(width, 256)
    assert grid.valid() == (min(grid.tile_h, height), min(grid.tile_w, width))


@pytest.mark.parametrize("tile", [0, 16, 33, 100])
def test_build_refuses_tiles_that_are_not_multiples_of_32(tile):
    with pytest.raises(ValueError, match="multiple of 32"):
        TileGrid.build(100, 100, tile, 0.25)


def test_extract_copies_the_tile_at_its_origin():
    rng = np.random.default_rng(0)
    chw = rng.random((2, 150, 170)).astype(np.float32)
    grid = TileGrid.build(150, 170, 64, 0.25)
    out = np.empty((2, 64, 64), dtype=np.float32)
    for y, x in grid.origins():
        grid.extract(chw, y, x, out)
        np.testing.assert_array_equal(out, chw[:, y:y + 64, x:x + 64])


@pytest.mark.parametrize(("height", "width"), [(37, 53), (1, 1), (5, 40), (64, 20)])
def test_extract_pads_images_smaller_than_the_tile(height, width):
    rng = np.random.default_rng(1)
    chw = rng.random((1, height, width)).astype(np.float32)
    grid = TileGrid.build(height, width, 256, 0.25)
    out = np.full((1, grid.tile_h, grid.tile_w), np.nan, dtype=np.float32)
    grid.extract(chw, 0, 0, out)
    np.testing.assert_array_equal(out[:, :height, :width], chw)
    assert np.isfinite(out).all(), "the padding is filled"
    # Padding is made of image values (reflection), not zeros or garbage.
    assert out.min() >= chw.min() and out.max() <= chw.max()
