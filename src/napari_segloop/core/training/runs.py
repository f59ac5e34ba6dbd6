"""Saving what a training run used and made: the bundle with its labels, versioned names.

A trained bundle carries a ``training/`` folder: ``annotations.json`` (mode,
names, shapes) and one ``pair_NNN.npz`` per image with its ``labels`` (and the
``image`` itself when the images are small enough, so that "Continue training"
works from the bundle alone). It is written inside the bundle's atomic save:
the bundle and its labels appear together or not at all.

:func:`save_annotations` writes the same folder on its own, atomically; the
Fine-tune dock calls it when a run *starts*, so a crash or a closed napari
never loses the painting.

Reading is as strict as for the rest of a bundle: regular files inside the
folder, strict JSON, arrays without pickles, sizes checked before they are
decompressed.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.bundle.folder import save_bundle
from napari_segloop.core.bundle.jsonfile import check_regular_file, read_json_object
from napari_segloop.core.errors import InputError, ModelLoadError
from napari_segloop.core.io.atomic import atomic_folder
from napari_segloop.core.io.limits import max_image_bytes
from napari_segloop.core.text import printable
from napari_segloop.core.training.annotations import MODES

__all__ = [
    "ANNOTATIONS_FILE",
    "TRAINING_FOLDER",
    "SavedAnnotation",
    "SavedRun",
    "next_version_path",
    "partial_path",
    "read_annotations",
    "save_annotations",
    "save_run",
    "train_to_folder",
    "write_annotations",
]

TRAINING_FOLDER = "training"
#: Suffix of the checkpoint folder of a run in progress.
PARTIAL_SUFFIX = ".partial"
#: A run rewrites its checkpoint at most this often.
CHECKPOINT_SECONDS = 30.0
ANNOTATIONS_FILE = "annotations.json"
#: Images are stored with their labels while all of them together are at most this large.
MAX_STORED_IMAGES = 256_000_000
_FORMAT = 1
_MAX_ITEMS = 1000


@dataclass
class SavedAnnotation:
    """One image's labels as stored with a bundle.

    Attributes
    ----------
    name : str
        The image's name when it was trained on (printable).
    labels : numpy.ndarray
        The labels.
    image : numpy.ndarray or None
        The image, when it was stored.
    rgb : bool or None
        napari's ``layer.rgb`` of the image.
    """

    name: str
    labels: np.ndarray
    image: np.ndarray | None
    rgb: bool | None = None


def write_annotations(
    folder: str | os.PathLike,
    names: Sequence[str],
    labels: Sequence[np.ndarray],
    mode: str,
    images: Sequence[Any] | None = None,
    rgb: Sequence[bool | None] | None = None,
) -> Path:
    """Write ``folder/training/`` (not atomic by itself: use it on a temporary folder).

    Images are stored too when ``images`` is given and all of them together
    take at most :data:`MAX_STORED_IMAGES` bytes.
    """
    out = Path(folder) / TRAINING_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    store = images is not None and sum(np.asarray(im).nbytes for im in images) <= MAX_STORED_IMAGES
    items = []
    for k, lab in enumerate(labels):
        arrays: dict[str, np.ndarray] = {"labels": np.ascontiguousarray(lab)}
        if store and images is not None:
            arrays["image"] = np.ascontiguousarray(np.asarray(images[k]))
        name = f"pair_{k:03d}.npz"
        with open(out / name, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        items.append({"name": str(names[k]), "file": name, "shape": list(np.shape(lab)),
                      "dtype": np.asarray(lab).dtype.str, "image": "image" in arrays,
                      "rgb": None if rgb is None else rgb[k]})
    import json

    with open(out / ANNOTATIONS_FILE, "w", encoding="utf-8") as fh:
        json.dump({"format": _FORMAT, "mode": mode, "items": items}, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    return out


def save_annotations(
    folder: str | os.PathLike,
    names: Sequence[str],
    labels: Sequence[np.ndarray],
    mode: str,
    images: Sequence[Any] | None = None,
    rgb: Sequence[bool | None] | None = None,
) -> Path:
    """Write an annotations folder atomically (replacing an older one of the same run).

    The result is a folder holding ``training/`` exactly as in a bundle, so
    :func:`read_annotations` reads both.
    """
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with atomic_folder(folder) as tmp:
            write_annotations(tmp, names, labels, mode, images, rgb)
    except OSError as exc:
        raise ModelLoadError(f"Could not save the labels to {folder}: {exc.strerror or exc}") from exc
    return folder


def save_run(
    result: Any,
    folder: str | os.PathLike,
    names: Sequence[str],
    mode: str,
    images: Sequence[Any] | None = None,
    rgb: Sequence[bool | None] | None = None,
    *,
    overwrite: bool = False,
    dtype: str = "float32",
) -> Path:
    """Save a :class:`~napari_segloop.core.training.trainer.TrainResult` as a bundle with its labels.

    Raises
    ------
    BundleExistsError
        If ``folder`` exists and ``overwrite`` is False.
    ModelLoadError
        If it cannot be written (the previous bundle, if any, is intact).
    """
    path = save_bundle(
        result.bundle, folder, dtype, overwrite=overwrite,
        extra=lambda tmp: write_annotations(tmp, names, result.labels, mode, images, rgb),
    )
    result.bundle.source = str(path)
    return path


def _npz_member_size(path: Path, member: str) -> int:
    with zipfile.ZipFile(path) as zf:
        try:
            return int(zf.getinfo(member + ".npy").file_size)
        except KeyError:
            return -1


def read_annotations(folder: str | os.PathLike) -> tuple[str, list[SavedAnnotation]]:
    """Read the labels stored with a bundle (or by :func:`save_annotations`).

    Returns
    -------
    mode : str
        The annotation mode of the run.
    items : list of SavedAnnotation

    Raises
    ------
    InputError
        The folder has no stored labels.
    ModelLoadError
        A stored file is missing, unsafe or malformed.
    """
    root = Path(folder) / TRAINING_FOLDER
    index = root / ANNOTATIONS_FILE
    if not index.exists():
        raise InputError(f"{printable(folder)} has no stored training labels (no "
                         f"{TRAINING_FOLDER}/{ANNOTATIONS_FILE}).")
    data = read_json_object(index, 4_000_000, "annotations index")
    mode = data.get("mode")
    items = data.get("items")
    if mode not in MODES or not isinstance(items, list) or not 0 < len(items) <= _MAX_ITEMS:
        raise ModelLoadError(f"{printable(index)}: not a segloop annotations index.")
    limit = max_image_bytes()
    out: list[SavedAnnotation] = []
    for item in items:
        if not isinstance(item, dict):
            raise ModelLoadError(f"{printable(index)}: an entry is not an object.")
        name = item.get("file")
        if not isinstance(name, str) or not re.fullmatch(r"pair_\d{3}\.npz", name):
            raise ModelLoadError(f"{printable(index)}: unexpected file name {printable(name)}.")
        path = root / name
        check_regular_file(path, "labels file")
        arrays: dict[str, np.ndarray] = {}
        try:
            for key in ("labels", "image"):
                size = _npz_member_size(path, key)
                if size < 0:
                    continue
                if limit is not None and size > limit:
                    raise ModelLoadError(f"{printable(path)}: the stored {key} is {size / 1e9:.1f} GB, "
                                         "more than the image size limit; refused.")
                with np.load(path, allow_pickle=False) as npz:
                    arrays[key] = npz[key]
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(
                f"{printable(path)}: not a readable labels file ({printable(exc)})."
            ) from exc
        labels = arrays.get("labels")
        if labels is None or labels.dtype.kind not in "biu":
            raise ModelLoadError(f"{printable(path)}: holds no integer labels.")
        image = arrays.get("image")
        rgb = item.get("rgb")
        out.append(SavedAnnotation(printable(item.get("name", name), 200), labels, image,
                                   rgb if isinstance(rgb, bool) else None))
    return str(mode), out


def next_version_path(parent: str | os.PathLike, base: str) -> Path:
    """The first free ``parent/base-vNNN`` (never an existing folder: nothing is overwritten).

    The checkpoint of an interrupted run (``base-vNNN.partial``) takes its number too.
    """
    parent = Path(parent)
    stem = re.sub(r"-v\d{3,}$", "", re.sub(r"[^\w.+-]+", "_", base).strip("._")) or "model"
    n = 1
    if parent.is_dir():
        taken = [int(m.group(1)) for p in parent.iterdir()
                 if (m := re.fullmatch(re.escape(stem) + r"-v(\d{3,})(?:\.partial)?", p.name))]
        n = max(taken, default=0) + 1
    return parent / f"{stem}-v{n:03d}"


def partial_path(folder: str | os.PathLike) -> Path:
    """Where a run writes its checkpoint (best weights so far and the labels) while it runs."""
    folder = Path(folder)
    return folder.with_name(folder.name + PARTIAL_SUFFIX)


@dataclass
class SavedRun:
    """What :func:`train_to_folder` returns: the run's result and where it was saved."""

    result: Any
    path: Path


def train_to_folder(
    start: Any,
    pairs: Sequence[Any],
    config: Any,
    folder: str | os.PathLike,
    control: Any = None,
    *,
    overwrite: bool = False,
    store_images: bool = True,
    checkpoint_seconds: float = CHECKPOINT_SECONDS,
    dtype: str = "float32",
) -> Generator[Any, None, SavedRun]:
    """Train and save, so that nothing is lost however the run ends.

    * Before the first step, ``<folder>.partial`` is written: a loadable bundle
      (the starting weights) with the labels, so a crash never loses the
      painting.
    * Each time the weights improve (at most every ``checkpoint_seconds``),
      the checkpoint is rewritten, atomically, with the best weights and the
      latest labels: a killed run keeps its last good weights.
    * At the end the new bundle is saved to ``folder`` (atomically, never over
      an existing folder unless ``overwrite``) and the checkpoint removed.

    Yields the trainer's events; returns a :class:`SavedRun`.

    Raises
    ------
    BundleExistsError
        Before any work, when ``folder`` exists and ``overwrite`` is False.
    """
    import copy
    import time

    from napari_segloop.core.bundle.model import ModelBundle
    from napari_segloop.core.errors import BundleExistsError
    from napari_segloop.core.events import Snapshot
    from napari_segloop.core.training.trainer import train

    folder = Path(folder)
    if folder.exists() and not overwrite:
        raise BundleExistsError(f"{folder} already exists; choose another name or allow overwriting.")
    names = [p.name for p in pairs]
    rgb = [p.rgb for p in pairs]
    images = [p.image for p in pairs] if store_images else None
    partial = partial_path(folder)
    ckpt = ModelBundle(model=copy.deepcopy(start.model).cpu().eval(),
                       settings=copy.deepcopy(start.settings), source=str(partial))
    ckpt.settings.provenance = {**(start.settings.provenance or {}),
                                "note": f"Checkpoint of an unfinished training run for {folder.name}.",
                                "parent": start.source}

    def checkpoint(labels: Sequence[np.ndarray]) -> None:
        save_bundle(ckpt, partial, overwrite=True,
                    extra=lambda tmp: write_annotations(tmp, names, labels, config.mode, images, rgb))

    def current_labels() -> list[np.ndarray]:
        return [np.array(p.labels, copy=True) for p in pairs]

    checkpoint(current_labels())
    last = time.perf_counter()
    pending: dict[str, Any] | None = None
    gen = train(start, list(pairs), config, control)
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            result = stop.value
            break
        if isinstance(event, Snapshot) and event.reason == "best" and event.step > 0:
            pending = event.state_dict
        if pending is not None and time.perf_counter() - last >= checkpoint_seconds:
            ckpt.model.load_state_dict(pending)
            pending = None
            labels = control.read_labels() if control is not None and control.read_labels else None
            checkpoint([np.array(a, copy=True) for a in labels] if labels else current_labels())
            last = time.perf_counter()
        yield event
    path = save_run(result, folder, names, config.mode, images, rgb, overwrite=overwrite, dtype=dtype)
    shutil.rmtree(partial, ignore_errors=True)
    return SavedRun(result, path)
