"""Chunked prediction of images larger than memory: blocks with a halo, one normalisation sample.

The image plane is cut into square blocks (a multiple of the output chunk,
4,096 px by default). Each block is read with a halo around it (the tile
overlap, 64 px by default), predicted by the usual tiler
(:func:`napari_segloop.core.inference.ensemble.predict_any`: the same
normalisation, resizing, out-of-memory fallbacks and ensembles), cropped back
to the block and written. Memory is one block and its halo (about 4,224² raw
pixels plus one float32 map of that size), whatever the image size.

Why blocks with a halo rather than one global tile grid: a global grid gives
the blocks' seams exactly the in-memory result, but every tile that crosses
a seam must then be computed twice or its blended sum carried to the
neighbouring block (which breaks "one task writes whole chunks"). A halo of
the tile overlap costs about 3 % more tiles per axis with 4,096-px blocks and
keeps every block independent: a task of its own on a cluster, and a unit of
resume. Inside a block the result is the in-memory one; at a seam it differs
by blending noise (measured in ``benchmarks/bench_large.py`` and tested).

Normalisation
    Percentiles are computed once per plane from a bounded sample
    (:func:`read_sample`): the whole plane (strided, exactly as the in-memory
    path does) when it has at most :data:`WHOLE_PLANE_PIXELS` pixels, else
    a regular grid of windows spread over the plane. Every block is then
    normalised with the sample's statistics, so the blocks agree.

Post-processing (``threshold="auto"``)
    runs block by block on the block and its halo: an object is judged by
    what lies within the halo of the block; objects cut by a seam are merged
    by nothing, and a hole is filled only when it lies within one block and its
    halo. 3-D post-processing of stacks is done plane by plane here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.events import BlockWritten, Event, Notice, Progress, part_of, relay
from napari_segloop.core.inference.normalize import detect_channel_axis, prepare_input
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.core.io.lazy import LazyImage

__all__ = [
    "BLOCK",
    "Block",
    "BlockResult",
    "Layout",
    "OutputWriter",
    "block_plan",
    "job_blocks",
    "output_region",
    "plan_blocks",
    "predict_block",
    "predict_blocks",
    "read_sample",
    "visible_first",
    "write_block",
]

#: Default block edge in pixels (a multiple of the default output chunk of 1,024).
BLOCK = 4096
#: Planes with at most this many pixels are sampled whole (strided), as in memory.
WHOLE_PLANE_PIXELS = 4096 * 4096
#: The window grid of larger planes: WINDOWS x WINDOWS windows of WINDOW x WINDOW pixels.
WINDOWS = 16
WINDOW = 64


class OutputWriter(Protocol):
    """Where blocks go: an OME-Zarr output (:class:`~napari_segloop.core.io.omezarr.ZarrOutput`)
    or an in-memory array."""

    def written(self, region: tuple[slice, ...]) -> bool:
        """True when ``region`` was written whole already (resume)."""

    def write(self, region: tuple[slice, ...], data: np.ndarray) -> None:
        """Write ``data`` into ``region``."""


@dataclass(frozen=True)
class Block:
    """One block of one plane: the output region and the region read (with its halo).

    Attributes
    ----------
    stack : tuple of int
        Stack position (empty for a 2-D image).
    y0, y1, x0, x1 : int
        The output region.
    ry0, ry1, rx0, rx1 : int
        The region read: the output region and its halo, inside the image.
    """

    stack: tuple[int, ...]
    y0: int
    y1: int
    x0: int
    x1: int
    ry0: int
    ry1: int
    rx0: int
    rx1: int

    @property
    def crop(self) -> tuple[slice, slice]:
        """The output region within the region read."""
        return (slice(self.y0 - self.ry0, self.y1 - self.ry0), slice(self.x0 - self.rx0, self.x1 - self.rx0))


def plan_blocks(stack_shape: Sequence[int], height: int, width: int, block: int, halo: int) -> list[Block]:
    """Blocks of ``block`` pixels covering each plane, row by row, each with ``halo`` pixels around it."""
    if block < 1 or halo < 0:
        raise InputError(f"Block size must be >= 1 and halo >= 0; got {block} and {halo}.")
    blocks = []
    for stack in np.ndindex(*stack_shape) if stack_shape else [()]:
        for y0 in range(0, height, block):
            for x0 in range(0, width, block):
                y1, x1 = min(y0 + block, height), min(x0 + block, width)
                blocks.append(Block(tuple(int(i) for i in stack), y0, y1, x0, x1,
                                    max(0, y0 - halo), min(height, y1 + halo),
                                    max(0, x0 - halo), min(width, x1 + halo)))
    return blocks


@dataclass(frozen=True)
class Layout:
    """Which axes of an input are the channel, the stack and the image plane.

    Attributes
    ----------
    shape : tuple of int
        The input's shape.
    channel_axis : int or None
        Its channel axis.
    """

    shape: tuple[int, ...]
    channel_axis: int | None

    @classmethod
    def of(cls, shape: Sequence[int], model_channels: int, channel_axis: int | str | None = "auto",
           rgb: bool | None = None) -> Layout:
        """The layout of an input of ``shape`` (the same rules as in memory)."""
        shape = tuple(int(n) for n in shape)
        if len(shape) < 2:
            raise InputError(f"Images must have at least 2 dimensions; got shape {shape}.")
        axis = detect_channel_axis(shape, model_channels, rgb) if channel_axis == "auto" else channel_axis
        if axis is not None:
            if not -len(shape) <= int(axis) < len(shape) or len(shape) < 3:
                raise InputError(f"Channel axis {axis} does not exist in an image of shape {shape}.")
            axis = int(axis) % len(shape)
        return cls(shape, axis)

    @property
    def plane_axes(self) -> tuple[int, int]:
        """The y and x axes: the last two axes that are not the channel axis."""
        rest = [a for a in range(len(self.shape)) if a != self.channel_axis]
        return rest[-2], rest[-1]

    @property
    def stack_axes(self) -> tuple[int, ...]:
        """The other axes (z, t, ...), predicted plane by plane."""
        return tuple(a for a in range(len(self.shape)) if a != self.channel_axis and a not in self.plane_axes)

    @property
    def stack_shape(self) -> tuple[int, ...]:
        """Shape of the stack axes."""
        return tuple(self.shape[a] for a in self.stack_axes)

    @property
    def plane(self) -> tuple[int, int]:
        """``(H, W)``."""
        y, x = self.plane_axes
        return self.shape[y], self.shape[x]

    @property
    def region_channel_axis(self) -> int | None:
        """The channel axis of a region read with :meth:`index` (stack axes dropped)."""
        if self.channel_axis is None:
            return None
        return sum(1 for a in range(self.channel_axis) if a not in self.stack_axes)

    def index(self, stack: tuple[int, ...], ys: slice, xs: slice) -> tuple[Any, ...]:
        """The index that reads ``ys`` x ``xs`` of the plane at ``stack`` (all channels)."""
        y, x = self.plane_axes
        where = dict(zip(self.stack_axes, stack, strict=True))
        out: list[Any] = []
        for a in range(len(self.shape)):
            out.append(ys if a == y else xs if a == x else where.get(a, slice(None)))
        return tuple(out)

    def output_axes(self, axes: str | None) -> str:
        """The output's axes: the input's without its channel axis (``Z``, then ``T``, for unnamed ones).

        Raises
        ------
        InputError
            More than two stack axes (OME-Zarr has room for t and z only).
        """
        keep = [a for a in range(len(self.shape)) if a != self.channel_axis]
        if axes and len(axes) == len(self.shape):
            letters = "".join(axes[a] for a in keep)
            lead = letters[:-2]
            if letters.endswith("YX") and lead in ("", "Z", "T", "TZ"):
                return letters
        n_stack = len(keep) - 2
        if n_stack > 2:
            raise InputError(f"An image of shape {self.shape} has {n_stack} stack axes; OME-Zarr has "
                             "room for two (t and z).")
        return ("", "Z", "TZ")[n_stack] + "YX"


@dataclass(frozen=True)
class BlockResult:
    """What :func:`predict_blocks` did.

    Attributes
    ----------
    blocks : int
        Blocks of the image.
    skipped : int
        Blocks already written by an interrupted run, not predicted again.
    sample : str
        Where the normalisation statistics came from.
    """

    blocks: int
    skipped: int
    sample: str


def read_sample(lazy: LazyImage, layout: Layout, stack: tuple[int, ...], options: PredictOptions,
                model_channels: int) -> tuple[np.ndarray, str]:
    """A bounded sample of one plane, converted as the model reads it: ``(C_model, h, w)``.

    The whole plane (the tiler subsamples it to about 500,000 pixels, exactly as in
    memory) when it has at most :data:`WHOLE_PLANE_PIXELS` pixels; else a grid of
    :data:`WINDOWS` x :data:`WINDOWS` windows of :data:`WINDOW` px, side by side.
    Returns the sample and a sentence that says which.
    """
    h, w = layout.plane
    if h * w <= WHOLE_PLANE_PIXELS:
        step = max(1, int(np.ceil(np.sqrt(h * w / 500_000))))
        region = lazy.read(layout.index(stack, slice(0, h, step), slice(0, w, step)))
        text = "the whole plane"
    else:
        n_y, n_x = min(WINDOWS, max(1, h // WINDOW)), min(WINDOWS, max(1, w // WINDOW))
        ys = np.linspace(0, h - WINDOW, n_y).astype(int)
        xs = np.linspace(0, w - WINDOW, n_x).astype(int)
        y_axis, x_axis = layout.plane_axes
        r_y = sum(1 for a in range(y_axis) if a not in layout.stack_axes)
        r_x = sum(1 for a in range(x_axis) if a not in layout.stack_axes)
        rows = []
        for y in ys:
            row = [lazy.read(layout.index(stack, slice(y, y + WINDOW), slice(x, x + WINDOW))) for x in xs]
            rows.append(np.concatenate(row, axis=r_x))
        region = np.concatenate(rows, axis=r_y)
        text = (f"a sample of {n_y * n_x} windows of {WINDOW}x{WINDOW} px spread over the plane "
                f"({n_y * n_x * WINDOW * WINDOW / 1e6:.2g} of {h * w / 1e6:.4g} megapixels)")
    prepared = prepare_input(region, model_channels, layout.region_channel_axis, options.rgb,
                             options.convert, options.channel)  # type: ignore[arg-type]
    return np.ascontiguousarray(prepared.slice_chw(()), dtype=np.float32), text


def predict_block(
    model: Any,
    lazy: LazyImage,
    layout: Layout,
    block: Block,
    options: PredictOptions,
    sample: np.ndarray,
) -> Generator[Event, None, np.ndarray]:
    """Read one block with its halo and predict it; returns the probabilities of the region read.

    The result is ``(h, w)`` (``(K, h, w)`` for K classes) over the region
    read; crop it with :attr:`Block.crop`.
    """
    from napari_segloop.core.inference.ensemble import predict_any

    region = lazy.read(layout.index(block.stack, slice(block.ry0, block.ry1), slice(block.rx0, block.rx1)))
    opts = dataclasses.replace(options, channel_axis=layout.region_channel_axis, stats_sample=sample)
    return (yield from predict_any(model, region, opts))


def block_plan(model: Any, layout: Layout, options: PredictOptions, block: int = BLOCK,
               halo: int | None = None) -> list[Block]:
    """The blocks of an input; ``halo`` None: the tile overlap in pixels (at least the input multiple).

    Raises
    ------
    InputError
        Options that do not fit a member of ``model``.
    """
    first = model.members[0] if hasattr(model, "members") else model
    for member in getattr(model, "members", [model]):
        options.resolved(member)
    resolved = options.resolved(first)
    if halo is None:
        halo = max(first.input_multiple, round(int(resolved.tile_size) * float(resolved.overlap)))
    h, w = layout.plane
    return plan_blocks(layout.stack_shape, h, w, block, halo)


def output_region(model: Any, block: Block, threshold: float | str | None) -> tuple[slice, ...]:
    """Where ``block`` goes in the output: ``(*stack, y, x)``, or ``(K, *stack, y, x)`` for class
    probabilities."""
    lead = tuple(slice(i, i + 1) for i in block.stack)
    region = (*lead, slice(block.y0, block.y1), slice(block.x0, block.x1))
    classes = int(getattr(model, "classes", 1))
    return (slice(0, classes), *region) if classes > 1 and threshold is None else region


def write_block(
    model: Any,
    lazy: LazyImage,
    layout: Layout,
    block: Block,
    options: PredictOptions,
    threshold: float | str | None,
    sample: np.ndarray,
    write: Any,
) -> Generator[Event, None, None]:
    """Predict one block, make what the output holds (probabilities, mask or class map), crop the
    halo and pass it to ``write(region, data)``."""
    from napari_segloop.core.inference.files import output_for

    prob = yield from predict_block(model, lazy, layout, block, options, sample)
    first = model.members[0] if hasattr(model, "members") else model
    out = output_for(model, prob, threshold, object_dims=2, scale=options.scale_factor(first))
    ys, xs = block.crop
    data = out[..., ys, xs]
    if threshold is not None and int(getattr(model, "classes", 1)) == 1 and data.dtype != np.uint8:
        data = (data > 0).astype(np.uint8)  # instance ids are not numbered across blocks: foreground
    region = output_region(model, block, threshold)
    write(region, data.reshape(tuple(s.stop - s.start for s in region)))


def predict_blocks(
    model: Any,
    lazy: LazyImage,
    writer: OutputWriter,
    options: PredictOptions | None = None,
    threshold: float | str | None = None,
    *,
    block: int = BLOCK,
    halo: int | None = None,
    layout: Layout | None = None,
    first: tuple[int, int, int, int] | None = None,
) -> Generator[Event, None, BlockResult]:
    """Predict ``lazy`` block by block into ``writer``; blocks already written are skipped.

    Parameters
    ----------
    model : ModelBundle or Ensemble
    lazy : LazyImage
        The input, read block by block.
    writer : OutputWriter
        Receives each block: ``(*stack, h, w)`` regions, ``(K, *stack, h, w)``
        for the probabilities of a K-class model.
    options : PredictOptions, optional
    threshold : float, "auto" or None
        As for :func:`napari_segloop.core.inference.files.output_for`
        (post-processing block by block).
    block : int
        Block edge in pixels (make it a multiple of the output's chunk).
    halo : int, optional
        Pixels read around each block; default: the tile overlap in pixels
        (at least the model's input multiple).
    layout : Layout, optional
        The input's axes; default from its shape and ``options.channel_axis``.
    first : (y0, y1, x0, x1), optional
        A region of the plane to predict first (what napari shows): the blocks
        are taken by their distance to its centre, those that overlap it first.
        Default: row by row.

    Yields
    ------
    Progress, Notice or BlockWritten
        Progress over the blocks; each notice once; each block once written.

    Returns
    -------
    BlockResult
    """
    opts = options or PredictOptions()
    if layout is None:
        layout = Layout.of(lazy.shape, model.in_channels, opts.channel_axis, opts.rgb)
    blocks = block_plan(model, layout, opts, block, halo)
    if first is not None:
        blocks = visible_first(blocks, first)
    n = len(blocks)
    seen: set[str] = set()

    def once(event: Any) -> Any:
        if isinstance(event, Notice):
            if event.text in seen:
                return None
            seen.add(event.text)
        return event

    prob_classes = int(getattr(model, "classes", 1)) > 1 and threshold is None
    if threshold == "auto" and layout.stack_shape and not prob_classes:
        yield Notice("Post-processing runs plane by plane and block by block on a chunked output.")
    first_model = model.members[0] if hasattr(model, "members") else model
    pp = getattr(first_model.settings, "postprocess", None)
    if threshold == "auto" and not prob_classes and getattr(pp, "instances", False):
        yield Notice("The model numbers objects, but a chunked output is written block by block: it holds "
                     "the foreground mask (1), not instance ids.")
    skipped = 0
    sample_stack: tuple[int, ...] | None = None
    sample = None
    text = ""
    yield Progress(0, 1000 * n, "starting")
    for k, b in enumerate(blocks):
        if writer.written(output_region(model, b, threshold)):
            skipped += 1
            yield Progress(1000 * (k + 1), 1000 * n, "already written")
            continue
        if b.stack != sample_stack:
            sample, text = read_sample(lazy, layout, b.stack, opts, model.in_channels)
            sample_stack = b.stack
            if (note := once(Notice(f"Normalisation statistics from {text}."))) is not None:
                yield note
        yield from relay(part_of(write_block(model, lazy, layout, b, opts, threshold, sample, writer.write),
                                 k, n, f"block {k + 1} of {n}"), once)
        yield BlockWritten(tuple((s.start, s.stop) for s in output_region(model, b, threshold)))
    if skipped:
        yield Notice(f"{skipped} of {n} block(s) were already written by an earlier run and were skipped.")
    return BlockResult(n, skipped, text)


def visible_first(blocks: list[Block], region: tuple[int, int, int, int]) -> list[Block]:
    """``blocks`` reordered: those overlapping ``region`` (y0, y1, x0, x1) first, then by distance.

    The order within a stack position follows the distance of each block's centre to the
    centre of ``region``; stack positions keep their order.
    """
    y0, y1, x0, x1 = region
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2

    def key(b: Block) -> tuple[tuple[int, ...], bool, float]:
        outside = b.y1 <= y0 or b.y0 >= y1 or b.x1 <= x0 or b.x0 >= x1
        return b.stack, outside, ((b.y0 + b.y1) / 2 - cy) ** 2 + ((b.x0 + b.x1) / 2 - cx) ** 2

    return sorted(blocks, key=key)


def job_blocks(model: Any, job: Any) -> tuple[list[Block], list[Block]]:
    """The blocks of a :class:`~napari_segloop.core.inference.chunked_files.ZarrJob`, and those of
    them not written yet."""
    blocks = block_plan(model, job.layout, job.options, job.block, job.halo)
    todo = [b for b in blocks if not job.output.written(output_region(model, b, job.threshold))]
    return blocks, todo


class ArrayWriter:
    """An :class:`OutputWriter` into an array (NumPy, or zarr for a zarr-backed napari layer).

    Remembers the regions it wrote, so that a job restarted on the same
    writer (the visible region first, then the rest) skips them.
    """

    def __init__(self, array: Any) -> None:
        self.array = array
        self._done: set[tuple[tuple[int | None, int | None], ...]] = set()

    @staticmethod
    def _key(region: tuple[slice, ...]) -> tuple[tuple[int | None, int | None], ...]:
        return tuple((s.start, s.stop) for s in region)

    def written(self, region: tuple[slice, ...]) -> bool:
        """True when this writer wrote ``region`` already."""
        return self._key(region) in self._done

    def write(self, region: tuple[slice, ...], data: np.ndarray) -> None:
        """Write ``data`` into ``region``."""
        self.array[region] = data
        self._done.add(self._key(region))
