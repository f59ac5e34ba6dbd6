"""Scoring only some 2-D planes of a stack: which planes, their sub-stack, and their runs.

A stack may be only partly predicted (one slice of sixty, the others left
empty): only the predicted planes are then scored. Planes are named by their
*flat index*, the C order over the leading axes of an array ``(..., Y, X)``,
as ``np.ravel_multi_index(index, shape[:-2])`` gives it (a 2-D image has the
one plane 0). With 3-D objects, an object may only connect planes that are
consecutive in z within one (Z, Y, X) block: :func:`plane_runs` groups them.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = ["auto_object_dims", "check_object_dims", "check_planes", "file_axes", "n_planes",
           "plane_runs", "select_planes", "select_region"]


def n_planes(shape: Sequence[int]) -> int:
    """Number of 2-D planes of an array of ``shape`` (``(..., Y, X)``; 1 for a 2-D image)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise InputError(f"An image has at least two axes, not shape {shape}.")
    return int(np.prod(shape[:-2], dtype=np.int64))


def check_planes(planes: Sequence[int] | np.ndarray, shape: Sequence[int]) -> tuple[int, ...]:
    """Validate flat plane indices of an array of ``shape``: sorted, without repeats.

    Parameters
    ----------
    planes : sequence of int
        Flat indices (C order over ``shape[:-2]``) of the planes to score.
    shape : tuple of int
        The array's shape ``(..., Y, X)``.

    Returns
    -------
    tuple of int
        The indices, sorted and unique.

    Raises
    ------
    InputError
        If no plane is given, an index is not an integer, or one is out of range.
    """
    total = n_planes(shape)
    try:
        values = [operator.index(p) for p in np.asarray(planes, dtype=object).ravel()]
    except TypeError:
        raise InputError(f"Plane indices must be integers, not {planes!r}.") from None
    if not values:
        raise InputError("No plane to score: give at least one plane index.")
    bad = sorted({v for v in values if not 0 <= v < total})
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (", ..." if len(bad) > 5 else "")
        raise InputError(f"Plane index {shown} out of range: this stack has {total} plane(s), "
                         f"numbered 0 to {total - 1}.")
    return tuple(sorted(set(values)))


def select_planes(array: Any, planes: Sequence[int] | np.ndarray) -> np.ndarray:
    """The sub-stack ``(n_planes, Y, X)`` of the given planes of an array ``(..., Y, X)``.

    A view of ``array`` where the planes are evenly spaced (one plane, a
    range) and the array's layout allows it; a copy otherwise.

    Parameters
    ----------
    array : array-like
        An image ``(Y, X)`` or a stack ``(..., Y, X)`` (e.g. a dask or zarr
        array: only the selected planes are read).
    planes : sequence of int
        Flat plane indices (validated with :func:`check_planes`).

    Raises
    ------
    InputError
        If the indices are invalid for this array.
    """
    lazy = hasattr(array, "shape") and not isinstance(array, np.ndarray)
    shape = tuple(array.shape) if lazy else np.shape(array)
    chosen = check_planes(planes, shape)
    if lazy and len(shape) > 2:
        # lazy arrays: read the chosen planes only, one at a time
        lead = shape[:-2]
        return np.stack([np.asarray(array[np.unravel_index(p, lead)]) for p in chosen])
    arr = np.asarray(array)
    flat = arr.reshape(-1, *arr.shape[-2:])
    if len(chosen) == 1:
        return flat[chosen[0]:chosen[0] + 1]
    step = chosen[1] - chosen[0]
    if all(b - a == step for a, b in itertools.pairwise(chosen)):
        return flat[chosen[0]:chosen[-1] + 1:step]
    return flat[list(chosen)]


def select_region(region: np.ndarray | None, planes: Sequence[int]) -> np.ndarray | None:
    """The region (checked, of the whole stack's shape) on the scored planes; None stays None.

    Raises
    ------
    InputError
        If the region holds no pixel in those planes.
    """
    if region is None:
        return None
    sub = select_planes(region, planes)
    if not sub.any():
        raise InputError("The evaluation region contains no pixels in the scored planes.")
    return sub


def plane_runs(
    planes: Sequence[int] | np.ndarray, shape: Sequence[int], object_dims: int = 2
) -> list[list[int]]:
    """Group planes whose objects may connect.

    Parameters
    ----------
    planes : sequence of int
        Flat plane indices (validated with :func:`check_planes`).
    shape : tuple of int
        The array's shape ``(..., Y, X)``.
    object_dims : {2, 3}
        2: every plane alone. 3: consecutive z indices within the same
        (Z, Y, X) block (the last three axes) form a run; a gap or a new
        block (e.g. the next time frame of (T, Z, Y, X)) starts another. For a
        2-D image, or with 2, each plane is its own run.

    Returns
    -------
    list of list of int
        Runs of flat plane indices, in order.
    """
    dims = check_object_dims(object_dims)
    chosen = check_planes(planes, shape)
    shape = tuple(shape)
    if dims == 2 or len(shape) < 3:
        return [[p] for p in chosen]
    depth = int(shape[-3])
    runs: list[list[int]] = [[chosen[0]]]
    for p in chosen[1:]:
        last = runs[-1][-1]
        if p == last + 1 and p // depth == last // depth:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def check_object_dims(object_dims: int) -> int:
    """Return ``object_dims`` as an int, or raise :class:`InputError` unless it is 2 or 3."""
    if isinstance(object_dims, bool) or object_dims not in (2, 3):
        raise InputError(f"Objects are 2-D or 3-D: object_dims must be 2 or 3, not {object_dims!r}.")
    return int(object_dims)


def file_axes(path: str | Path) -> str | None:
    """The axes a TIFF file records for its first series (e.g. ``"TYX"``, ``"ZYX"``), else None.

    The image reader returns plain arrays; only TIFF files (ImageJ hyperstacks,
    tifffile's ``metadata={"axes": ...}``) say what their axes are. ``Q``
    (tifffile: unknown) is returned as is; other formats give None.
    """
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    try:
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            axes = tif.series[0].axes if tif.series else None
    except Exception:  # unreadable metadata: the reader reports what is wrong with the file
        return None
    return str(axes).upper() if axes else None


def auto_object_dims(shape: tuple[int, ...], axes: str | None = None) -> int:
    """2-D or 3-D objects for an array of ``shape``: 3 for a stack, unless its axes say time.

    A 2-D image has 2-D objects. A stack has 3-D objects over its last three
    axes unless ``axes`` (as from :func:`file_axes`, one letter per axis)
    names the third-last axis something other than z: ``T`` (a time series
    of 2-D images), ``C`` or ``S`` (channels) give 2-D objects. Unknown axes
    (``Q``, ``I``, none) count as z.
    """
    if len(shape) < 3:
        return 2
    if axes and len(axes) == len(shape) and axes[-3] not in "ZQI":
        return 2
    return 3
