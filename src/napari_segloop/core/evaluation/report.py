"""Metric rows as CSV: column order, cell formatting, atomic writing."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError
from napari_segloop.core.io.atomic import atomic_path
from napari_segloop.core.io.guard import CSV_OUTPUT, InputSpec, check_output

#: Column order of metric rows (CSV export, tables). Unknown extra keys follow.
METRIC_COLUMNS: tuple[str, ...] = (
    "name", "slice", "threshold", "tp", "fp", "fn", "tn", "n_pixels",
    "dice", "iou", "precision", "recall", "accuracy",
    "n_true_objects", "n_pred_objects", "matched_objects", "missed_objects", "spurious_objects",
    "object_precision", "object_recall", "object_f1", "mean_matched_iou", "error",
)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return "" if v != v else repr(v)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _columns(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None) -> list[str]:
    if columns is not None:
        return list(columns)
    present: dict[str, None] = {}
    for row in rows:
        present.update(dict.fromkeys(row))
    ordered = [c for c in METRIC_COLUMNS if c in present]
    return ordered + [c for c in present if c not in METRIC_COLUMNS]


def metrics_csv_text(rows: Iterable[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Return rows of metrics as CSV text (header first; None becomes an empty cell).

    Parameters
    ----------
    rows : iterable of mapping
        E.g. ``Evaluation.to_dict()`` with a ``name``, or ``StackEvaluation.rows()``.
    columns : sequence of str, optional
        Column order; default: the known :data:`METRIC_COLUMNS` present, then the others.
    """
    rows = list(rows)
    cols = _columns(rows, columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in cols])
    return buf.getvalue()


def write_metrics_csv(
    path: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
    *,
    protect: Iterable[InputSpec] | None = (),
) -> Path:
    """Write rows of metrics to a CSV file atomically (see :func:`metrics_csv_text`).

    Parameters
    ----------
    path : path
        The CSV file; any suffix but those of images and models
        (:data:`napari_segloop.core.io.guard.CSV_OUTPUT`).
    rows, columns
        As :func:`metrics_csv_text`.
    protect : iterable, optional
        Inputs that must survive (the prediction, the ground truth, ...): files
        ``path`` must not be, folders it must not be inside.

    Raises
    ------
    InputError
        If ``path`` is one of ``protect``, has an image or model suffix, its
        folder does not exist or is not writable, or the file cannot be
        written (a full disk says "disk full"); the previous file stays intact.
    """
    p = Path(path)
    check_output(p, protect, kind=CSV_OUTPUT)
    text = metrics_csv_text(rows, columns)
    try:
        with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
    except OSError as exc:
        raise InputError(f"{p}: cannot write ({exc.strerror or exc}).") from exc
    return p
