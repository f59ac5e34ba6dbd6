"""Sliding-window inference as a generator that can show progress and be cancelled.

:func:`predict` yields a :class:`Progress` after every batch of tiles (and a
:class:`Notice` for anything the user should know: a device fallback, an
out-of-memory retry, NaN pixels) and *returns* the float32 probability map,
which has exactly the input's shape without its channel axis. Closing the
generator (napari's ``worker.quit()``) stops it at the next batch and nothing
is returned, so no half-written result can reach a layer or a file.

Memory: besides the output, one float32 normalised copy of the current 2-D
slice and one batch of tiles are held. Blending weights are separable (see
:mod:`napari_segloop.core.inference.tiling`), so no weight image is allocated.

Out of memory on a GPU: the cache is freed and the slice retried with half the
batch, then half the tile size (down to 64 px), then on the CPU, each step
announced with a :class:`Notice`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.events import Event, Notice, Progress, run_to_end
from napari_segloop.core.inference.devices import autocast_dtype, empty_cache, resolve_device
from napari_segloop.core.inference.normalize import (
    NormStats,
    apply_stats,
    compute_stats,
    conversion_name,
    normalized_copy,
    prepare_input,
)
from napari_segloop.core.inference.tiling import TileGrid
from napari_segloop.core.models.registry import probabilities

MIN_TILE = 64
_FLOAT32_SAFE = 1e30

#: What the tiler blends for each batch of tiles: ``head(model, batch)`` returns a
#: ``(B, K, h, w)`` tensor of values in ``[0, 1]`` (K channels blended alike). The plain
#: prediction blends the probability; uncertainty heads blend several passes' statistics.
TileHead = Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]


def probability_head(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The plain prediction: the registry's probabilities of one forward pass, ``(B, 1, h, w)``."""
    return probabilities(model(batch))[:, :1]


def class_probability_head(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The prediction of a K-class model: softmax probabilities of one forward pass, ``(B, K, h, w)``."""
    return probabilities(model(batch))


@dataclass
class PredictOptions:
    """Settings of one prediction; None means "the bundle's default".

    Attributes
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    tile_size : int, optional
        Square tile edge, a multiple of 32.
    overlap : float, optional
        Fraction of a tile shared with its neighbour.
    batch_size : int, optional
        Tiles per forward pass; None picks 1 on the CPU (batching does not
        speed up CPU inference but multiplies its activation memory) and 8 on
        a GPU.
    scale : float, optional
        Resize factor applied before inference (output resized back).
    object_size : float, optional
        Typical object diameter in *this* image, in pixels; with the bundle's
        ``object_size`` it sets the resize factor.
    amp : bool
        Mixed precision on CUDA.
    channel_axis : int, "auto" or None
        Channel axis of the image.
    rgb : bool, optional
        napari's ``layer.rgb``.
    convert : {"none", "gray", "repeat", "invert", "hematoxylin"}
        Explicit channel conversion.
    channel : int, optional
        Use only this channel.
    stats_sample : np.ndarray, optional
        Raw pixels, ``(C_model, h, w)`` after the channel conversion, that the
        normalisation statistics come from instead of each slice itself. The
        chunked prediction of an image larger than memory
        (:mod:`napari_segloop.core.inference.blocks`) gives every block the
        same sample of the whole image, so that the blocks are normalised
        alike and no block is read twice.
    """

    device: str = "auto"
    tile_size: int | None = None
    overlap: float | None = None
    batch_size: int | None = None
    scale: float | None = None
    object_size: float | None = None
    amp: bool = True
    channel_axis: int | str | None = "auto"
    rgb: bool | None = None
    convert: str = "none"
    channel: int | None = None
    stats_sample: np.ndarray | None = None

    def resolved(self, bundle: ModelBundle) -> PredictOptions:
        """Return a copy with bundle defaults filled in and values checked."""
        s = bundle.settings
        tile = int(self.tile_size if self.tile_size is not None else s.tile_size)
        overlap = float(self.overlap if self.overlap is not None else s.overlap)
        multiple = bundle.input_multiple
        if tile < multiple or tile % multiple:
            raise InputError(f"Tile size must be a positive multiple of {multiple} for this model; "
                             f"got {tile}.")
        if not 0 <= overlap <= 0.9:
            raise InputError(f"Overlap must be between 0 and 0.9; got {overlap}.")
        if self.batch_size is not None and self.batch_size < 1:
            raise InputError(f"Batch size must be at least 1; got {self.batch_size}.")
        return PredictOptions(**{**self.__dict__, "tile_size": tile, "overlap": overlap,
                                 "scale": self.scale_factor(bundle)})

    def scale_factor(self, bundle: ModelBundle) -> float:
        """The resize factor applied before inference."""
        if self.scale is not None:
            factor = float(self.scale)
        elif self.object_size is not None:
            if self.object_size <= 0:
                raise InputError(f"Object size must be > 0; got {self.object_size}.")
            if not bundle.settings.object_size:
                raise InputError(
                    "This model does not record the object size it was trained for; "
                    "give a scale factor instead."
                )
            factor = float(bundle.settings.object_size) / float(self.object_size)
        else:
            factor = float(bundle.settings.scale_factor)
        if not (math.isfinite(factor) and 0.05 <= factor <= 20):
            raise InputError(f"Scale factor must be between 0.05 and 20; got {factor:g}.")
        return factor


def inverted_warning(stats: NormStats) -> str:
    """The warning for an image that looks inverted for a model of bright objects."""
    share = float(np.min(stats.background)) if stats.background is not None else 0.5
    return (
        "The image looks inverted for this model: its background (the most common intensity) is "
        f"bright ({share:.0%} of its intensity range), but the model was trained on bright objects on a "
        f"dark background. For dark objects on a bright background choose the conversion "
        f"{conversion_name('invert')}; for H&E or IHC colour images choose "
        f"{conversion_name('hematoxylin')}."
    )


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU out-of-memory errors raised by torch."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _resize_chw(chw: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(chw))[None]
    down = size[0] < chw.shape[1] or size[1] < chw.shape[2]
    out = torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=False,
                                          antialias=down)
    return out[0].numpy()


class _Plan:
    """Mutable device/tile/batch settings, degraded step by step on out-of-memory."""

    def __init__(self, device: torch.device, tile: int, batch: int, multiple: int):
        self.device, self.tile, self.batch, self.multiple = device, tile, batch, multiple
        self.first_tile, self.first_batch = tile, batch

    def degrade(self) -> str | None:
        """Move to the next, cheaper setting; return its description, or None if none is left."""
        if self.batch > 1:
            self.batch = max(1, self.batch // 2)
            return f"batch size {self.batch}"
        if self.tile > max(MIN_TILE, self.multiple):
            self.tile = max(MIN_TILE, (self.tile // 2) // self.multiple * self.multiple)
            return f"tile size {self.tile}"
        if self.device.type != "cpu":
            self.device = torch.device("cpu")
            self.tile, self.batch = self.first_tile, self.first_batch
            return "the CPU"
        return None


def _forward_plane(
    model: torch.nn.Module,
    source: np.ndarray,
    stats: NormStats | None,
    out: np.ndarray,
    plan: _Plan,
    overlap: float,
    amp: bool,
    progress: list[int],
    head: TileHead = probability_head,
) -> Generator[Progress, None, None]:
    """Predict one ``(C, H, W)`` plane into ``out`` (``(K, H, W)``, overwritten).

    ``source`` holds raw values normalised tile by tile with ``stats``, or
    values already normalised when ``stats`` is None. ``head`` turns a batch
    of tiles into the K channels that are blended into ``out``.
    """
    grid = TileGrid.build(source.shape[1], source.shape[2], plan.tile, overlap, plan.multiple)
    wy, wx = grid.windows()
    vh, vw = grid.valid()
    device = plan.device
    window = torch.from_numpy(np.outer(wy, wx)).to(device)
    dtype = autocast_dtype(device) if amp else None
    buf = np.empty((plan.batch, source.shape[0], grid.tile_h, grid.tile_w), dtype=np.float32)
    # float64 values beyond float32's range would overflow before scaling: normalise those
    # tiles in float64 and cast afterwards (clipped, so the network never sees Inf).
    wide_tiles = stats is not None and source.dtype == np.float64
    wide = np.empty(buf.shape[1:], dtype=np.float64) if wide_tiles else None
    out.fill(0.0)
    origins = list(grid.origins())
    for start in range(0, len(origins), plan.batch):
        chunk = origins[start:start + plan.batch]
        for k, (y, x) in enumerate(chunk):
            if wide is not None:
                grid.extract(source, y, x, wide)
                apply_stats(wide, stats)
                np.clip(wide, -_FLOAT32_SAFE, _FLOAT32_SAFE, out=wide)
                buf[k] = wide
                continue
            grid.extract(source, y, x, buf[k])
            if stats is not None:
                apply_stats(buf[k], stats)
        batch = torch.from_numpy(buf[: len(chunk)]).to(device)
        with torch.inference_mode():
            with torch.autocast(
                device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None
            ):
                values = head(model, batch)
            probs = values.float()[:, :, :vh, :vw]
            if not bool(torch.isfinite(probs).all()):
                raise SegloopError(
                    "The model produced NaN/Inf outputs; its weights may be corrupt."
                )
            host = (probs * window).cpu().numpy()
        for k, (y, x) in enumerate(chunk):
            out[:, y:y + vh, x:x + vw] += host[k]
        progress[0] += len(chunk)
        yield Progress(progress[0], progress[1])
    sum_y, sum_x = grid.weight_sums()
    rows = max(1, 1_048_576 // max(1, out.shape[2]))
    for r in range(0, out.shape[1], rows):
        out[:, r:r + rows] /= np.outer(sum_y[r:r + rows], sum_x)
    np.clip(out, 0.0, 1.0, out=out)


def predict(
    bundle: ModelBundle,
    image: Any,
    options: PredictOptions | None = None,
    slice_index: tuple[int, ...] | None = None,
) -> Generator[Event, None, np.ndarray]:
    """Predict a probability map for ``image``, tile by tile.

    Parameters
    ----------
    bundle : ModelBundle
        The model and its settings.
    image : array-like
        2-D, RGB(A), multichannel or stacked image (see
        :mod:`napari_segloop.core.inference.normalize` for the layout rules).
    options : PredictOptions, optional
        Device, tiling, scale and channel options.
    slice_index : tuple of int, optional
        Predict only this stack position (the current slice in napari); the
        result is then a single ``(H, W)`` map.

    Yields
    ------
    Progress or Notice
        One :class:`Progress` per batch of tiles.

    Returns
    -------
    np.ndarray
        float32 probabilities in ``[0, 1]``, shaped like the image without its
        channel axis (or ``(H, W)`` with ``slice_index``). A model with K
        classes gives ``(K, *shape)``: one softmax channel per class, class 0
        background (turn it into a class map with
        :func:`~napari_segloop.core.evaluation.multiclass.class_map`).

    Raises
    ------
    InputError
        For images that do not fit the model.
    """
    if bundle.classes > 1:
        return (yield from predict_channels(bundle, image, options, slice_index,
                                            class_probability_head, bundle.classes))
    out = yield from predict_channels(bundle, image, options, slice_index)
    return out[0]


def predict_channels(
    bundle: ModelBundle,
    image: Any,
    options: PredictOptions | None = None,
    slice_index: tuple[int, ...] | None = None,
    head: TileHead = probability_head,
    channels: int = 1,
) -> Generator[Event, None, np.ndarray]:
    """:func:`predict` with another :data:`TileHead`: K blended channels per pixel.

    The one tiler of the product: uncertainty maps (several passes per tile)
    run through here, with the same normalisation, resizing, blending,
    progress, cancellation and out-of-memory fallbacks as a prediction.

    Parameters
    ----------
    bundle, image, options, slice_index
        As for :func:`predict`.
    head : TileHead
        Turns a batch of normalised tiles into ``channels`` values in ``[0, 1]``.
    channels : int
        Number of channels ``head`` returns.

    Returns
    -------
    np.ndarray
        float32, ``(channels, *shape)`` where ``shape`` is what :func:`predict` returns.
    """
    opts = (options or PredictOptions()).resolved(bundle)
    prepared = prepare_input(
        image, bundle.in_channels, opts.channel_axis, opts.rgb, opts.convert, opts.channel
    )
    for note in prepared.notes:
        yield Notice(note)
    if slice_index is not None:
        index = tuple(int(i) for i in slice_index)
        if len(index) != len(prepared.stack_shape) or any(
            not 0 <= i < n for i, n in zip(index, prepared.stack_shape, strict=False)
        ):
            raise InputError(
                f"Slice {index} does not exist in a stack of shape {prepared.stack_shape}."
            )
        indices: Iterable[tuple[int, ...]] = [index]
        out = np.empty((channels, *prepared.spatial_shape), dtype=np.float32)
        n_slices = 1
    else:
        indices = itertools.product(*(range(n) for n in prepared.stack_shape))
        out = np.empty((channels, *prepared.output_shape), dtype=np.float32)
        n_slices = prepared.n_slices

    choice = resolve_device(opts.device)
    for text in choice.notices:
        yield Notice(text, "warning")
    batch = opts.batch_size or (1 if choice.device.type == "cpu" else 8)
    plan = _Plan(choice.device, int(opts.tile_size), int(batch), bundle.input_multiple)
    factor = float(opts.scale)
    h, w = prepared.spatial_shape
    sh, sw = (max(1, round(h * factor)), max(1, round(w * factor))) if factor != 1 else (h, w)
    if factor != 1:
        yield Notice(f"Image resized by {factor:g} for the model ({h}x{w} -> {sh}x{sw}).")
    tiles_per_slice = len(TileGrid.build(sh, sw, plan.tile, float(opts.overlap), plan.multiple))
    progress = [0, tiles_per_slice * n_slices]
    yield Progress(0, progress[1], "starting")

    model = bundle.model
    model.eval()
    warned: set[str] = set()
    for done_slices, index in enumerate(indices):
        raw = prepared.slice_chw(index)
        sample = raw if opts.stats_sample is None else opts.stats_sample
        stats = compute_stats(sample, bundle.settings.normalization)
        for text in stats.warnings:
            if text not in warned:
                warned.add(text)
                yield Notice(text if not index else f"Slice {index}: {text}", "warning")
        if (bundle.settings.object_polarity == "bright" and opts.convert not in ("invert", "hematoxylin")
                and "inverted" not in warned and stats.looks_inverted()):
            warned.add("inverted")
            yield Notice(inverted_warning(stats), "warning")
        if factor != 1:
            # Resizing needs the whole normalised slice; without it, tiles are normalised one by one.
            source = _resize_chw(normalized_copy(raw, stats), (sh, sw))
            source_stats = None
        else:
            source, source_stats = raw, stats
        target = out if slice_index is not None or not index else out[(slice(None), *index)]
        plane = target if factor == 1 else np.empty((channels, sh, sw), dtype=np.float32)
        slice_start = progress[0]
        while True:
            try:
                model.to(plan.device)
                yield from _forward_plane(
                    model, source, source_stats, plane, plan, float(opts.overlap), opts.amp, progress,
                    head,
                )
                break
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed_on = plan.device
                empty_cache(failed_on)
                step = plan.degrade()
                if step is None:
                    raise SegloopError(
                        "Out of memory even with the smallest tiles on the CPU; "
                        "close other programs or predict the current slice only."
                    ) from exc
                yield Notice(f"Out of memory on {failed_on}; retrying with {step}.", "warning")
                remaining = n_slices - done_slices
                progress[0] = slice_start
                progress[1] = slice_start + remaining * len(
                    TileGrid.build(sh, sw, plan.tile, float(opts.overlap), plan.multiple)
                )
                yield Progress(progress[0], progress[1], "retrying")
        if factor != 1:
            target[...] = _resize_chw(plane, (h, w))
            np.clip(target, 0.0, 1.0, out=target)
        del source
    return out


def predict_array(bundle: ModelBundle, image: Any, **options: Any) -> np.ndarray:
    """Convenience wrapper: run :func:`predict` to the end and return the map."""
    return run_to_end(predict(bundle, image, PredictOptions(**options)))
