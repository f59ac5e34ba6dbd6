"""Atomic file writes: write a temporary sibling, then rename it into place.

An interrupted or failed write never leaves a truncated file behind and never
destroys the previous version (``os.replace`` is atomic within a folder).
Model bundles, being folders, are swapped in by :func:`napari_segloop.core.bundle.save_bundle`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    On any exception the temporary file is removed and ``path`` is untouched;
    the exception propagates (callers turn ``OSError`` into a user message).

    Examples
    --------
    >>> with atomic_path("out.csv") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("a,b\\n")
    """
    final = Path(path)
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink(missing_ok=True)
