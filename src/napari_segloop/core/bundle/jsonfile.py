"""Reading the JSON files of a bundle strictly: one clear line for anything that is not plain data.

Python's :mod:`json` accepts ``NaN`` and ``Infinity``, integers of thousands
of digits (then fails converting them) and nesting deep enough to exhaust the
interpreter's stack. A bundle's ``config.json``, ``segloop.json`` and the
safetensors header are read here instead: finite numbers of sensible length,
bounded size, regular files only, and every failure a
:class:`~napari_segloop.core.errors.ModelLoadError` naming the file.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.text import printable

__all__ = ["MAX_DIGITS", "check_regular_file", "parse_json_text", "read_json_object"]

#: Integers in a bundle file have at most this many digits (no setting needs more).
MAX_DIGITS = 20


def check_regular_file(path: Path, what: str = "file") -> os.stat_result:
    """Return the ``stat`` of ``path``, or raise unless it is an existing regular file.

    A directory, a dangling symbolic link, a FIFO or a device where a bundle
    file belongs is an error, never "file absent, use the defaults".

    Raises
    ------
    ModelLoadError
        Naming the path and what it is instead.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise ModelLoadError(
                f"{printable(path)}: the {what} is a symbolic link to a file that does not exist."
            ) from None
        raise ModelLoadError(f"{printable(path)}: the {what} does not exist.") from None
    except OSError as exc:
        raise ModelLoadError(f"{printable(path)}: cannot read the {what} ({exc.strerror or exc}).") from exc
    if stat.S_ISDIR(info.st_mode):
        raise ModelLoadError(f"{printable(path)}: the {what} is a folder, not a file.")
    if not stat.S_ISREG(info.st_mode):
        raise ModelLoadError(
            f"{printable(path)}: the {what} is not a regular file (a pipe, socket or device); refused."
        )
    return info


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows here (only finite numbers)")


def _int(text: str) -> int:
    digits = text.lstrip("-")
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(digits)} digits is too long")
    return int(text)


def _float(text: str) -> float:
    if len(text) > 64:
        raise ValueError(f"a number written with {len(text)} characters is too long")
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def parse_json_text(text: str | bytes, source: str) -> Any:
    """Parse JSON text strictly (finite numbers, short integers, bounded nesting).

    Raises
    ------
    ModelLoadError
        ``"<source> is not valid JSON: <reason>"``, one line.
    """
    try:
        return json.loads(text, parse_constant=_no_constant, parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ModelLoadError(f"{source} is not valid JSON: it is nested too deeply.") from None
    except json.JSONDecodeError as exc:
        raise ModelLoadError(
            f"{source} is not valid JSON: {printable(exc.msg)} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{source} is not valid JSON: {printable(exc)}.") from None


def read_json_object(path: Path, max_bytes: int, what: str = "file") -> dict[str, Any]:
    """Read a JSON object from a regular file of at most ``max_bytes`` bytes.

    Raises
    ------
    ModelLoadError
        Missing, not a regular file, too large, not UTF-8, not JSON, not an object.
    """
    info = check_regular_file(path, what)
    source = printable(path)
    if info.st_size > max_bytes:
        raise ModelLoadError(
            f"{source} is {info.st_size / 1e6:.1f} MB, more than a {what} can be "
            f"({max_bytes / 1e6:g} MB); refused."
        )
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelLoadError(f"{source} is not valid JSON: it is not UTF-8 text.") from None
    except OSError as exc:
        raise ModelLoadError(f"{source}: cannot read the {what} ({exc.strerror or exc}).") from exc
    data = parse_json_text(text, source)
    if not isinstance(data, dict):
        raise ModelLoadError(f"{source} must contain a JSON object, not {type(data).__name__}.")
    return data
