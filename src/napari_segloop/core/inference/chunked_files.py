"""Predicting an image larger than memory into an OME-Zarr output, resumably.

:func:`plan_zarr_job` opens the input region by region (a ``.zarr`` folder, an
OME-Zarr image or a TIFF through tifffile's zarr store), works out its axes,
and creates (or reopens, to resume) the OME-Zarr output;
:func:`run_zarr_job` predicts the blocks that are not written yet
(:func:`napari_segloop.core.inference.blocks.predict_blocks`) and writes the
lower-resolution levels. The same job runs block by block on a dask cluster
(:mod:`napari_segloop.core.inference.cluster`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Event, Notice, Progress
from napari_segloop.core.inference.blocks import BLOCK, BlockResult, Layout, predict_blocks
from napari_segloop.core.inference.files import channel_axis_from_axes
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.core.io.lazy import LazyImage, open_lazy
from napari_segloop.core.io.omezarr import ZarrOutput, open_output

__all__ = ["CHUNK", "ZarrJob", "plan_zarr_job", "run_zarr_job", "weights_digest"]

#: Default chunk edge of OME-Zarr outputs (4 MB of float32: quick to open in napari).
CHUNK = 1024


def weights_digest(model: Any) -> str:
    """SHA-256 of a model's (or an ensemble's) weights: what makes two predictions the same job."""
    h = hashlib.sha256()
    for member in getattr(model, "members", [model]):
        for name, tensor in sorted(member.model.state_dict().items()):
            h.update(name.encode())
            h.update(np.ascontiguousarray(tensor.detach().cpu().float().numpy()).tobytes())
    return h.hexdigest()[:32]


@dataclass
class ZarrJob:
    """One input predicted into one OME-Zarr output.

    Attributes
    ----------
    lazy : LazyImage
        The input (close it when done: :meth:`close`).
    layout : Layout
        Its channel, stack and plane axes.
    output : ZarrOutput
        The output being written.
    options : PredictOptions
        With the channel axis the file's axes chose.
    threshold : float, "auto" or None
    block, halo : int
        Block edge and the pixels read around each block.
    """

    lazy: LazyImage
    layout: Layout
    output: ZarrOutput
    options: PredictOptions
    threshold: float | str | None
    block: int
    halo: int | None

    def close(self) -> None:
        """Close the input."""
        self.lazy.close()


def plan_zarr_job(
    model: Any,
    src: str | Path | LazyImage,
    dst: str | Path,
    options: PredictOptions,
    threshold: float | str | None = None,
    *,
    chunk: int = CHUNK,
    block: int = BLOCK,
    halo: int | None = None,
) -> ZarrJob:
    """Open ``src`` and create (or reopen, to resume) the OME-Zarr output ``dst``.

    Raises
    ------
    InputError
        An input that cannot be read region by region, a block size that is
        not a multiple of the chunk, axes OME-Zarr cannot hold, or an existing
        ``dst`` that another job wrote.
    """
    if chunk < 64 or block < chunk or block % chunk:
        raise InputError(f"The block size ({block}) must be a multiple of the chunk size ({chunk}), "
                         "which must be at least 64.")
    lazy = src if isinstance(src, LazyImage) else open_lazy(src)
    try:
        opts = options
        axis = channel_axis_from_axes(lazy.axes, lazy.shape, model.in_channels)
        if opts.channel_axis == "auto" and axis != "unknown":
            opts = dataclasses.replace(opts, channel_axis=axis)
        layout = Layout.of(lazy.shape, model.in_channels, opts.channel_axis, opts.rgb)
        if lazy.dtype.kind not in "biuf":
            raise InputError(f"{lazy.source}: images must be numeric, not {lazy.dtype}.")
        first = model.members[0] if hasattr(model, "members") else model
        resolved = opts.resolved(first)
        classes = int(getattr(model, "classes", 1))
        axes = layout.output_axes(lazy.axes)
        keep = [a for a in range(lazy.ndim) if a != layout.channel_axis]
        shape = tuple(lazy.shape[a] for a in keep)
        scale = tuple(lazy.scale[a] for a in keep) if lazy.scale else None
        units = tuple(lazy.units[a] for a in keep) if lazy.units else None
        if classes > 1 and threshold is None:
            if "T" in axes:
                raise InputError("The class probabilities of a time series cannot be an OME-Zarr image "
                                 "(the class axis would follow time); write the class map "
                                 "(--threshold auto) or a TIFF.")
            axes, shape = "C" + axes, (classes, *shape)
            scale = (1.0, *scale) if scale else None
            units = (None, *units) if units else None
        kind = "probability" if threshold is None else "classes" if classes > 1 else "mask"
        fingerprint = {
            "model": weights_digest(model),
            "input": str(Path(lazy.source).resolve()) if lazy.source != "array" else "array",
            "input_shape": list(lazy.shape),
            "input_dtype": str(lazy.dtype),
            "threshold": None if threshold is None else str(threshold),
            "tile": int(resolved.tile_size), "overlap": float(resolved.overlap),
            "scale_factor": float(resolved.scale), "convert": opts.convert, "channel": opts.channel,
            "channel_axis": layout.channel_axis, "block": block, "halo": halo,
        }
        output = open_output(dst, shape, np.float32 if kind == "probability" else np.uint8,
                             axes=axes, chunk=chunk, fingerprint=fingerprint, kind=kind,
                             scale=scale, units=units, name=Path(lazy.source).name)
    except BaseException:
        lazy.close()
        raise
    return ZarrJob(lazy, layout, output, opts, threshold, block, halo)


def run_zarr_job(model: Any, job: ZarrJob) -> Generator[Event, None, BlockResult | None]:
    """Predict the blocks of ``job`` not written yet, then its lower-resolution levels.

    Returns the :class:`BlockResult`, or None when the output was complete already.
    """
    out = job.output
    if not (yield from announce(out)):
        return None
    result = yield from predict_blocks(model, job.lazy, out, job.options, job.threshold,
                                       block=job.block, halo=job.halo, layout=job.layout)
    yield from write_levels(out)
    return result


def announce(out: ZarrOutput) -> Generator[Event, None, bool]:
    """Say whether ``out`` is complete already or is being resumed; False when there is nothing to do."""
    if out.complete:
        yield Notice(f"{out.path} is complete already (an earlier run wrote it); nothing to do.")
        return False
    if out.resumed:
        yield Notice(f"Resuming {out.path}: {out.resumed} chunk(s) were written by an earlier run.")
    return True


def write_levels(out: ZarrOutput) -> Generator[Event, None, None]:
    """Write the multiscale levels of a finished level 0 and mark the output complete."""
    total = max(1, out.level_chunks())
    yield Progress(0, total, "lower-resolution levels")
    for done in out.finish():
        yield Progress(done, total, "lower-resolution levels")
