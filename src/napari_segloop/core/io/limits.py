"""A limit on the decoded size of an input image, checked from the file's header.

A compressed file of a few kilobytes (an all-zero zlib TIFF, a PNG) can decode
to gigabytes: :func:`check_decoded_size` refuses such a file before any pixel
is decoded, with one line that gives the size and how to raise the limit.

The limit, in this order of precedence:

* :func:`set_max_image_bytes` (the command line's ``--max-image-size``);
* the environment variable ``SEGLOOP_MAX_IMAGE_BYTES`` (``20GB``, ``500MB``,
  a plain number of bytes, or ``none``/``0`` for no limit);
* by default a quarter of the memory available when the check runs (at
  least 1 GB): predicting a decoded image needs several times its size (a
  float32 copy of each slice, the float32 probability map, a mask), so an
  image that takes more than a quarter of the free memory would not fit.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_segloop.core.errors import InputError

__all__ = ["ENV_VAR", "OPTION", "check_decoded_size", "default_max_image_bytes", "format_size",
           "max_image_bytes", "parse_size", "reset_max_image_bytes", "set_max_image_bytes"]

#: The environment variable that sets the limit.
ENV_VAR = "SEGLOOP_MAX_IMAGE_BYTES"
#: The command-line option that sets the limit (named in messages).
OPTION = "--max-image-size"
#: Share of the available memory an input image may take once decoded.
MEMORY_FRACTION = 0.25
#: The default limit is never below this (machines with little free memory still read images).
MIN_DEFAULT_BYTES = 1_000_000_000
#: The default limit when the available memory cannot be measured.
FALLBACK_BYTES = 16_000_000_000

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
          "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
          "tib": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*$", re.IGNORECASE)

_unset = object()
_override: object = _unset


def parse_size(text: str) -> int | None:
    """Parse a size such as ``20GB``, ``500MB``, ``1.5GiB`` or ``123456`` (bytes).

    Parameters
    ----------
    text : str
        A number with an optional unit (``B``, ``KB``/``K``, ``MB``/``M``,
        ``GB``/``G``, ``TB``/``T`` in powers of 1000; ``KiB``, ``MiB``,
        ``GiB``, ``TiB`` in powers of 1024), case-insensitive; ``none``,
        ``off``, ``unlimited`` or ``0`` mean no limit.

    Returns
    -------
    int or None
        The number of bytes, or None for no limit.

    Raises
    ------
    InputError
        If the text is not a size.
    """
    raw = str(text).strip()
    if raw.lower() in ("none", "off", "unlimited", "no"):
        return None
    match = _SIZE.match(raw)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise InputError(f"{raw!r} is not a size; give e.g. 20GB, 500MB, a number of bytes, or none.")
    value = float(match.group(1)) * _UNITS[unit]
    if not math.isfinite(value):
        raise InputError(f"{raw!r} is not a size; give e.g. 20GB, 500MB, a number of bytes, or none.")
    n = int(value)
    return None if n == 0 else n


def format_size(n: int) -> str:
    """A byte count for messages: ``9.7 GB``, ``512 MB``, ``800 bytes`` (powers of 1000)."""
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("KB", 10**3)):
        if n >= factor:
            return f"{n / factor:.1f} {unit}".replace(".0 ", " ")
    return f"{int(n)} bytes"


def _available_memory() -> int | None:
    """The memory available to new allocations, in bytes, or None when it cannot be measured."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(size) if pages > 0 and size > 0 else None


def default_max_image_bytes() -> int:
    """The default limit: a quarter of the available memory, at least 1 GB (16 GB if unknown)."""
    available = _available_memory()
    if available is None:
        return FALLBACK_BYTES
    return max(MIN_DEFAULT_BYTES, int(available * MEMORY_FRACTION))


def set_max_image_bytes(n: int | None) -> None:
    """Set the limit for this process (what ``--max-image-size`` does); None: no limit.

    It takes precedence over ``SEGLOOP_MAX_IMAGE_BYTES``;
    :func:`reset_max_image_bytes` goes back to the environment and the default.
    """
    global _override
    if n is not None and (isinstance(n, bool) or int(n) < 0):
        raise InputError(f"The image size limit must be a number of bytes >= 0, not {n!r}.")
    _override = None if n is None or int(n) == 0 else int(n)


def reset_max_image_bytes() -> None:
    """Forget :func:`set_max_image_bytes`: the environment variable or the default applies again."""
    global _override
    _override = _unset


def max_image_bytes() -> int | None:
    """The largest decoded size of an input image in bytes, or None for no limit.

    Raises
    ------
    InputError
        If ``SEGLOOP_MAX_IMAGE_BYTES`` is not a size.
    """
    if _override is not _unset:
        return _override  # type: ignore[return-value]
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        try:
            return parse_size(text)
        except InputError as exc:
            raise InputError(f"{ENV_VAR}: {exc}") from None
    return default_max_image_bytes()


def _limit_origin() -> str:
    if _override is not _unset:
        return f"set by {OPTION}"
    if os.environ.get(ENV_VAR, "").strip():
        return f"set by {ENV_VAR}"
    return "a quarter of the available memory"


def check_decoded_size(path: str | os.PathLike, shape: Sequence[int], dtype: np.dtype | str) -> int:
    """Refuse an image whose decoded array would exceed :func:`max_image_bytes`.

    Parameters
    ----------
    path : path
        The file (named in the message).
    shape : sequence of int
        The decoded array's shape, from the file's header.
    dtype : dtype
        Its pixel type.

    Returns
    -------
    int
        The decoded size in bytes.

    Raises
    ------
    InputError
        One line giving the size, the limit and how to raise it.
    """
    dims = tuple(int(s) for s in shape)
    itemsize = np.dtype(dtype).itemsize
    nbytes = math.prod(dims) * itemsize
    limit = max_image_bytes()
    if limit is not None and nbytes > limit:
        dims_text = " x ".join(str(s) for s in dims)
        raise InputError(
            f"{Path(path)}: the image would take {format_size(nbytes)} in memory once decoded "
            f"({dims_text} {np.dtype(dtype).name}), more than the limit of {format_size(limit)} "
            f"({_limit_origin()}); raise it with {OPTION} SIZE or {ENV_VAR}=SIZE (e.g. 20GB, or none)."
        )
    return nbytes
