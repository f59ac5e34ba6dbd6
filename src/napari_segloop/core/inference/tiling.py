"""Tile grids and separable blending windows for sliding-window inference.

Why separable windows: the blending weight of a tile is ``g(y) * g(x)`` (a
Gaussian in each direction), and the grid of tile origins is the product of
row origins and column origins. The sum of all weights at a pixel then factors
into ``Wy(y) * Wx(x)``, two 1-D vectors, so the stitcher needs no full-size
weight image: it accumulates weighted probabilities directly into the output
and divides by the outer product of two vectors at the end. This keeps the
memory of a prediction at about one output-sized float32 array, where MONAI's
``sliding_window_inference`` keeps a second one for the weights (and cannot be
cancelled between batches).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

#: The usual network input multiple (five 2x downsamplings); a model's own multiple comes
#: from the model registry (:func:`napari_segloop.core.models.registry.input_multiple`).
MULTIPLE = 32


def round_up(n: int, multiple: int = MULTIPLE) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n``."""
    return int(math.ceil(n / multiple) * multiple)


def tile_starts(length: int, tile: int, overlap: float) -> list[int]:
    """Origins of tiles of size ``tile`` covering ``[0, length)``.

    Tiles stay inside the image: the last one is shifted back to end at
    ``length``. When ``length <= tile`` there is a single tile at 0 (it is
    padded by the caller).

    Parameters
    ----------
    length : int
        Image size along the axis.
    tile : int
        Tile size along the axis.
    overlap : float
        Fraction of the tile shared with the neighbour, in ``[0, 0.9]``.
    """
    if length <= tile:
        return [0]
    stride = max(1, round(tile * (1.0 - overlap)))
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def gaussian_window(size: int, sigma_scale: float = 0.125, min_value: float = 1e-3) -> np.ndarray:
    """1-D Gaussian blending window (as nnU-Net and MONAI use), float32, peak 1.

    ``min_value`` keeps the tile edges from contributing exactly nothing, so
    pixels covered only by a tile's edge (image borders) stay well defined.
    """
    centre = (size - 1) / 2.0
    sigma = max(size * sigma_scale, 1e-6)
    x = np.arange(size, dtype=np.float64)
    w = np.exp(-0.5 * ((x - centre) / sigma) ** 2)
    w /= w.max()
    return np.maximum(w, min_value).astype(np.float32)


@dataclass(frozen=True)
class TileGrid:
    """The tiles covering one ``(H, W)`` image plane.

    Attributes
    ----------
    height, width : int
        Image plane size.
    tile_h, tile_w : int
        Network input size (multiples of the model's input multiple; smaller than the requested tile
        for small images).
    ys, xs : tuple of int
        Tile origins along each axis.
    """

    height: int
    width: int
    tile_h: int
    tile_w: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def build(cls, height: int, width: int, tile: int, overlap: float,
              multiple: int = MULTIPLE) -> TileGrid:
        """Plan tiles of (at most) ``tile`` pixels with ``overlap`` for an image plane.

        ``multiple`` is the network's input multiple: tiles (and the padded
        tile of an image smaller than ``tile``) are multiples of it.
        """
        if multiple < 1 or tile < multiple or tile % multiple:
            raise ValueError(f"tile size {tile} must be a positive multiple of {multiple}")
        tile_h = min(tile, round_up(height, multiple))
        tile_w = min(tile, round_up(width, multiple))
        return cls(
            height=height,
            width=width,
            tile_h=tile_h,
            tile_w=tile_w,
            ys=tuple(tile_starts(height, tile_h, overlap)),
            xs=tuple(tile_starts(width, tile_w, overlap)),
        )

    def __len__(self) -> int:
        return len(self.ys) * len(self.xs)

    def origins(self) -> Iterator[tuple[int, int]]:
        """Tile origins in row-major order."""
        for y in self.ys:
            for x in self.xs:
                yield y, x

    def valid(self) -> tuple[int, int]:
        """Size of the part of each tile that lies inside the image."""
        return min(self.tile_h, self.height), min(self.tile_w, self.width)

    def windows(self) -> tuple[np.ndarray, np.ndarray]:
        """The 1-D blending windows along y and x, cropped to the valid part."""
        vh, vw = self.valid()
        return gaussian_window(self.tile_h)[:vh], gaussian_window(self.tile_w)[:vw]

    def weight_sums(self) -> tuple[np.ndarray, np.ndarray]:
        """``Wy`` and ``Wx`` such that the total blending weight is ``outer(Wy, Wx)``."""
        wy, wx = self.windows()
        vh, vw = self.valid()
        sum_y = np.zeros(self.height, dtype=np.float32)
        sum_x = np.zeros(self.width, dtype=np.float32)
        for y in self.ys:
            sum_y[y:y + vh] += wy
        for x in self.xs:
            sum_x[x:x + vw] += wx
        return sum_y, sum_x

    def extract(self, chw: np.ndarray, y: int, x: int, out: np.ndarray) -> None:
        """Copy the tile at ``(y, x)`` of ``chw`` into ``out`` (``(C, tile_h, tile_w)``).

        Where the image is smaller than the tile, the rest is filled by
        reflection; the caller crops the prediction back to the image.
        """
        vh, vw = self.valid()
        if vh == self.tile_h and vw == self.tile_w:
            out[...] = chw[:, y:y + vh, x:x + vw]
            return
        core = chw[:, y:y + vh, x:x + vw]
        out[...] = np.pad(core, ((0, 0), (0, self.tile_h - vh), (0, self.tile_w - vw)), mode="reflect")
