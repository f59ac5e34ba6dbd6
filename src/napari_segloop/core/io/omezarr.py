"""Chunked OME-Zarr outputs: written chunk by chunk, resumable, with multiscale levels.

Format
    OME-NGFF 0.4 on zarr format 2 (``.zattrs``/``.zarray``, chunk files under
    ``0/``, ``1/``, ... with ``/`` between chunk indices): the version that
    napari (``napari-ome-zarr`` and napari's own zarr reader), Fiji's
    MoBIE/BigDataViewer, QuPath and ``ome-zarr-py`` all read today. Level 0
    is full resolution; each further level halves y and x (the mean of 2x2
    pixels for probabilities, every second pixel for masks and class maps)
    until the image fits one chunk. Axes, units and the pixel size are the
    input's.

Atomicity and resume
    The group and its metadata are made in a temporary folder and moved into
    place, so an output folder is either absent or a valid, empty image. zarr
    writes each chunk to a temporary file and renames it (``LocalStore``),
    so a chunk file that exists is complete: an interrupted run is resumed by
    skipping the blocks whose chunks all exist. ``write_empty_chunks`` is on,
    so that a chunk of zeros (background) is written too and counts as done.
    The group's ``segloop`` attribute holds a fingerprint of what made it
    (model weights, input, settings); an output made by anything else is
    never overwritten or resumed, and says why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = ["ZarrOutput", "ngff_axes", "open_level", "open_output", "pyramid_shapes", "writable_level"]

NGFF_VERSION = "0.4"
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
_ORDER = "TCZYX"


def ngff_axes(axes: str) -> str:
    """Check that ``axes`` (``"YX"``, ``"ZYX"``, ``"CYX"``, ``"TCZYX"``) are valid NGFF 0.4 axes.

    Returns the axes; raises :class:`InputError` naming the rule broken
    (2 to 5 axes, each of ``TCZYX`` at most once, in that order, 2 or 3 of them space).
    """
    if not 2 <= len(axes) <= 5 or len(set(axes)) != len(axes) or any(a not in _ORDER for a in axes):
        raise InputError(f"OME-Zarr images have 2 to 5 distinct axes of T, C, Z, Y, X; this output "
                         f"would have the axes {axes}. Write a TIFF instead.")
    if list(axes) != sorted(axes, key=_ORDER.index) or not axes.endswith("YX"):
        raise InputError(f"OME-Zarr axes must be in the order T, C, Z, Y, X; this output would have "
                         f"the axes {axes}. Write a TIFF instead.")
    return axes


def pyramid_shapes(shape: Sequence[int], chunk: int) -> list[tuple[int, ...]]:
    """Shapes of the levels: each halves the last two axes (rounding up) until they fit one chunk."""
    shapes = [tuple(int(n) for n in shape)]
    while max(shapes[-1][-2:]) > chunk:
        last = shapes[-1]
        shapes.append((*last[:-2], (last[-2] + 1) // 2, (last[-1] + 1) // 2))
    return shapes


def _axes_meta(axes: str, units: Sequence[str | None] | None) -> list[dict[str, str]]:
    out = []
    for k, a in enumerate(axes):
        entry = {"name": a.lower(), "type": _AXIS_TYPES[a]}
        unit = units[k] if units is not None else None
        if unit and a != "C":
            entry["unit"] = str(unit)
        out.append(entry)
    return out


@dataclass
class ZarrOutput:
    """An OME-Zarr image being written.

    Attributes
    ----------
    path : Path
        The ``.zarr`` folder.
    group : zarr.Group
        Its root group.
    shape : tuple of int
        Shape of level 0.
    chunks : tuple of int
        Chunk shape (1 along every axis but y and x).
    kind : {"probability", "mask", "classes"}
        What it holds (chooses how levels are downsampled).
    resumed : int
        Chunks that were already written when it was opened.
    live : bool
        Write the lower levels with every block (:meth:`write`).
    """

    path: Path
    group: Any
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    kind: str
    resumed: int = 0
    live: bool = False

    @property
    def level0(self) -> Any:
        """The full-resolution array, opened to write chunks of zeros too (they are done work)."""
        return writable_level(self.group, "0")

    @property
    def complete(self) -> bool:
        """True once every level was written (:meth:`finish`)."""
        return bool(dict(self.group.attrs).get("segloop", {}).get("complete"))

    def chunk_index(self, region: tuple[slice, ...]) -> Iterator[tuple[int, ...]]:
        """Indices of the level-0 chunks that ``region`` covers."""
        ranges = [range(s.start // c, -(-s.stop // c)) for s, c in zip(region, self.chunks, strict=True)]
        for idx in np.ndindex(*[len(r) for r in ranges]):
            yield tuple(r[i] for r, i in zip(ranges, idx, strict=True))

    def written(self, region: tuple[slice, ...]) -> bool:
        """True when every chunk of ``region`` exists on disk (so it was written whole)."""
        root = self.path / "0"
        return all((root.joinpath(*(str(i) for i in idx))).is_file() for idx in self.chunk_index(region))

    def count_written(self) -> int:
        """How many level-0 chunk files exist."""
        root = self.path / "0"
        depth = len(self.shape)
        n = 0
        for _dirpath, _dirs, files in os.walk(root):
            rel = Path(_dirpath).relative_to(root).parts
            if len(rel) == depth - 1:
                n += sum(1 for f in files if f.isdigit())
        return n

    def write(self, region: tuple[slice, ...], data: np.ndarray) -> None:
        """Write ``data`` into ``region`` of level 0 (regions aligned to chunks write whole chunks).

        With :attr:`live` set, the lower levels are written too, so that a viewer
        zoomed out sees each block as soon as it is done (one writer only: the
        lower levels' chunks are shared between blocks).
        """
        self.level0[region] = data
        if not self.live:
            return
        shapes = pyramid_shapes(self.shape, self.chunks[-1])
        for level in range(1, len(shapes)):
            f = 2 ** level
            ys, xs = region[-2], region[-1]
            if ys.start % f or xs.start % f:
                break  # blocks are aligned to powers of two up to their size; finish() does the rest
            size = (-(-ys.stop // f) - ys.start // f, -(-xs.stop // f) - xs.start // f)
            data = downsample(data, self.kind, size)
            target = (*region[:-2], slice(ys.start // f, ys.start // f + size[0]),
                      slice(xs.start // f, xs.start // f + size[1]))
            writable_level(self.group, str(level))[target] = data

    def mark_complete(self) -> None:
        """Record that every level is written (after live writes of every block)."""
        attrs = dict(self.group.attrs)
        attrs["segloop"] = {**attrs.get("segloop", {}), "complete": True}
        self.group.attrs.update(attrs)

    def level_chunks(self) -> int:
        """How many chunks the lower-resolution levels have (what :meth:`finish` writes)."""
        c = self.chunks[-1]
        return sum(int(np.prod(sh[:-2], dtype=np.int64)) * -(-sh[-2] // c) * -(-sh[-1] // c)
                   for sh in pyramid_shapes(self.shape, c)[1:])

    def finish(self) -> Iterator[int]:
        """Write the lower-resolution levels from level 0, chunk by chunk, and mark the output complete.

        Yields the number of level chunks written so far (for progress); memory
        is about four chunks.
        """
        shapes = pyramid_shapes(self.shape, self.chunks[-1])
        done = 0
        for level in range(1, len(shapes)):
            src, dst = self.group[str(level - 1)], writable_level(self.group, str(level))
            c = self.chunks[-1]
            lead = [range(n) for n in shapes[level][:-2]]
            for index in np.ndindex(*[len(r) for r in lead]) if lead else [()]:
                for y in range(0, shapes[level][-2], c):
                    for x in range(0, shapes[level][-1], c):
                        y1, x1 = min(y + c, shapes[level][-2]), min(x + c, shapes[level][-1])
                        block = np.asarray(src[(*index, slice(2 * y, 2 * y1), slice(2 * x, 2 * x1))])
                        dst[(*index, slice(y, y1), slice(x, x1))] = downsample(block, self.kind,
                                                                             (y1 - y, x1 - x))
                        done += 1
                        yield done
        self.mark_complete()


def writable_level(group: Any, name: str) -> Any:
    """Level ``name`` of ``group``, opened so that chunks equal to the fill value are written too.

    zarr skips such chunks by default (``write_empty_chunks`` is a setting of the opened array,
    not of the stored one); a resumed run must see a chunk of background as written.
    """
    import zarr

    with zarr.config.set({"array.write_empty_chunks": True}):
        return group[name]


def open_level(path: str | os.PathLike, name: str = "0") -> Any:
    """Level ``name`` of the OME-Zarr output at ``path``, for writing (a cluster worker's view)."""
    import zarr

    return writable_level(zarr.open_group(str(path), mode="r+", zarr_format=2), name)


def downsample(block: np.ndarray, kind: str, size: tuple[int, int]) -> np.ndarray:
    """Halve the last two axes of ``block`` to ``size``: 2x2 means (probabilities) or every second pixel."""
    if kind != "probability":
        return block[..., ::2, ::2][..., : size[0], : size[1]]
    h, w = block.shape[-2:]
    pad = [(0, 0)] * (block.ndim - 2) + [(0, 2 * size[0] - h), (0, 2 * size[1] - w)]
    if any(p[1] for p in pad):
        block = np.pad(block, pad, mode="edge")
    b = block.reshape(*block.shape[:-2], size[0], 2, size[1], 2).astype(np.float32)
    return b.mean(axis=(-3, -1)).astype(np.float32)


def open_output(
    path: str | os.PathLike,
    shape: Sequence[int],
    dtype: Any,
    *,
    axes: str,
    chunk: int,
    fingerprint: dict[str, Any],
    kind: str,
    scale: Sequence[float] | None = None,
    units: Sequence[str | None] | None = None,
    name: str = "",
) -> ZarrOutput:
    """Create an OME-Zarr output, or open the one an interrupted run of the same job left.

    Parameters
    ----------
    path : path-like
        The ``.zarr`` folder.
    shape, dtype
        Level 0.
    axes : str
        One of ``TCZYX`` per axis, in that order (:func:`ngff_axes`).
    chunk : int
        Chunk edge along y and x.
    fingerprint : dict
        What makes the job the same job (model weights, input, settings);
        a folder left by another job is refused.
    kind : {"probability", "mask", "classes"}
    scale, units
        Pixel size and unit per axis (from the input), or None.
    name : str
        The image's name in the metadata.

    Raises
    ------
    InputError
        ``path`` exists and is not an output of this very job.
    """
    import zarr

    final = Path(path)
    shape = tuple(int(n) for n in shape)
    ngff_axes(axes)
    if len(axes) != len(shape):
        raise InputError(f"{final}: {len(axes)} axes for an image of {len(shape)} dimensions.")
    chunks = (*([1] * (len(shape) - 2)), chunk, chunk)
    if final.exists():
        out = _reopen(final, shape, np.dtype(dtype), chunks, fingerprint, kind)
        out.resumed = out.count_written()
        return out
    from napari_segloop.core.io.atomic import atomic_folder

    scale = tuple(float(s) for s in scale) if scale is not None else (1.0,) * len(shape)
    shapes = pyramid_shapes(shape, chunk)
    datasets = []
    with atomic_folder(final) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=2)
        for level, level_shape in enumerate(shapes):
            group.create_array(
                str(level), shape=level_shape, dtype=dtype,
                chunks=chunks,
                fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"},
                config={"write_empty_chunks": True},
            )
            factor = 2 ** level
            datasets.append({"path": str(level), "coordinateTransformations": [{
                "type": "scale",
                "scale": [s * (factor if k >= len(shape) - 2 else 1) for k, s in enumerate(scale)],
            }]})
        group.attrs.update({
            "multiscales": [{
                "version": NGFF_VERSION,
                "name": name,
                "axes": _axes_meta(axes, units),
                "datasets": datasets,
                "type": "mean of 2x2 pixels" if kind == "probability" else "every second pixel",
            }],
            "segloop": {"fingerprint": fingerprint, "kind": kind, "complete": False},
        })
    group = zarr.open_group(str(final), mode="r+", zarr_format=2)
    return ZarrOutput(final, group, shape, chunks, kind)


def _reopen(final: Path, shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...],
            fingerprint: dict[str, Any], kind: str) -> ZarrOutput:
    import zarr

    try:
        group = zarr.open_group(str(final), mode="r+", zarr_format=2)
        attrs = dict(group.attrs)
    except Exception:
        raise InputError(f"{final} exists and is not an OME-Zarr image segloop wrote; "
                         "choose another output, or remove it first.") from None
    mine = attrs.get("segloop")
    if not isinstance(mine, dict) or "fingerprint" not in mine:
        raise InputError(f"{final} exists and was not written by segloop; choose another output, "
                         "or remove it first.")
    old = mine["fingerprint"]
    if old != _jsonable(fingerprint) or mine.get("kind") != kind:
        differ = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != _jsonable(fingerprint).get(k))
        raise InputError(f"{final} exists and was written by another prediction (it differs in "
                         f"{', '.join(differ) or 'what it holds'}); it is not overwritten: choose another "
                         "output, or remove it first.")
    level0 = group["0"]
    if tuple(level0.shape) != shape or np.dtype(level0.dtype) != dtype or tuple(level0.chunks) != chunks:
        raise InputError(f"{final} exists with another shape, type or chunking; choose another output, "
                         "or remove it first.")
    return ZarrOutput(final, group, shape, chunks, kind)


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON attributes (tuples become lists)."""
    import json

    return json.loads(json.dumps(value))
