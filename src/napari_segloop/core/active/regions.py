"""Region ranking: which square of the image to annotate next.

Each 2-D plane (each slice of a stack, each image of a set) is cut into a
grid of squares of side ``side`` pixels starting at the top-left corner; the
last row and column are cut short at the image border. A region's score is
the **mean** uncertainty of its pixels (a mean, not a sum, so that the short
border regions compete fairly), and regions are ranked by descending score.

Annotated regions are **skipped**, not down-weighted. A region the user has
painted in has been looked at: its remaining uncertainty is what the next
training round will act on, and sending the user back there before every
region nobody has looked at would waste their time. Which pixels count as
annotated follows the training modes (:mod:`napari_segloop.core.training.annotations`):

* ``scribbles``: a region with at least one painted (non-zero) pixel;
* ``dense`` and ``correction``: every region of an annotated plane (a plane
  with a non-zero pixel), since such labels speak for the whole plane.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = ["Region", "RegionQueue", "annotated_cells", "cell_means", "grid_edges", "merge_rankings",
           "rank_regions"]


@dataclass(frozen=True)
class Region:
    """One square region and its score.

    Attributes
    ----------
    index : tuple of int
        Stack position of its plane (empty for a 2-D image).
    bbox : tuple of int
        ``(y0, x0, y1, x1)`` in pixels, ends exclusive.
    score : float
        Mean uncertainty of its pixels.
    image : str, optional
        Which image of a set it belongs to.
    """

    index: tuple[int, ...]
    bbox: tuple[int, int, int, int]
    score: float
    image: str | None = None

    def as_json(self) -> dict[str, Any]:
        """``{"bbox": [*index, y0, x0, y1, x1], "score": s}`` (and ``"image"`` in a set)."""
        out: dict[str, Any] = {"bbox": [*map(int, self.index), *map(int, self.bbox)],
                               "score": round(float(self.score), 6)}
        if self.image is not None:
            out["image"] = self.image
        return out

    @property
    def centre(self) -> tuple[float, float]:
        """The region's centre ``(y, x)`` in pixel coordinates."""
        y0, x0, y1, x1 = self.bbox
        return ((y0 + y1 - 1) / 2.0, (x0 + x1 - 1) / 2.0)


def grid_edges(length: int, side: int) -> np.ndarray:
    """Start offsets of the regions along one axis: ``0, side, 2 side, ...`` below ``length``."""
    return np.arange(0, max(1, int(length)), int(side), dtype=np.intp)


def cell_means(plane: np.ndarray, side: int) -> np.ndarray:
    """Mean of ``plane`` over every grid cell: an array of ``(rows, columns)`` float64."""
    plane = np.asarray(plane)
    h, w = plane.shape
    ys, xs = grid_edges(h, side), grid_edges(w, side)
    sums = np.add.reduceat(np.add.reduceat(plane, ys, axis=0, dtype=np.float64), xs, axis=1)
    heights = np.diff(np.append(ys, h))
    widths = np.diff(np.append(xs, w))
    return sums / np.outer(heights, widths)


def annotated_cells(labels: np.ndarray, side: int, mode: str = "scribbles") -> np.ndarray:
    """Which grid cells of one labels plane count as annotated (see the module's docstring)."""
    labels = np.asarray(labels)
    h, w = labels.shape
    rows, cols = len(grid_edges(h, side)), len(grid_edges(w, side))
    if mode in ("dense", "correction"):
        return np.full((rows, cols), bool(np.any(labels)))
    if mode != "scribbles":
        raise InputError(f"Unknown labels mode {mode!r}; choose scribbles, dense or correction.")
    return cell_means(labels != 0, side) > 0


def _planes(shape: tuple[int, ...]) -> Iterable[tuple[int, ...]]:
    return np.ndindex(*shape[:-2]) if len(shape) > 2 else [()]


def rank_regions(
    uncertainty: np.ndarray,
    side: int,
    labels: np.ndarray | None = None,
    mode: str = "scribbles",
    top: int | None = None,
    image: str | None = None,
) -> list[Region]:
    """Rank the square regions of an uncertainty map, most uncertain first.

    Parameters
    ----------
    uncertainty : np.ndarray
        ``(..., H, W)``: a plane or a stack of planes.
    side : int
        Side of the square regions in pixels (not the inference tile).
    labels : np.ndarray, optional
        The user's annotations, of the map's shape: annotated regions are left out.
    mode : {"scribbles", "dense", "correction"}
        How ``labels`` say what is annotated.
    top : int, optional
        Keep only the first ``top`` regions (all of them when None).
    image : str, optional
        Recorded in each region (for rankings merged over a set of images).

    Returns
    -------
    list of Region
        Sorted by descending score; ties by position (plane, then row, then column).
    """
    uncertainty = np.asarray(uncertainty)
    if uncertainty.ndim < 2:
        raise InputError(f"An uncertainty map needs at least two axes; got shape {uncertainty.shape}.")
    side = int(side)
    if side < 1:
        raise InputError(f"The region side must be at least 1 pixel; got {side}.")
    if labels is not None and tuple(np.shape(labels)) != uncertainty.shape:
        raise InputError(f"The labels have shape {tuple(np.shape(labels))}, but the image's map has "
                         f"{uncertainty.shape}: give the labels painted on this image.")
    if top is not None and top < 1:
        raise InputError(f"--top must be at least 1; got {top}.")
    h, w = uncertainty.shape[-2:]
    ys, xs = grid_edges(h, side), grid_edges(w, side)
    regions: list[Region] = []
    for index in _planes(uncertainty.shape):
        means = cell_means(uncertainty[index], side)
        skip = (annotated_cells(labels[index], side, mode) if labels is not None
                else np.zeros(means.shape, bool))
        for (r, c), score in np.ndenumerate(means):
            if skip[r, c]:
                continue
            y0, x0 = int(ys[r]), int(xs[c])
            regions.append(Region(tuple(int(i) for i in index),
                                  (y0, x0, min(y0 + side, h), min(x0 + side, w)), float(score), image))
    regions.sort(key=lambda reg: -reg.score)  # stable: equal scores keep the grid order
    return regions if top is None else regions[:top]


def merge_rankings(rankings: Iterable[list[Region]], top: int | None = None) -> list[Region]:
    """Merge the rankings of several images into one, by descending score."""
    merged = sorted((reg for ranking in rankings for reg in ranking), key=lambda reg: -reg.score)
    return merged if top is None else merged[:top]


class RegionQueue:
    """The ranked regions a user visits one after the other ("Next region").

    Regions are handed out in rank order; a region is skipped when
    ``annotated(region)`` says the user has painted in it since the ranking
    (so painting and pressing "Next" never sends them back), and a region is
    handed out once.

    Parameters
    ----------
    regions : list of Region
        Ranked, most uncertain first (from :func:`rank_regions`).
    """

    def __init__(self, regions: list[Region]) -> None:
        self.regions = list(regions)
        self.position = -1  # index of the region shown last

    def __len__(self) -> int:
        return len(self.regions)

    @property
    def current(self) -> Region | None:
        """The region handed out last, or None."""
        return self.regions[self.position] if 0 <= self.position < len(self.regions) else None

    def next(self, annotated: Any = None) -> Region | None:
        """The next region not annotated yet, or None when none is left.

        Parameters
        ----------
        annotated : callable, optional
            ``annotated(region) -> bool``; True skips the region.
        """
        for k in range(self.position + 1, len(self.regions)):
            if annotated is not None and annotated(self.regions[k]):
                continue
            self.position = k
            return self.regions[k]
        self.position = len(self.regions)
        return None

    @property
    def remaining(self) -> int:
        """Regions after the current one (annotated or not)."""
        return max(0, len(self.regions) - self.position - 1)
