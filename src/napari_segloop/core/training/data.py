"""The annotated planes of a training run, a held-out validation part, and augmented patches.

:class:`TrainingData` holds, for every annotated 2-D plane of every image:
the image normalised exactly as inference normalises it (the bundle's
normalisation, per slice), the target and weight from
:mod:`~napari_segloop.core.training.annotations`, the starting model's
probabilities (for the keep term), and which pixels are held out.

Validation split
    Annotations are split by *blocks* of :data:`VAL_BLOCK` pixels, not by
    pixels: neighbouring pixels of one stroke are nearly identical, and a
    pixel split would validate on what it trains on. Each annotated block goes
    to validation with probability ``val_fraction``, decided by a hash of the
    seed and the block's position, so a block keeps its side when the user
    paints more (a refresh never moves training pixels into validation). With
    fewer than two annotated blocks nothing can be held out; validation then
    uses the training annotations and says so. Pairs marked ``validation``
    replace the split: all of their annotations are held out, none of the others.

Patches
    Centres are drawn from the annotated training pixels, half foreground and
    half background, plus a share of random positions; each patch is flipped,
    rotated by a multiple of 90 degrees, slightly rescaled and changed in
    intensity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_segloop.core.bundle.settings import Normalization
from napari_segloop.core.errors import InputError
from napari_segloop.core.inference.normalize import PreparedInput, normalize_slice, prepare_input
from napari_segloop.core.training.annotations import (
    PlaneTarget,
    annotated_planes,
    check_labels,
    class_counts,
    plane_target,
)

__all__ = ["VAL_BLOCK", "Batch", "BatchPrefetcher", "Plane", "TrainingData", "TrainingPair", "ValWindow"]

#: Edge of the blocks annotations are split by, in pixels.
VAL_BLOCK = 64
#: Context added around a validation block on each side.
VAL_MARGIN = 32
#: At most this many validation blocks are scored (a fixed subset beyond it).
MAX_VAL_BLOCKS = 96
#: Share of patches centred anywhere in an annotated plane rather than on an annotation.
RANDOM_CENTRES = 0.2
#: Centre candidates kept per class and plane (a regular subsample beyond).
MAX_CANDIDATES = 200_000


@dataclass
class TrainingPair:
    """One image and its painted labels.

    Attributes
    ----------
    image : array-like
        The image (2-D, RGB, multichannel or a stack), as for prediction.
    labels : array-like
        Labels of the image's shape without its channel axis.
    name : str
        Shown in messages and recorded in the bundle.
    rgb : bool, optional
        napari's ``layer.rgb``.
    reference : array-like, optional
        Mode ``correction``: the mask before the user's edits. Without it the
        starting model's own mask (``probability > threshold``) is used.
    validation : bool
        Only for validation: all of this pair's annotations are held out, and
        then no annotation of the other pairs is.
    """

    image: Any
    labels: Any
    name: str = "image"
    rgb: bool | None = None
    reference: Any = None
    validation: bool = False


@dataclass
class Plane:
    """One annotated plane, ready to sample from (all arrays at training scale)."""

    pair: int
    index: tuple[int, ...]
    image: np.ndarray  # (C, H, W) float32, normalised
    teacher: np.ndarray | None  # (1 or K, H, W) float32 starting model probabilities
    target: np.ndarray  # (H, W) float32
    weight: np.ndarray  # (H, W) float32, validation pixels set to 0
    keep: np.ndarray  # (H, W) float32, 1 where the keep term applies
    val: np.ndarray  # (H, W) bool, held-out annotated pixels
    fg: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    bg: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


@dataclass
class ValWindow:
    """A validation block with context: ``plane``'s window ``(y, x, size)`` scores pixels ``mask``."""

    plane: int
    y: int
    x: int
    mask: np.ndarray  # (size, size) bool: the block's held-out pixels inside the window


@dataclass
class Batch:
    """Arrays of one training batch, ``(N, C, S, S)`` for the image and ``(N, 1, S, S)`` else."""

    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    teacher: np.ndarray | None
    keep: np.ndarray | None


def _block_hash(seed: int, pair: int, index: tuple[int, ...], by: int, bx: int) -> float:
    key = f"{seed}/{pair}/{index}/{by}/{bx}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") / 2.0**64


class TrainingData:
    """The annotated planes of a run.

    Parameters
    ----------
    pairs : list of TrainingPair
        Images and labels.
    mode : {"scribbles", "dense", "correction"}
        How the labels are read.
    in_channels : int
        Channels the model expects.
    normalization : Normalization
        The bundle's normalisation.
    teacher : callable, optional
        ``teacher(pair_index, stack_index) -> (H, W)`` probabilities of the
        starting model (``(K, H, W)`` with K classes), at the image's
        resolution; None when training from scratch.
    threshold : float
        The starting model's threshold (its mask is the correction reference).
    scale : float
        Resize factor of the model (images and labels are resized by it).
    val_fraction : float
        Share of annotated blocks held out.
    seed : int
        Seed of the split.
    input_options : dict
        ``channel_axis``, ``convert``, ``channel`` as for prediction.
    changed_weight : float
        Weight of corrected pixels (mode ``correction``).
    max_val_blocks : int
        At most this many validation blocks are scored (a fixed random subset beyond).
    classes : int
        K, classes with background (2: binary). With K >= 3 targets hold class
        indices and the labels follow the K-class convention of
        :mod:`~napari_segloop.core.training.annotations`.
    """

    def __init__(
        self,
        pairs: list[TrainingPair],
        mode: str,
        in_channels: int,
        normalization: Normalization,
        teacher: Callable[[int, tuple[int, ...]], np.ndarray] | None = None,
        threshold: float = 0.5,
        scale: float = 1.0,
        val_fraction: float = 0.2,
        seed: int = 0,
        input_options: dict[str, Any] | None = None,
        changed_weight: float = 5.0,
        max_val_blocks: int = MAX_VAL_BLOCKS,
        classes: int = 2,
    ) -> None:
        if not pairs:
            raise InputError("Training needs at least one image with painted labels.")
        if all(p.validation for p in pairs):
            raise InputError("Training needs at least one image that is not only for validation.")
        self.pairs = pairs
        self.mode = mode
        self.normalization = normalization
        self.teacher_fn = teacher
        self.threshold = float(threshold)
        self.scale = float(scale)
        self.val_fraction = float(val_fraction)
        self.seed = int(seed)
        self.changed_weight = float(changed_weight)
        self.max_val_blocks = max(1, int(max_val_blocks))
        self.classes = max(2, int(classes))
        #: Annotated pixels per class index (0 = background), set by :meth:`build`.
        self.class_counts = np.zeros(self.classes, np.int64)
        #: Problems of the last split (a class painted only in held-out blocks), said by the trainer.
        self.split_warnings: list[str] = []
        self.notes: list[str] = []
        opts = input_options or {}
        self.prepared: list[PreparedInput] = []
        for pair in pairs:
            prep = prepare_input(pair.image, in_channels, opts.get("channel_axis", "auto"), pair.rgb,
                                 opts.get("convert", "none"), opts.get("channel"))
            self.prepared.append(prep)
            labels = np.asarray(pair.labels)
            if labels.shape != prep.output_shape:
                raise InputError(
                    f"The labels of {pair.name!r} have shape {labels.shape}, but the image's planes "
                    f"are {prep.output_shape}: paint the labels on a layer of the image's shape."
                )
            check_labels(labels, mode, f"labels of {pair.name!r}", self.classes)
            self.notes.extend(f"{pair.name}: {n}" if len(pairs) > 1 else n for n in prep.notes)
        self.planes: list[Plane] = []
        self._cache: dict[tuple[int, tuple[int, ...]], tuple[np.ndarray, np.ndarray | None]] = {}
        self.held_out = True
        self.labels_version = 0

    # -- building --------------------------------------------------------------
    def _image_and_teacher(self, pair: int, index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray | None]:
        key = (pair, index)
        if key not in self._cache:
            chw = self.prepared[pair].slice_chw(index)
            image, _ = normalize_slice(np.asarray(chw), self.normalization)
            teacher = None
            if self.teacher_fn is not None:
                teacher = np.asarray(self.teacher_fn(pair, index), dtype=np.float32)
                if teacher.ndim == 2:
                    teacher = teacher[None]
            if self.scale != 1.0:
                image = _zoom_chw(image, self.scale, order=1)
                if teacher is not None:
                    teacher = np.clip(_zoom_chw(teacher, self.scale, order=1), 0, 1)
            self._cache[key] = (image, teacher)
        return self._cache[key]

    def pending_planes(self, labels: list[np.ndarray] | None = None) -> list[tuple[int, tuple[int, ...]]]:
        """Annotated planes whose image and starting prediction are not prepared yet."""
        labels = labels if labels is not None else [np.asarray(p.labels) for p in self.pairs]
        return [(i, idx) for i, lab in enumerate(labels)
                for idx in annotated_planes(lab, self.mode, self.classes) if (i, idx) not in self._cache]

    def prepare_plane(self, pair: int, index: tuple[int, ...]) -> None:
        """Normalise one plane and predict it with the starting model (the slow part of a build)."""
        self._image_and_teacher(pair, index)

    def build(self, labels: list[np.ndarray] | None = None) -> None:
        """(Re)build the planes from ``labels`` (the pairs' labels by default).

        Raises
        ------
        InputError
            No annotated pixel at all, or only one class.
        """
        labels = labels if labels is not None else [np.asarray(p.labels) for p in self.pairs]
        for i, lab in enumerate(labels):
            if lab.shape != self.prepared[i].output_shape:
                raise InputError(
                    f"The labels of {self.pairs[i].name!r} changed shape to {lab.shape}; "
                    f"they must stay {self.prepared[i].output_shape}."
                )
            check_labels(lab, self.mode, f"labels of {self.pairs[i].name!r}", self.classes)
        targets: list[tuple[int, tuple[int, ...], PlaneTarget]] = []
        n_fg = n_bg = 0
        counts = np.zeros(self.classes, np.int64)
        for i, lab in enumerate(labels):
            for index in annotated_planes(lab, self.mode, self.classes):
                image, _ = self._image_and_teacher(i, index)
                ref = None
                if self.mode == "correction":
                    ref_src = self.pairs[i].reference
                    if ref_src is not None:
                        ref = np.asarray(ref_src[index] if index else ref_src)
                        ref = ref if self.classes > 2 else ref != 0
                    elif self.teacher_fn is not None:
                        start = np.asarray(self.teacher_fn(i, index))
                        ref = np.argmax(start, axis=0) if self.classes > 2 else start > self.threshold
                plane = lab[index] if index else lab
                tgt = plane_target(plane, self.mode, ref, self.changed_weight, self.classes)
                counts += class_counts(tgt.target, tgt.weight, self.classes)
                if self.scale != 1.0:
                    h, w = image.shape[1:]
                    tgt = PlaneTarget(_fit(_zoom_chw(tgt.target[None], self.scale, 0)[0], h, w),
                                      _fit(_zoom_chw(tgt.weight[None], self.scale, 0)[0], h, w),
                                      tgt.n_foreground, tgt.n_background)
                targets.append((i, index, tgt))
                n_fg += tgt.n_foreground
                n_bg += tgt.n_background
        if not targets:
            k = self.classes
            what = ("no painted foreground" if self.mode != "scribbles" else
                    "no scribbles (paint 1 = foreground and 2 = background)" if k <= 2 else
                    f"no scribbles (paint 1 to {k - 1} for the classes and {k} for background)")
            raise InputError(f"The labels have {what}; paint some labels before training.")
        if self.classes > 2 and (counts == 0).any():
            missing = [str(c) for c in range(1, self.classes) if counts[c] == 0]
            what = (f"class {', '.join(missing)}" if missing else
                    f"background ({self.classes if self.mode == 'scribbles' else 0})")
            raise InputError(f"The labels have no pixel of {what}: paint every class at least "
                             "once, so the model learns the difference.")
        if n_fg == 0 or n_bg == 0:
            scribbles = self.mode == "scribbles"
            missing = "foreground (1)" if n_fg == 0 else "background" + (" (2)" if scribbles else "")
            raise InputError(
                f"The labels have only one class: paint some {missing} too, so the model "
                "learns the difference."
            )
        self.n_foreground, self.n_background = n_fg, n_bg
        self.class_counts = counts
        self._split(targets)
        self.labels_version += 1

    def _split(self, targets: list[tuple[int, tuple[int, ...], PlaneTarget]]) -> None:
        blocks: list[tuple[float, int, int, int]] = []  # (hash, plane, by, bx)
        kinds: dict[tuple[int, int, int], tuple[bool, bool]] = {}  # block -> (has fg, has bg)
        for p, (i, index, tgt) in enumerate(targets):
            ann = tgt.annotated
            h, w = ann.shape
            nby, nbx = -(-h // VAL_BLOCK), -(-w // VAL_BLOCK)

            def per_block(mask: np.ndarray, nby: int = nby, nbx: int = nbx) -> np.ndarray:
                pad = np.zeros((nby * VAL_BLOCK, nbx * VAL_BLOCK), bool)
                pad[:mask.shape[0], :mask.shape[1]] = mask
                return pad.reshape(nby, VAL_BLOCK, nbx, VAL_BLOCK).any(axis=(1, 3))

            has = per_block(ann)
            has_fg = per_block(ann & (tgt.target > 0.5))
            has_bg = per_block(ann & (tgt.target <= 0.5))
            for by, bx in zip(*np.nonzero(has), strict=True):
                blocks.append((_block_hash(self.seed, i, index, int(by), int(bx)), p, int(by), int(bx)))
                kinds[(p, int(by), int(bx))] = (bool(has_fg[by, bx]), bool(has_bg[by, bx]))
        chosen: set[tuple[int, int, int]] = set()
        explicit = {p for p, (i, _, _) in enumerate(targets) if self.pairs[i].validation}
        if any(self.pairs[i].validation for i in range(len(self.pairs))):
            chosen = {(p, by, bx) for _, p, by, bx in blocks if p in explicit}
            if not chosen or not any(p not in explicit for _, p, _, _ in blocks):
                raise InputError("Both the training and the validation images need painted labels.")
        elif len(blocks) >= 2:
            chosen = {(p, by, bx) for u, p, by, bx in blocks if u < self.val_fraction}
            if not chosen:
                _, p, by, bx = min(blocks)
                chosen = {(p, by, bx)}
            if len(chosen) == len(blocks):
                _, p, by, bx = max(blocks)
                chosen.discard((p, by, bx))
            chosen = _both_classes(chosen, sorted(blocks), kinds)
        self.held_out = bool(chosen)
        planes: list[Plane] = []
        windows: list[ValWindow] = []
        for p, (i, index, tgt) in enumerate(targets):
            image, teacher = self._image_and_teacher(i, index)
            h, w = tgt.target.shape
            val = np.zeros((h, w), bool)
            mine = sorted((by, bx) for (q, by, bx) in chosen if q == p)
            for by, bx in mine:
                sl = (slice(by * VAL_BLOCK, (by + 1) * VAL_BLOCK),
                      slice(bx * VAL_BLOCK, (bx + 1) * VAL_BLOCK))
                val[sl] = tgt.annotated[sl]
            weight = np.where(val, 0.0, tgt.weight).astype(np.float32)
            keep = ((tgt.weight == 0) & ~val).astype(np.float32) if teacher is not None \
                else np.zeros((h, w), np.float32)
            plane = Plane(i, index, image, teacher, tgt.target, weight, keep, val)
            fg = np.flatnonzero((weight > 0) & (tgt.target > 0.5))
            bg = np.flatnonzero((weight > 0) & (tgt.target <= 0.5))
            plane.fg = fg[:: max(1, len(fg) // MAX_CANDIDATES)]
            plane.bg = bg[:: max(1, len(bg) // MAX_CANDIDATES)]
            planes.append(plane)
            for by, bx in mine:
                windows.append(self._window(p, h, w, by, bx, val))
        if not self.held_out:
            # Nothing held out: validate on the training annotations (said once by the trainer).
            for p, plane in enumerate(planes):
                ann = plane.weight > 0
                nby, nbx = -(-ann.shape[0] // VAL_BLOCK), -(-ann.shape[1] // VAL_BLOCK)
                for by in range(nby):
                    for bx in range(nbx):
                        sl = (slice(by * VAL_BLOCK, (by + 1) * VAL_BLOCK),
                              slice(bx * VAL_BLOCK, (bx + 1) * VAL_BLOCK))
                        if ann[sl].any():
                            windows.append(self._window(p, *ann.shape, by, bx, ann))
        if len(windows) > self.max_val_blocks:
            rng = np.random.default_rng([self.seed, 7])
            keep_idx = np.sort(rng.choice(len(windows), self.max_val_blocks, replace=False))
            windows = [windows[k] for k in keep_idx]
        self.planes, self.windows = planes, windows
        self.train_planes = [k for k, pl in enumerate(planes) if len(pl.fg) + len(pl.bg) > 0]
        self.split_warnings = []
        if self.classes > 2:
            trained = np.zeros(self.classes, np.int64)
            for pl in planes:
                trained += class_counts(pl.target, pl.weight, self.classes)
            missing = [str(c) for c in range(1, self.classes) if trained[c] == 0]
            if missing:
                self.split_warnings.append(
                    f"Class {', '.join(missing)} is painted only where the labels are held out for "
                    "validation, so the model cannot learn it: paint it in more places.")

    @staticmethod
    def _window(p: int, h: int, w: int, by: int, bx: int, scored: np.ndarray) -> ValWindow:
        size = VAL_BLOCK + 2 * VAL_MARGIN
        y = min(max(0, by * VAL_BLOCK - VAL_MARGIN), max(0, h - size))
        x = min(max(0, bx * VAL_BLOCK - VAL_MARGIN), max(0, w - size))
        mask = np.zeros((size, size), bool)
        y0, x0 = by * VAL_BLOCK, bx * VAL_BLOCK
        y1, x1 = min(h, y0 + VAL_BLOCK), min(w, x0 + VAL_BLOCK)
        mask[y0 - y:y1 - y, x0 - x:x1 - x] = scored[y0:y1, x0:x1]
        return ValWindow(p, y, x, mask)

    # -- reading -----------------------------------------------------------------
    @property
    def has_teacher(self) -> bool:
        """True when the keep term has starting-model probabilities to work with."""
        return self.teacher_fn is not None

    def window_arrays(self, win: ValWindow) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image ``(C, S, S)``, target and scored mask ``(S, S)`` of a validation window (padded)."""
        plane = self.planes[win.plane]
        size = win.mask.shape[0]
        img = _crop(plane.image, win.y, win.x, size)
        tgt = _crop(plane.target[None], win.y, win.x, size)[0]
        return img, tgt, win.mask

    def sample(self, rng: np.random.Generator, batch: int, crop: int, augment: bool = True,
               clip: tuple[float, float] | None = None,
               zoom_range: tuple[float, float] = (0.8, 1.25),
               gamma_range: tuple[float, float] = (0.7, 1.4)) -> Batch:
        """Draw ``batch`` augmented patches of ``crop`` pixels.

        With ``augment``, half of the patches are rescaled by a factor drawn
        log-uniformly from ``zoom_range``, half get a gamma from ``gamma_range``
        and half a contrast and brightness change; all are rotated and flipped.
        """
        c = self.planes[0].image.shape[0]
        x = np.empty((batch, c, crop, crop), np.float32)
        y = np.empty((batch, 1, crop, crop), np.float32)
        wt = np.empty((batch, 1, crop, crop), np.float32)
        t_ch = self.planes[0].teacher.shape[0] if self.planes[0].teacher is not None else 1
        teach = np.empty((batch, t_ch, crop, crop), np.float32) if self.has_teacher else None
        keep = np.empty((batch, 1, crop, crop), np.float32) if self.has_teacher else None
        for b in range(batch):
            plane = self.planes[self.train_planes[int(rng.integers(len(self.train_planes)))]]
            h, w = plane.target.shape
            zoom = 1.0
            if augment and rng.random() < 0.5:
                zoom = float(np.exp(rng.uniform(np.log(zoom_range[0]), np.log(zoom_range[1]))))
            region = max(8, round(crop / zoom))
            u = rng.random()
            pool = plane.fg if (u < (1 - RANDOM_CENTRES) / 2 and len(plane.fg)) else plane.bg
            if u >= 1 - RANDOM_CENTRES or not len(pool):
                pool = plane.fg if len(plane.fg) else plane.bg
            if u >= 1 - RANDOM_CENTRES:
                cy, cx = int(rng.integers(h)), int(rng.integers(w))
            else:
                flat = int(pool[int(rng.integers(len(pool)))])
                cy, cx = divmod(flat, w)
            y0 = cy - region // 2 + int(rng.integers(-region // 4, region // 4 + 1))
            x0 = cx - region // 2 + int(rng.integers(-region // 4, region // 4 + 1))
            arrays = [plane.image, plane.target[None], plane.weight[None]]
            if teach is not None:
                arrays += [plane.teacher, plane.keep[None]]
            crops = [_crop(a, y0, x0, region) for a in arrays]
            if region != crop:
                f = crop / region
                # Image and teacher interpolated; target, weight and keep nearest-neighbour.
                crops = [_fit3(_zoom_chw(a, f, order=1 if k in (0, 3) else 0), crop)
                         for k, a in enumerate(crops)]
            if augment:
                k = int(rng.integers(4))
                flip = rng.random() < 0.5
                crops = [np.rot90(a, k, axes=(1, 2)) for a in crops]
                if flip:
                    crops = [a[:, :, ::-1] for a in crops]
                img = crops[0]
                if rng.random() < 0.5:
                    gamma = float(np.exp(rng.uniform(np.log(gamma_range[0]), np.log(gamma_range[1]))))
                    img = np.sign(img) * np.abs(img) ** gamma
                if rng.random() < 0.5:
                    img = img * rng.uniform(0.85, 1.15) + rng.uniform(-0.08, 0.08)
                if clip is not None:
                    img = np.clip(img, *clip)
                crops[0] = img
            x[b], y[b], wt[b] = crops[0], crops[1], crops[2]
            if teach is not None:
                teach[b], keep[b] = crops[3], crops[4]
        return Batch(x, y, wt, teach, keep)


class BatchPrefetcher:
    """Draws the next batch in a background thread while the current step computes.

    Patch sampling (numpy and scipy) then overlaps the forward and backward
    pass (torch releases the GIL in its kernels), as a DataLoader worker would,
    without a process. Batches come in the order they are drawn, so a seeded
    run gives the same batches with or without it.

    Parameters
    ----------
    draw : callable
        Returns one :class:`Batch` (e.g. ``lambda: data.sample(rng, ...)``).
    """

    def __init__(self, draw: Callable[[], Batch]) -> None:
        self._draw = draw
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segloop-batches")
        self._next: Future[Batch] | None = None

    def get(self) -> Batch:
        """The next batch (drawn now if none is ready); starts drawing the one after."""
        batch = self._next.result() if self._next is not None else self._draw()
        self._next = self._pool.submit(self._draw)
        return batch

    def discard(self) -> None:
        """Drop the batch being drawn, after it is done: call before the data change."""
        if self._next is not None:
            if not self._next.cancel():
                self._next.exception()  # waits; an error of a discarded batch is not raised
            self._next = None

    def close(self) -> None:
        """Discard, and stop the thread."""
        self.discard()
        self._pool.shutdown(wait=True)


def _both_classes(chosen: set[tuple[int, int, int]], blocks: list[tuple[float, int, int, int]],
                  kinds: dict[tuple[int, int, int], tuple[bool, bool]]) -> set[tuple[int, int, int]]:
    """Held-out blocks with both classes, training blocks too; else nothing held out.

    With one class only, the held-out Dice is 1.0 for a model that predicts that class
    everywhere (or nothing): the starting model would look perfect and never be beaten.
    """
    def classes(keys: set[tuple[int, int, int]]) -> tuple[bool, bool]:
        return any(kinds[k][0] for k in keys), any(kinds[k][1] for k in keys)

    chosen = set(chosen)
    for c in (0, 1):
        if classes(chosen)[c]:
            continue
        for _, p, by, bx in blocks:  # in hash order: the same choice every time
            key = (p, by, bx)
            rest = set(kinds) - chosen - {key}
            if key not in chosen and kinds[key][c] and all(classes(rest)):
                chosen.add(key)
                break
    return chosen if all(classes(chosen)) and all(classes(set(kinds) - chosen)) else set()


def _crop(a: np.ndarray, y0: int, x0: int, size: int) -> np.ndarray:
    """``a[:, y0:y0+size, x0:x0+size]`` with reflected padding where it leaves the plane."""
    _, h, w = a.shape
    ys = np.arange(y0, y0 + size)
    xs = np.arange(x0, x0 + size)
    ys = _reflect(ys, h)
    xs = _reflect(xs, w)
    return a[:, ys[:, None], xs[None, :]]


def _reflect(i: np.ndarray, n: int) -> np.ndarray:
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def _zoom_chw(a: np.ndarray, factor: float, order: int) -> np.ndarray:
    return np.stack([ndi.zoom(ch, factor, order=order, grid_mode=True, mode="grid-mirror") for ch in a])


def _fit(a: np.ndarray, h: int, w: int) -> np.ndarray:
    a = a[:h, :w]
    if a.shape != (h, w):
        a = np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1])), mode="edge")
    return a


def _fit3(a: np.ndarray, n: int) -> np.ndarray:
    return np.stack([_fit(ch, n, n) for ch in a])
