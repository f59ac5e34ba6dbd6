"""A compact table of pixel and object metrics, one column per scope (slice, whole stack)."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QSize, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QWidget,
)

from napari_segloop.widgets.evaluation import format_value

#: Pixel rows: (key of ``PixelMetrics.to_dict()``, label, tooltip).
PIXEL_ROWS: tuple[tuple[str, str, str], ...] = (
    ("tp", "TP", "True positive pixels: predicted and true foreground."),
    ("fp", "FP", "False positive pixels: predicted foreground, true background."),
    ("fn", "FN", "False negative pixels: predicted background, true foreground."),
    ("tn", "TN", "True negative pixels: predicted and true background."),
    ("dice", "Dice", "2 TP / (2 TP + FP + FN), the F1 score of pixels."),
    ("iou", "IoU", "TP / (TP + FP + FN), the Jaccard index."),
    ("precision", "precision", "TP / (TP + FP); n/a when nothing is predicted."),
    ("recall", "recall", "TP / (TP + FN); n/a when the ground truth is empty."),
    ("accuracy", "accuracy", "(TP + TN) / pixels."),
)

#: Object rows: (key of ``ObjectMetrics.to_dict()``, label, tooltip).
OBJECT_ROWS: tuple[tuple[str, str, str], ...] = (
    ("n_true_objects", "true objects", "Objects in the ground truth (2-D, per slice)."),
    ("n_pred_objects", "predicted objects", "Objects in the prediction."),
    ("matched_objects", "matched", "Pairs of true and predicted objects with IoU > 0.5."),
    ("missed_objects", "missed", "True objects without a match (object-level false negatives)."),
    ("spurious_objects", "spurious", "Predicted objects without a match (object-level false positives)."),
    ("object_precision", "object precision", "Matched / predicted objects."),
    ("object_recall", "object recall", "Matched / true objects."),
    ("object_f1", "object F1", "2 matched / (true + predicted objects)."),
    ("mean_matched_iou", "mean matched IoU", "Mean IoU of the matched pairs."),
)

#: Shown in object rows while they are computed for the current threshold.
PENDING = "…"


class MetricsTable(QTableWidget):
    """Rows of metrics, columns of scopes; undefined values read ``n/a`` (never NaN).

    Cells are updated in place (only the text of changed cells), so a
    refresh for every slider step costs a few microseconds per cell.
    """

    #: Rows the table shows at its minimum height (the others scroll).
    MINIMUM_ROWS = 5

    def __init__(self, parent: QWidget | None = None) -> None:
        rows = PIXEL_ROWS + OBJECT_ROWS
        super().__init__(len(rows), 1, parent)
        self._keys = [key for key, _, _ in rows]
        self._row = {key: i for i, key in enumerate(self._keys)}
        for i, (_, label, tip) in enumerate(rows):
            item = QTableWidgetItem(label)
            item.setToolTip(tip)
            self.setVerticalHeaderItem(i, item)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ContiguousSelection)
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        # Fixed sizes: resizing to contents would measure every cell at every update.
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 4)
        # Preferred: as tall as its rows (no inner scroll bar in a scrolling panel); minimum: a few
        # rows (it scrolls), so the dock never demands the whole table's height from the window.
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.set_columns(["image"])

    def _rows_height(self, rows: int) -> int:
        """Height of the header, ``rows`` rows and the frame, in pixels."""
        header = self.horizontalHeader().sizeHint().height()
        return header + rows * self.verticalHeader().defaultSectionSize() + 2 * self.frameWidth()

    def sizeHint(self) -> QSize:
        """Wide enough for the default size of a table, tall enough for every row."""
        return QSize(super().sizeHint().width(), self._rows_height(self.rowCount()))

    def minimumSizeHint(self) -> QSize:
        """A few rows: the rest scrolls when the dock is short."""
        hint = super().minimumSizeHint()
        return QSize(hint.width(), self._rows_height(min(self.MINIMUM_ROWS, self.rowCount())))

    def set_columns(self, names: list[str]) -> None:
        """Set the scopes (e.g. ``["current slice", "whole stack"]``); all cells read ``n/a``."""
        self.setColumnCount(len(names))
        self.setHorizontalHeaderLabels(names)
        for c in range(len(names)):
            for r in range(len(self._keys)):
                item = QTableWidgetItem("n/a")
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.setItem(r, c, item)

    def columns(self) -> list[str]:
        """The column titles."""
        return [self.horizontalHeaderItem(c).text() for c in range(self.columnCount())]

    def _set(self, key: str, column: int, text: str) -> None:
        item = self.item(self._row[key], column)
        if item is not None and item.text() != text:
            item.setText(text)

    def set_pixel(self, column: int, metrics: Any, pending: bool = False) -> None:
        """Show a :class:`~napari_segloop.core.evaluation.PixelMetrics`; ``…`` while pending, else n/a."""
        values = metrics.to_dict() if metrics is not None else {}
        for key, _, _ in PIXEL_ROWS:
            self._set(key, column, PENDING if pending else format_value(values.get(key)))

    def set_objects(self, column: int, metrics: Any, pending: bool = False) -> None:
        """Show an :class:`~napari_segloop.core.evaluation.ObjectMetrics`; ``…`` while pending, else n/a."""
        values = metrics.to_dict() if metrics is not None else {}
        for key, _, _ in OBJECT_ROWS:
            self._set(key, column, PENDING if pending else format_value(values.get(key)))

    def clear_values(self) -> None:
        """Every cell ``n/a``."""
        for c in range(self.columnCount()):
            self.set_pixel(c, None)
            self.set_objects(c, None)

    def text(self, key: str, column: int = 0) -> str:
        """The text of one cell (``key`` as in ``Evaluation.to_dict()``)."""
        return self.item(self._row[key], column).text()

    def as_dict(self, column: int = 0) -> dict[str, str]:
        """The texts of one column, by key."""
        return {key: self.text(key, column) for key in self._keys}
