"""Live training curves: training and validation loss (left axis) and validation Dice (right axis).

A QPainter widget like :mod:`~napari_segloop.widgets.curve_plot` (no plotting
library: napari ships none, and the plot needs three lines and two axes).
Reading it: training loss falling while validation loss rises is over-fitting;
both high and flat is under-fitting; the dashed line is the starting model's
validation Dice, which the new model has to beat.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainterPath, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_segloop.widgets.curve_plot import begin_plot

#: Okabe-Ito colours: training loss, validation loss, validation Dice.
TRAIN_COLOR, VAL_COLOR, DICE_COLOR = "#999999", "#E69F00", "#0072B2"
#: Training losses are averaged over this many steps before they are drawn.
SMOOTH = 10


class TrainingPlot(QWidget):
    """Loss and Dice against the training step."""

    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 36, 30, 18, 18

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.clear()
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip(
            "Grey: training loss; orange: validation loss (held-out annotations); blue: validation "
            "Dice (right axis), dashed: the starting model's. Training loss falling while validation "
            "loss rises means over-fitting: stop, or paint more. Both flat and high: under-fitting."
        )

    def clear(self) -> None:
        """Forget all points (a new run)."""
        self.train: list[tuple[int, float]] = []
        self._acc: list[float] = []
        self.val_loss: list[tuple[int, float]] = []
        self.val_dice: list[tuple[int, float]] = []
        self.start_dice: float | None = None
        self.best_step: int | None = None
        self.update()

    def sizeHint(self) -> QSize:
        return QSize(260, 150)

    def minimumSizeHint(self) -> QSize:
        return QSize(160, 110)

    # -- data -------------------------------------------------------------------
    def add_step(self, step: int, loss: float) -> None:
        """A training step's loss (drawn as the mean of every :data:`SMOOTH` steps)."""
        self._acc.append(float(loss))
        if len(self._acc) >= SMOOTH:
            self.train.append((step, sum(self._acc) / len(self._acc)))
            self._acc = []
            self.update()

    def add_validation(self, step: int, loss: float, dice: float, best: bool = False,
                       start_dice: float | None = None) -> None:
        """A validation point."""
        self.val_loss.append((step, float(loss)))
        self.val_dice.append((step, float(dice)))
        if start_dice is not None:
            self.start_dice = float(start_dice)
        if best:
            self.best_step = step
        self.update()

    @property
    def has_points(self) -> bool:
        """True once something can be drawn."""
        return bool(self.train or self.val_loss)

    # -- drawing ------------------------------------------------------------------
    def paintEvent(self, event: Any) -> None:
        painter, fg, grid = begin_plot(self)
        rect = QRectF(self.MARGIN_LEFT, self.MARGIN_TOP,
                      max(10, self.width() - self.MARGIN_LEFT - self.MARGIN_RIGHT),
                      max(10, self.height() - self.MARGIN_TOP - self.MARGIN_BOTTOM))
        painter.setPen(QPen(grid, 1))
        for v in (0.0, 0.5, 1.0):
            y = rect.top() + (1 - v) * rect.height()
            painter.drawLine(QPointF(rect.left(), y), QPointF(rect.right(), y))
        if not self.has_points:
            painter.setPen(fg)
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap),
                             "Curves appear here while the model trains.")
            painter.end()
            return
        steps = [s for s, _ in self.train + self.val_loss]
        x0, x1 = min(0, *steps), max(1, *steps)
        losses = [v for _, v in self.train + self.val_loss]
        top = max(1e-6, max(losses)) * 1.05

        def pt(step: float, value: float, scale: float) -> QPointF:
            return QPointF(rect.left() + (step - x0) / (x1 - x0) * rect.width(),
                           rect.top() + (1 - min(1.0, max(0.0, value / scale))) * rect.height())

        def line(points: list[tuple[int, float]], color: str, scale: float, width: float,
                 style: Qt.PenStyle = Qt.PenStyle.SolidLine) -> None:
            if not points:
                return
            path = QPainterPath(pt(*points[0], scale))
            for p in points[1:]:
                path.lineTo(pt(*p, scale))
            painter.setPen(QPen(QColor(color), width, style))
            painter.setBrush(Qt.BrushStyle.NoBrush)
            painter.drawPath(path)
            if len(points) == 1:
                painter.drawEllipse(pt(*points[0], scale), 2, 2)

        line(self.train, TRAIN_COLOR, top, 1.3)
        line(self.val_loss, VAL_COLOR, top, 1.8)
        line(self.val_dice, DICE_COLOR, 1.0, 2.0)
        if self.start_dice is not None:
            line([(x0, self.start_dice), (x1, self.start_dice)], DICE_COLOR, 1.0, 1.0,
                 Qt.PenStyle.DashLine)
        if self.best_step is not None:
            best = dict(self.val_dice).get(self.best_step)
            if best is not None:
                painter.setBrush(QColor(DICE_COLOR))
                painter.drawEllipse(pt(self.best_step, best, 1.0), 3.5, 3.5)
        painter.setPen(fg)
        align_r = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        align_l = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        for v in (0.0, 0.5, 1.0):
            y = rect.top() + (1 - v) * rect.height()
            painter.drawText(QRectF(0, y - 8, self.MARGIN_LEFT - 4, 16), align_r, f"{v * top:.2g}")
            painter.drawText(QRectF(rect.right() + 3, y - 8, self.MARGIN_RIGHT, 16), align_l, f"{v:g}")
        painter.drawText(QRectF(rect.left(), rect.bottom() + 2, rect.width(), 14),
                         int(Qt.AlignmentFlag.AlignHCenter), f"step (0 – {x1})")
        x = rect.left() + 4
        for label, color in (("train loss", TRAIN_COLOR), ("val loss", VAL_COLOR),
                             ("val Dice", DICE_COLOR)):
            painter.setPen(QPen(QColor(color), 2))
            painter.drawLine(QPointF(x, 9), QPointF(x + 12, 9))
            painter.setPen(fg)
            painter.drawText(QPointF(x + 15, 13), label)
            x += 24 + painter.fontMetrics().horizontalAdvance(label)
        painter.end()
