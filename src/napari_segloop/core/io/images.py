"""Reading and writing image files for the command line (TIFF, PNG, JPEG, BMP, NPY).

Writes are atomic: a temporary file in the destination folder is renamed into
place, so an interrupted run never leaves a truncated output behind.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.io.atomic import atomic_path

READ_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")
WRITE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")


def is_image_path(path: str | os.PathLike) -> bool:
    """True if ``path`` has a suffix that :func:`read_image` reads."""
    return Path(path).suffix.lower() in READ_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a numpy array.

    Raises
    ------
    InputError
        If the file is missing, of an unsupported type, or unreadable.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: file not found.")
    if p.is_dir():
        raise InputError(f"{p}: is a folder, not an image file.")
    suffix = p.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise InputError(
            f"{p}: unsupported file type {suffix or '(none)'}; use {', '.join(READ_SUFFIXES)}."
        )
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            data = tifffile.imread(str(p))
        elif suffix == ".npy":
            data = np.load(str(p), allow_pickle=False)
        else:
            import imageio.v3 as iio

            data = iio.imread(str(p))
    except Exception as exc:  # every reader has its own exception types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p}: cannot read the image ({reason}).") from exc
    data = np.asarray(data)
    if data.dtype.kind not in "biuf":
        raise InputError(f"{p}: pixel type {data.dtype} is not numeric.")
    return data


def _write(tmp: Path, suffix: str, data: np.ndarray, p: Path) -> None:
    """Write ``data`` in the format of ``suffix`` to ``tmp`` (``p`` names it in messages)."""
    if suffix in (".tif", ".tiff"):
        import tifffile

        # A (Z, H, W) stack of 3 or 4 slices must not become an RGB image (tifffile's
        # default): only channels-last RGB(A) data is written as RGB.
        rgb = data.ndim == 3 and data.shape[-1] in (3, 4)
        tifffile.imwrite(str(tmp), data, compression="zlib" if data.dtype != np.float32 else None,
                         photometric="rgb" if rgb else "minisblack")
    elif suffix == ".npy":
        with open(tmp, "wb") as fh:
            np.save(fh, data, allow_pickle=False)
    else:
        if data.ndim != 2 or data.dtype not in (np.uint8, np.uint16):
            raise InputError(f"{p}: PNG holds 2-D uint8/uint16 images only; use .tif.")
        import imageio.v3 as iio

        iio.imwrite(str(tmp), data, extension=".png")


def write_image(path: str | os.PathLike, data: np.ndarray) -> Path:
    """Write ``data`` to ``path`` atomically (TIFF, PNG for 2-D uint8/uint16, or NPY).

    Raises
    ------
    InputError
        If the folder does not exist or is not writable, or the type is unsupported.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in WRITE_SUFFIXES:
        raise InputError(f"{p}: cannot write {suffix or 'files without a suffix'}; use .tif or .npy.")
    if not p.parent.is_dir():
        raise InputError(f"{p}: the folder {p.parent} does not exist.")
    try:
        with atomic_path(p) as tmp:
            _write(tmp, suffix, data, p)
    except OSError as exc:
        raise InputError(f"{p}: cannot write ({exc.strerror or exc}).") from exc
    return p


def expand_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into a sorted list of image files.

    Files inside folders that are not images by suffix (or are hidden) are
    skipped and reported; a path given explicitly is kept as is so that its
    error is reported when it is read.

    Returns
    -------
    files : list of Path
    skipped : list of str
        Messages about skipped folder entries.
    """
    files: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            entries = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
            images = [q for q in entries if is_image_path(q)]
            for q in entries:
                if not is_image_path(q):
                    skipped.append(f"{q}: skipped (not an image file)")
            if not images:
                skipped.append(f"{p}: no image files in this folder")
            files.extend(images)
        else:
            files.append(p)
    return files, skipped
