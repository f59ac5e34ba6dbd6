"""Predicting a layer larger than memory into a zarr-backed probability layer.

A dask- or zarr-backed image layer of more than :data:`LARGE_BYTES` is not
read whole: the Predict dock creates an OME-Zarr probability map in a scratch
folder, shows it at once as a multiscale layer (empty), and a worker fills it
block by block (:func:`napari_segloop.core.inference.blocks.predict_blocks`),
the blocks on screen first. Each written block is drawn at every level of the
pyramid (:attr:`~napari_segloop.core.io.omezarr.ZarrOutput.live`), so napari
shows it whatever the zoom, and never waits: the UI thread only calls
``layer.refresh()``.

The scratch folder lives as long as the napari session (the path is in the
status line and in the layer's metadata, to keep the map: copy the folder, or
run the ``segloop predict`` command the dock shows, which writes the same map
where you choose).
"""

from __future__ import annotations

import re
import tempfile
import uuid
import weakref
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Progress
from napari_segloop.core.inference.blocks import BlockResult, Layout, predict_blocks
from napari_segloop.core.inference.threads import apply_threads
from napari_segloop.core.io.lazy import LazyImage, as_lazy
from napari_segloop.core.io.omezarr import ZarrOutput, open_output

__all__ = ["LARGE_BYTES", "LargeResult", "LiveLayer", "LiveOutput", "is_large", "is_large_array", "large_job",
           "levels", "open_live_output", "visible_region"]

#: Layers backed by dask or zarr with more raw bytes than this, or more pixels than
#: :data:`LARGE_PIXELS`, are predicted block by block (their float32 map alone would take 256 MB).
LARGE_BYTES = 256_000_000
LARGE_PIXELS = 64_000_000
#: Chunk edge of the scratch output (what napari loads per tile of the screen).
CHUNK = 1024
#: Block edge in napari: smaller than the command line's 4,096 px, so the screen fills sooner.
GUI_BLOCK = 2048

#: Why a K-class model cannot fill a layer larger than memory (the dock says it before starting).
CLASSES_REFUSED = ("Images larger than memory are predicted by binary models in napari; for several "
                   "classes run segloop predict with --threshold auto.")

_SCRATCH: list[tempfile.TemporaryDirectory] = []


def is_large(layer: Any) -> bool:
    """True for a lazy (dask, zarr, multiscale) image layer of more than :data:`LARGE_BYTES` or
    :data:`LARGE_PIXELS`."""
    return is_large_array(layer.data[0] if getattr(layer, "multiscale", False) else layer.data)


def is_large_array(data: Any) -> bool:
    """True for a lazy array (not a numpy array) of more than :data:`LARGE_BYTES` or :data:`LARGE_PIXELS`."""
    if isinstance(data, np.ndarray):
        return False
    pixels = int(np.prod(tuple(int(s) for s in data.shape), dtype=np.int64))
    return pixels * np.dtype(data.dtype).itemsize > LARGE_BYTES or pixels > LARGE_PIXELS


def scratch_folder() -> Path:
    """A folder for the zarr-backed maps of this napari session (removed when napari exits)."""
    if not _SCRATCH:
        _SCRATCH.append(tempfile.TemporaryDirectory(prefix="segloop-maps-"))
    return Path(_SCRATCH[0].name)


def visible_region(layer: Any) -> tuple[int, int, int, int] | None:
    """The part of ``layer``'s plane on screen, ``(y0, y1, x0, x1)`` in full-resolution pixels."""
    try:
        corners = np.asarray(layer.corner_pixels, dtype=float)
        if getattr(layer, "multiscale", False):
            corners = corners * np.asarray(layer.downsample_factors[layer.data_level], dtype=float)
        (y0, x0), (y1, x1) = corners[:, -2:]
    except Exception:  # an old napari, or a layer not drawn yet: row by row
        return None
    return int(y0), int(y1) + 1, int(x0), int(x1) + 1


def open_live_output(bundle: Any, lazy: LazyImage, layout: Layout, name: str) -> ZarrOutput:
    """Create the OME-Zarr probability map of ``lazy`` in the scratch folder, written live.

    Raises
    ------
    InputError
        A K-class model (its class probabilities are written by ``segloop predict``).
    """
    if int(getattr(bundle, "classes", 1)) > 1:
        raise InputError(CLASSES_REFUSED)
    keep = [a for a in range(lazy.ndim) if a != layout.channel_axis]
    shape = tuple(lazy.shape[a] for a in keep)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:60] or "image"
    path = scratch_folder() / f"{safe}-{uuid.uuid4().hex[:8]}.ome.zarr"
    out = open_output(path, shape, np.float32, axes=layout.output_axes(None), chunk=CHUNK,
                      fingerprint={"layer": name, "shape": list(shape)}, kind="probability", name=name)
    out.live = True
    return out


def levels(output: ZarrOutput) -> list[Any]:
    """The output's levels as zarr arrays, largest first (the data of a multiscale layer)."""
    keys = sorted((k for k in output.group.array_keys()), key=int)
    return [output.group[k] for k in keys]


@dataclass(frozen=True)
class LiveOutput:
    """The worker made the zarr-backed map: the dock adds its layer (yielded before any block)."""

    output: ZarrOutput


def large_job(bundle: Any, data: Any, options: Any, layout: Layout, name: str,
              first: tuple[int, int, int, int] | None, threads: int | str = "auto",
              block: int = GUI_BLOCK) -> Generator[Any, None, LargeResult]:
    """The worker's generator: load the default model if needed, create the map, fill it block by block.

    Yields :class:`~napari_segloop.widgets.jobs.ModelReady` (default model),
    :class:`LiveOutput` (add the layer), then the blocks' progress and
    :class:`~napari_segloop.core.events.BlockWritten` (redraw), the region
    ``first`` (what is on screen) first.
    """
    from napari_segloop.core import bundle as core_bundle
    from napari_segloop.widgets.jobs import ModelReady

    apply_threads(threads)
    if bundle is None:
        yield Progress(0, 0, "loading the default model")
        bundle = core_bundle.load_model("default")
        yield ModelReady(bundle)
    lazy = as_lazy(data, source=name)
    output = open_live_output(bundle, lazy, layout, name)
    yield LiveOutput(output)
    result = yield from predict_blocks(bundle, lazy, output, options, block=block, layout=layout, first=first)
    output.mark_complete()
    return LargeResult(result, output)


@dataclass(frozen=True)
class LargeResult:
    """What :func:`large_job` returns: the blocks done and the map they are in."""

    blocks: BlockResult
    output: ZarrOutput


class LiveLayer:
    """The probability layer being filled, and the output behind it (held by the Predict dock)."""

    def __init__(self, layer: Any, output: ZarrOutput) -> None:
        self.layer = weakref.ref(layer)
        self.output = output

    def refresh(self) -> None:
        """Redraw the layer (a block was written)."""
        layer = self.layer()
        if layer is not None:
            layer.refresh()
