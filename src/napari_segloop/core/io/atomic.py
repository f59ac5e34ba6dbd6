"""Atomic file writes: write a temporary sibling, then rename it into place.

An interrupted or failed write never leaves a truncated file behind and never
destroys the previous version (``os.replace`` is atomic within a folder).
Model bundles, being folders, are swapped in by :func:`napari_segloop.core.bundle.save_bundle`.

A process that is killed (``SIGKILL``, a power cut) runs no cleanup, so its
hidden temporary stays behind. Temporaries carry the writer's process id
(``.{name}.{pid}-{hex8}.tmp``); the next write of the same output removes the
stale ones of that output's name only (:func:`remove_stale_temps`): those
whose writer is no longer running, or older than :data:`STALE_AFTER_S`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: A temporary whose writer cannot be told to be gone is stale after this many seconds.
STALE_AFTER_S = 600.0

#: ``errno`` values that mean the disk (or the user's quota) is full.
DISK_FULL_ERRNOS = frozenset(
    e for e in (getattr(errno, "ENOSPC", None), getattr(errno, "EDQUOT", None)) if e is not None
)

#: Longest file name kept as is inside a temporary's name (255 bytes is the usual limit).
_MAX_NAME_BYTES = 200

#: A listing of a folder with at least this many entries is reused by :func:`remove_stale_temps`
#: for :data:`_SCAN_TTL_S` seconds (a batch writing thousands of files into one folder would
#: otherwise list it once per file); smaller folders are listed on every write.
_CACHE_MIN_ENTRIES = 2000
_SCAN_TTL_S = 30.0

#: Any name that looks like one of our temporaries (files, then bundle folders).
_ANY_FILE_TEMP = re.compile(r"\..+\.(?:\d+-)?[0-9a-f]{8}\.tmp")
_ANY_FOLDER_TEMP = re.compile(r"\..+\.(?:tmp|old)-(?:\d+-)?[0-9a-f]{8}")


def _own_pattern(stem: str, folders: bool) -> re.Pattern[str]:
    """The exact pattern of the temporaries of the output whose name is ``stem``."""
    if folders:
        return re.compile(rf"\.{re.escape(stem)}\.(?P<role>tmp|old)-(?:(?P<pid>\d+)-)?[0-9a-f]{{8}}")
    return re.compile(rf"\.{re.escape(stem)}\.(?:(?P<pid>\d+)-)?[0-9a-f]{{8}}\.tmp")


_scan_lock = threading.Lock()
_scan_cache: dict[tuple[str, bool], tuple[float, list[str]]] = {}


def _temp_stem(name: str) -> str:
    """``name`` as it appears in its temporaries' names (hashed when very long)."""
    if len(os.fsencode(name)) <= _MAX_NAME_BYTES:
        return name
    return hashlib.sha1(os.fsencode(name)).hexdigest()[:16]


def temp_file_path(path: str | os.PathLike) -> Path:
    """A fresh temporary path next to ``path``: ``.{name}.{pid}-{hex8}.tmp``."""
    final = Path(path)
    return final.with_name(f".{_temp_stem(final.name)}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def temp_folder_paths(folder: str | os.PathLike) -> tuple[Path, Path]:
    """Fresh sibling names for swapping a folder in: ``.{name}.tmp-{pid}-{hex8}`` and ``.old-``.

    Used by :func:`atomic_folder` (bundles, stored labels); :func:`remove_stale_temps`
    with ``folders=True`` recognises them (and the older names without a pid).
    """
    final = Path(folder)
    stem, pid = _temp_stem(final.name), os.getpid()
    return (final.with_name(f".{stem}.tmp-{pid}-{uuid.uuid4().hex[:8]}"),
            final.with_name(f".{stem}.old-{pid}-{uuid.uuid4().hex[:8]}"))


def pid_alive(pid: int) -> bool:
    """False only when it is certain that no process ``pid`` runs on this machine.

    This process counts as alive; on Windows, or for a pid that cannot be
    asked about, the answer is True (the age rule then decides).
    """
    if pid <= 0 or pid == os.getpid() or os.name == "nt":  # os.kill(pid, 0) kills on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError, ValueError):  # EPERM: someone else's process
        return True
    return True


def _newest_mtime(path: Path, is_folder: bool) -> float:
    """The mtime of ``path``; for a folder, the newest of it and its direct entries."""
    newest = path.lstat().st_mtime
    if is_folder:
        with os.scandir(path) as entries:
            for entry in entries:
                try:
                    newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
                except OSError:
                    pass
    return newest


def _candidates(parent: Path, folders: bool) -> list[str]:
    """Names in ``parent`` that look like temporaries (of any output)."""
    key = (os.path.abspath(parent), folders)
    now = time.monotonic()
    with _scan_lock:
        cached = _scan_cache.get(key)
        if cached is not None and now - cached[0] < _SCAN_TTL_S:
            return cached[1]
    pattern = _ANY_FOLDER_TEMP if folders else _ANY_FILE_TEMP
    found: list[str] = []
    count = 0
    try:
        with os.scandir(parent) as entries:
            for entry in entries:
                count += 1
                m = pattern.fullmatch(entry.name)
                if m is not None:
                    found.append(entry.name)
    except OSError:
        return []
    if count >= _CACHE_MIN_ENTRIES:
        with _scan_lock:
            _scan_cache[key] = (now, found)
    return found


def remove_stale_temps(
    final_path: str | os.PathLike,
    *,
    folders: bool = False,
    older_than: float = STALE_AFTER_S,
) -> list[Path]:
    """Remove the temporaries a killed writer left next to ``final_path``.

    Only names of this module's own patterns for this very output are
    considered: ``.{name}.{pid}-{hex8}.tmp`` (and the older ``.{name}.{hex8}.tmp``)
    for a file; with ``folders=True`` the folders ``.{name}.tmp-{pid}-{hex8}`` and
    ``.{name}.old-{pid}-{hex8}`` (and the same without a pid) of a bundle save.
    One is stale when the process that wrote it is certainly gone
    (:func:`pid_alive`) or when it was not modified for ``older_than``
    seconds. Anything else (another output's temporaries, ``.name.notes``,
    symbolic links, a file where a folder is expected) is kept. When
    ``final_path`` is missing, ``.old-`` folders are kept: after a kill
    between the two renames of a swap they hold the only copy.

    Parameters
    ----------
    final_path : path
        The output about to be written.
    folders : bool
        Look for the folder temporaries of a bundle save instead of files.
    older_than : float
        Grace period in seconds for temporaries whose writer cannot be checked.

    Returns
    -------
    list of Path
        What was removed (removal is best effort: failures are ignored).
    """
    final = Path(final_path)
    parent = final.parent
    stem = _temp_stem(final.name)
    names = _candidates(parent, folders)
    if not names:
        return []
    pattern = _own_pattern(stem, folders)
    final_missing = not os.path.lexists(final)
    removed: list[Path] = []
    now = time.time()
    for name in list(names):
        path = parent / name
        m = pattern.fullmatch(name)
        if m is None:
            continue
        if folders and m["role"] == "old" and final_missing:
            continue
        try:
            if path.is_symlink() or path.is_dir() != folders:
                continue
            pid = m["pid"]
            stale = (pid is not None and not pid_alive(int(pid))) or (
                now - _newest_mtime(path, folders) > older_than)
            if not stale:
                continue
            if folders:
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        if name in names:
            names.remove(name)
        removed.append(path)
    return removed


def disk_full_error(exc: OSError, path: str | os.PathLike | None = None) -> OSError:
    """``exc`` itself, or for a full disk or quota an OSError whose message starts with "disk full"."""
    if exc.errno not in DISK_FULL_ERRNOS:
        return exc
    reason = exc.strerror or os.strerror(exc.errno)
    if "disk full" in reason.lower():
        return exc
    return OSError(exc.errno, f"disk full: {reason}", str(path) if path is not None else exc.filename)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    Stale temporaries of earlier killed writes of ``path`` are removed first
    (:func:`remove_stale_temps`). On any exception the temporary file is
    removed and ``path`` is untouched; the exception propagates (callers turn
    ``OSError`` into a user message), an ``OSError`` of a full disk or quota
    with a message that starts with "disk full".

    Examples
    --------
    >>> with atomic_path("out.csv") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("a,b\\n")
    """
    final = Path(path)
    remove_stale_temps(final)
    tmp = temp_file_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except OSError as exc:
        full = disk_full_error(exc, final)
        if full is exc:
            raise
        raise full from exc
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder next to ``folder``; on success it replaces ``folder``.

    Stale temporaries of earlier killed writes are removed first. The caller
    fills the yielded folder (it does not exist yet). An existing ``folder`` is
    moved aside, the new one moved in, and the old one deleted; if moving the
    new one in fails, the old one is put back. On any exception the temporary
    folder is removed and the exception propagates.
    """
    final = Path(folder)
    remove_stale_temps(final, folders=True)
    tmp, old = temp_folder_paths(final)
    try:
        yield tmp
        if final.exists():
            os.replace(final, old)
            try:
                os.replace(tmp, final)
            except OSError:
                os.replace(old, final)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
