"""A small plot of Dice, precision and recall against the threshold (QPainter, no plotting library)."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtCore import QPointF, QRectF, QSize, Qt, Signal
from qtpy.QtGui import QColor, QFont, QPainter, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

#: (attribute of ``CurveData``, label, colour, pen width): Okabe-Ito colours.
SERIES: tuple[tuple[str, str, str, float], ...] = (
    ("dice", "Dice", "#E69F00", 2.0),
    ("precision", "precision", "#56B4E9", 1.3),
    ("recall", "recall", "#CC79A7", 1.3),
)


def _path(x: np.ndarray, y: np.ndarray) -> QPainterPath:
    """A path in unit coordinates (y up is 1), with a gap wherever ``y`` is NaN."""
    path = QPainterPath()
    drawing = False
    for xi, yi in zip(x.tolist(), y.tolist(), strict=True):
        if yi != yi:
            drawing = False
            continue
        point = QPointF(xi, 1.0 - yi)
        if drawing:
            path.lineTo(point)
        else:
            path.moveTo(point)
            drawing = True
    return path


def begin_plot(widget: QWidget) -> tuple[QPainter, QColor, QColor]:
    """A painter on ``widget`` with the plots' small font, and the text and grid colours."""
    painter = QPainter(widget)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    palette = widget.palette()
    fg = palette.color(palette.ColorRole.WindowText)
    grid = QColor(fg)
    grid.setAlpha(60)
    font = QFont(widget.font())
    font.setPointSizeF(max(6.0, font.pointSizeF() * 0.8))
    painter.setFont(font)
    return painter, fg, grid


class CurvePlot(QWidget):
    """Dice, precision and recall over the slider's thresholds, the current threshold marked.

    Click or drag in the plot to choose a threshold (:attr:`threshold_picked`).
    """

    #: Emitted with the threshold under the mouse when the user clicks or drags in the plot.
    threshold_picked = Signal(float)

    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 30, 8, 18, 18
    #: Preferred and smallest useful heights (pixels).
    PREFERRED_HEIGHT, MINIMUM_HEIGHT = 150, 120

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._paths: list[tuple[QPainterPath, str, str, float]] = []
        self._threshold: float | None = None
        self._best: float | None = None
        self._processed: QPainterPath | None = None
        self._processed_xy: tuple[np.ndarray, np.ndarray] | None = None
        self._message = "Choose a ground truth to see the curves."
        # No hard minimum (``setMinimumHeight``): a widget never shrinks below its hard minimum, so
        # when its layout is squeezed (a QFormLayout given less than its minimum, as in a dock whose
        # word-wrapped labels need more height than its minimumSizeHint says) the plot would be drawn
        # over the rows below it. The minimum is a hint instead: layouts reserve it, and when they
        # cannot, the plot gets shorter rather than overlapping its neighbours.
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Dice, precision and recall against the threshold; click to choose a threshold.")

    def sizeHint(self) -> QSize:
        """The preferred size: room for the legend, three grid lines and the axis labels."""
        return QSize(260, self.PREFERRED_HEIGHT)

    def minimumSizeHint(self) -> QSize:
        """The smallest size layouts should give the plot (a hint, not a hard minimum)."""
        return QSize(160, self.MINIMUM_HEIGHT)

    # -- data -----------------------------------------------------------------
    def set_curve(self, curve: Any, message: str = "") -> None:
        """Show a :class:`~napari_segloop.core.evaluation.CurveData` (None: show ``message``)."""
        self._paths = []
        if curve is not None:
            x = np.asarray(curve.thresholds, dtype=float)
            for attr, label, color, width in SERIES:
                self._paths.append((_path(x, np.asarray(getattr(curve, attr), dtype=float)), label,
                                    color, width))
        self._message = message
        self.update()

    def set_processed(self, points: Any) -> None:
        """Show the Dice of the post-processed mask at a few thresholds (None: no post-processing).

        ``points`` are ``(threshold, dice)`` pairs. While they are shown, the raw
        curves (the preview's ``probability > t``) are drawn fainter and the
        legend names them "raw".
        """
        if not points:
            self._processed = self._processed_xy = None
        else:
            x = np.asarray([p[0] for p in points], dtype=float)
            y = np.asarray([np.nan if p[1] is None else p[1] for p in points], dtype=float)
            self._processed = _path(x, y)
            self._processed_xy = (x, y)
        self.update()

    @property
    def has_processed(self) -> bool:
        """True when the post-processed Dice is drawn."""
        return self._processed is not None

    def set_threshold(self, threshold: float | None) -> None:
        """Move the marker of the current threshold."""
        if threshold != self._threshold:
            self._threshold = threshold
            self.update()

    def set_best(self, threshold: float | None) -> None:
        """Mark the best threshold (a small triangle on the axis)."""
        self._best = threshold
        self.update()

    @property
    def has_curve(self) -> bool:
        """True when curves are drawn."""
        return bool(self._paths)

    # -- drawing ----------------------------------------------------------------
    def _plot_rect(self) -> QRectF:
        return QRectF(self.MARGIN_LEFT, self.MARGIN_TOP,
                      max(10, self.width() - self.MARGIN_LEFT - self.MARGIN_RIGHT),
                      max(10, self.height() - self.MARGIN_TOP - self.MARGIN_BOTTOM))

    def paintEvent(self, event: Any) -> None:
        painter, fg, grid = begin_plot(self)
        rect = self._plot_rect()
        painter.setPen(QPen(grid, 1))
        for v in (0.0, 0.5, 1.0):
            y = rect.top() + (1 - v) * rect.height()
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
            x = rect.left() + v * rect.width()
            painter.drawLine(QPointF(x, rect.top()), QPointF(x, rect.bottom()))
        painter.setPen(fg)
        for v, text in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
            y = rect.top() + (1 - v) * rect.height()
            painter.drawText(QRectF(0, y - 8, self.MARGIN_LEFT - 4, 16),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter), text)
            x = rect.left() + v * rect.width()
            painter.drawText(QRectF(x - 20, rect.bottom() + 2, 40, 14),
                             int(Qt.AlignmentFlag.AlignHCenter), text)
        if not self._paths:
            flags = int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap)
            painter.drawText(rect, flags, self._message)
            painter.end()
            return
        painter.save()
        painter.translate(rect.topLeft())
        painter.scale(rect.width(), rect.height())
        faint = self._processed is not None
        for path, _, color, width in self._paths:
            qcolor = QColor(color)
            if faint:
                qcolor.setAlpha(110)
            pen = QPen(qcolor, width)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawPath(path)
        if self._processed is not None:
            pen = QPen(QColor(SERIES[0][2]), 2.6)
            pen.setCosmetic(True)
            painter.setPen(pen)
            painter.drawPath(self._processed)
        painter.restore()
        if self._processed_xy is not None:
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(SERIES[0][2]))
            for px, py in zip(*self._processed_xy, strict=True):
                if py == py:
                    painter.drawEllipse(QPointF(rect.left() + px * rect.width(),
                                                rect.top() + (1 - py) * rect.height()), 2.5, 2.5)
        # legend
        x = rect.left() + 4
        entries = [(label, color) for _, label, color, _ in self._paths]
        if faint:
            entries = [("Dice (post-processed)", SERIES[0][2])] + [
                ("raw " + label if label == "Dice" else label, color) for label, color in entries]
        for label, color in entries:
            painter.setPen(QPen(QColor(color), 2))
            painter.drawLine(QPointF(x, 9), QPointF(x + 12, 9))
            painter.setPen(fg)
            width = painter.fontMetrics().horizontalAdvance(label)
            painter.drawText(QPointF(x + 15, 13), label)
            x += 24 + width
        if self._best is not None:
            bx = rect.left() + float(np.clip(self._best, 0, 1)) * rect.width()
            painter.setPen(Qt.PenStyle.NoPen)
            painter.setBrush(QColor(SERIES[0][2]))
            painter.drawPolygon([QPointF(bx, rect.bottom()), QPointF(bx - 4, rect.bottom() + 6),
                                 QPointF(bx + 4, rect.bottom() + 6)])
        if self._threshold is not None:
            tx = rect.left() + float(np.clip(self._threshold, 0, 1)) * rect.width()
            pen = QPen(fg, 1.5, Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawLine(QPointF(tx, rect.top()), QPointF(tx, rect.bottom()))
        painter.end()

    # -- mouse ------------------------------------------------------------------
    def _pick(self, event: Any) -> None:
        if not self._paths:
            return
        rect = self._plot_rect()
        x = event.position().x() if hasattr(event, "position") else event.x()
        self.threshold_picked.emit(float(np.clip((x - rect.left()) / rect.width(), 0.0, 1.0)))

    def mousePressEvent(self, event: Any) -> None:
        self._pick(event)

    def mouseMoveEvent(self, event: Any) -> None:
        if event.buttons():
            self._pick(event)
