"""Reading and writing image files for the command line (TIFF, PNG, JPEG, BMP, NPY).

Writes are atomic: a temporary file in the destination folder is renamed into
place, so an interrupted run never leaves a truncated output behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.io.atomic import atomic_path
from napari_segloop.core.io.guard import InputSpec, OutputKind, check_output
from napari_segloop.core.io.limits import ENV_VAR, OPTION, check_decoded_size

READ_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".npy")
WRITE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
#: What :func:`write_image` writes (for :mod:`napari_segloop.core.io.guard`).
IMAGE_OUTPUT = OutputKind("image", WRITE_SUFFIXES)
#: A float32 probability map: PNG holds integers only.
PROBABILITY_OUTPUT = OutputKind("probability map", (".tif", ".tiff", ".npy"))


def is_image_path(path: str | os.PathLike) -> bool:
    """True if ``path`` has a suffix that :func:`read_image` reads."""
    return Path(path).suffix.lower() in READ_SUFFIXES


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file into a numpy array.

    Before any pixel is decoded, the file must be a regular file (a FIFO or a
    device would block or never end) and its decoded size, from the header,
    must be within :func:`napari_segloop.core.io.limits.max_image_bytes`
    (a small compressed file can decode to gigabytes).

    Raises
    ------
    InputError
        If the file is missing, not a regular file, of an unsupported type,
        too large once decoded, or unreadable.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode  # stat, never open: opening a FIFO blocks until a writer comes
    except FileNotFoundError:
        raise InputError(f"{p}: file not found.") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read the image ({exc.strerror or exc}).") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{p}: is a folder, not an image file.")
    if not stat.S_ISREG(mode):
        raise InputError(f"{p}: is not a regular file (a {_file_kind(mode)}); give an image file.")
    suffix = p.suffix.lower()
    if suffix not in READ_SUFFIXES:
        raise InputError(
            f"{p}: unsupported file type {suffix or '(none)'}; use {', '.join(READ_SUFFIXES)}."
        )
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(str(p)) as tif:
                if not tif.series:
                    raise InputError(f"{p}: cannot read the image (no image data in this TIFF).")
                series = tif.series[0]
                shape, dtype = tuple(series.shape), series.dtype
            _check_numeric(p, dtype)
            check_decoded_size(p, shape, dtype)
            data = tifffile.imread(str(p))
        elif suffix == ".npy":
            shape, dtype = _npy_header(p)
            _check_numeric(p, dtype)
            check_decoded_size(p, shape, dtype)
            data = np.load(str(p), allow_pickle=False)
        else:
            with _pil_bomb_check_off():
                shape, dtype = _pil_header(p)
                check_decoded_size(p, shape, dtype)
                import imageio.v3 as iio

                data = iio.imread(str(p))
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{p}: not enough memory to decode this image.") from None
    except Exception as exc:  # every reader has its own exception types
        if type(exc).__name__ == "DecompressionBombError":  # PIL's own size limit
            raise InputError(
                f"{p}: the image is too large to decode safely ({_first_line(exc)}); raise the "
                f"limit with {OPTION} SIZE or {ENV_VAR}=SIZE (e.g. 20GB, or none)."
            ) from None
        raise InputError(f"{p}: cannot read the image ({_first_line(exc)}).") from exc
    data = np.asarray(data)
    _check_numeric(p, data.dtype)
    return data


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _check_numeric(p: Path, dtype: np.dtype) -> None:
    if np.dtype(dtype).kind not in "biuf":
        raise InputError(f"{p}: pixel type {dtype} is not numeric.")


def _file_kind(mode: int) -> str:
    """What a non-regular, non-folder file is, for messages."""
    if stat.S_ISFIFO(mode):
        return "FIFO or pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _npy_header(p: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of an NPY file, from its header (no data read)."""
    fmt = np.lib.format
    with open(p, "rb") as fh:
        version = fmt.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = fmt.read_array_header_1_0(fh)
        else:
            shape, _, dtype = fmt.read_array_header_2_0(fh)
    return tuple(int(s) for s in shape), np.dtype(dtype)


#: Bytes per band and numpy type of the arrays imageio makes of PIL's image modes.
_PIL_TYPES = {"I": np.int32, "F": np.float32, "I;16": np.uint16, "I;16B": np.uint16,
              "I;16L": np.uint16, "I;16N": np.uint16}
_pil_lock = threading.Lock()


@contextlib.contextmanager
def _pil_bomb_check_off() -> Iterator[None]:
    """Switch PIL's own decompression-bomb check off: :func:`check_decoded_size` replaces it.

    PIL refuses images of more than ``2 * Image.MAX_IMAGE_PIXELS`` pixels
    whatever the memory; the check here uses the file's decoded size and the
    limit the user can raise.
    """
    from PIL import Image

    with _pil_lock:
        before = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = before


def _pil_header(p: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype imageio decodes a PNG/JPEG/BMP to, from the header (no pixel decoded)."""
    from PIL import Image

    with Image.open(p) as img:
        width, height = img.size
        mode = img.mode
        bands = 4 if mode in ("P", "PA") else len(img.getbands())  # palettes become RGB(A)
        frames = max(1, int(getattr(img, "n_frames", 1) or 1))
    shape = (frames,) * (frames > 1) + (int(height), int(width)) + (bands,) * (bands > 1)
    return shape, np.dtype(_PIL_TYPES.get(mode, np.uint8))


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


def write_image(
    path: str | os.PathLike, data: np.ndarray, *, protect: Iterable[InputSpec] | None = ()
) -> Path:
    """Write ``data`` to ``path`` atomically (TIFF, PNG for 2-D uint8/uint16, or NPY).

    Parameters
    ----------
    path : path
        The file to write (its previous version stays intact if writing fails).
    data : ndarray
    protect : iterable, optional
        Inputs that must survive: files ``path`` must not be, folders it must
        not be inside (see :func:`napari_segloop.core.io.guard.find_input`).

    Raises
    ------
    InputError
        If ``path`` is one of ``protect``, the folder does not exist or is not
        writable, the type is unsupported, or writing fails (a full disk says
        "disk full").
    """
    p = Path(path)
    check_output(p, protect, kind=IMAGE_OUTPUT)
    try:
        with atomic_path(p) as tmp:
            _write(tmp, p.suffix.lower(), data, p)
    except OSError as exc:
        raise InputError(f"{p}: cannot write ({exc.strerror or exc}).") from exc
    return p


def expand_inputs(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """Expand files and folders into a sorted list of image files (and ``.zarr`` images).

    Files inside folders that are not images by suffix, and entries that are
    not regular files (FIFOs, sockets, devices, broken links: never opened),
    are skipped and reported; hidden entries and sub-folders are left out. A
    path given explicitly is kept as is so that its error is reported when it
    is read.

    Returns
    -------
    files : list of Path
    skipped : list of str
        Messages about skipped folder entries.
    """
    from napari_segloop.core.io.lazy import is_zarr_path

    files: list[Path] = []
    skipped: list[str] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir() and not is_zarr_path(p):
            visible = sorted(q for q in p.iterdir() if not q.name.startswith("."))
            # A FIFO, socket, device or broken link is never opened (a FIFO would block): it is
            # reported, not silently left out. Sub-folders are not searched.
            entries = [q for q in visible if q.is_file() or (q.is_dir() and is_zarr_path(q))]
            for q in visible:
                if not q.is_file() and not q.is_dir():
                    skipped.append(f"{q}: skipped (not a regular file)")
            images = [q for q in entries if is_image_path(q) or q.is_dir()]
            for q in entries:
                if not (is_image_path(q) or q.is_dir()):
                    skipped.append(f"{q}: skipped (not an image file)")
            if not images:
                skipped.append(f"{p}: no image files in this folder")
            files.extend(images)
        else:
            files.append(p)
    return files, skipped
