"""The "segloop" panel: the Model, Predict, Threshold and Confusion docks in one scrolling column.

Four docks stacked in napari's right dock area need more than 1,500 pixels of
height; napari's window then grows past a 1600 x 1000 screen and its dims
slider is squeezed away. The panel holds the same docks as collapsible
sections, in workflow order, inside a vertical scroll area whose minimum
height is a few lines, so the window keeps its size whatever is open.

Each section shows its dock at the dock's preferred height (for the panel's
width), so nothing inside a dock is squeezed; the panel scrolls instead.
A section builds its dock when it is first opened (or when the dock is asked
for, e.g. :attr:`SegloopPanel.confusion_dock`), so a closed section costs
nothing: the Confusion dock adds its layers only once it is opened. The four
docks stay available one by one from napari's Plugins menu.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QEvent, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QFont
from qtpy.QtWidgets import (
    QFrame,
    QScrollArea,
    QSizePolicy,
    QStyle,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

#: The dock of each section: (module, class); each is also a dock of its own in napari.yaml.
DOCKS: dict[str, tuple[str, str]] = {
    "Model": ("napari_segloop.widgets.model_dock", "ModelDock"),
    "Predict": ("napari_segloop.widgets.predict_dock", "PredictDock"),
    "Threshold": ("napari_segloop.widgets.threshold_dock", "ThresholdDock"),
    "Confusion": ("napari_segloop.widgets.confusion_dock", "ConfusionDock"),
    "Classes": ("napari_segloop.widgets.classes_dock", "ClassesDock"),
    "Fine-tune": ("napari_segloop.widgets.finetune_dock", "FinetuneDock"),
    "Uncertainty": ("napari_segloop.widgets.uncertainty_dock", "UncertaintyDock"),
}

#: The sections in workflow order: (title, opened by default).
SECTIONS: tuple[tuple[str, bool], ...] = (
    ("Model", True),
    ("Predict", True),
    ("Threshold", True),
    ("Confusion", False),
    ("Classes", False),
    ("Fine-tune", False),
    ("Uncertainty", False),
)

#: The panel's minimum height (pixels): a section header or two; the rest scrolls.
MINIMUM_HEIGHT = 120
#: The panel's preferred height when its docks want more (the dock area gives it what it has).
PREFERRED_MAX_HEIGHT = 600


class Section(QWidget):
    """A titled section whose body (one dock) shows or hides when the title is clicked.

    Unlike a height-animated collapsible, the body is simply shown or hidden, so
    the dock inside keeps the height its layout asks for as its content changes
    (status lines that wrap, tables that fill).

    Parameters
    ----------
    title : str
        The text of the header button.
    factory : callable
        Makes the dock (called once, when the section is first opened or
        :meth:`widget` is first called).
    parent : QWidget, optional
        The parent widget.
    """

    #: Emitted with True when the section opens, False when it closes.
    toggled = Signal(bool)

    def __init__(self, title: str, factory: Callable[[], QWidget], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._factory = factory
        self._widget: QWidget | None = None
        self.header = QToolButton(self)
        self.header.setText(title)
        self.header.setCheckable(True)
        self.header.setChecked(False)
        self.header.setAutoRaise(True)
        self.header.setArrowType(Qt.ArrowType.RightArrow)
        self.header.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.header.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.header.setToolTip(f"Show or hide the {title} dock.")
        font = QFont(self.header.font())
        font.setBold(True)
        self.header.setFont(font)
        self.header.toggled.connect(self._on_header_toggled)
        self.body = QWidget(self)
        self._body_layout = QVBoxLayout(self.body)
        self._body_layout.setContentsMargins(0, 0, 0, 0)
        self.body.setVisible(False)
        line = QFrame(self)
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.header)
        layout.addWidget(self.body)
        layout.addWidget(line)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

    @property
    def title(self) -> str:
        """The section's title."""
        return self.header.text()

    @property
    def built(self) -> bool:
        """True once the dock has been made."""
        return self._widget is not None

    def widget(self) -> QWidget:
        """The section's dock, made now if it has not been made yet (the section stays as it is)."""
        if self._widget is None:
            self._widget = self._factory()
            self._body_layout.addWidget(self._widget)
        return self._widget

    def isExpanded(self) -> bool:
        """True while the dock is shown."""
        return self.header.isChecked()

    def expand(self) -> None:
        """Show the dock (making it first if needed)."""
        self.header.setChecked(True)

    def collapse(self) -> None:
        """Hide the dock (it keeps working: its layers and state stay)."""
        self.header.setChecked(False)

    def _on_header_toggled(self, opened: bool) -> None:
        if opened:
            self.widget()
        self.header.setArrowType(Qt.ArrowType.DownArrow if opened else Qt.ArrowType.RightArrow)
        self.body.setVisible(opened)
        self.toggled.emit(opened)


class _Column(QWidget):
    """The scrolled widget: its minimum height is its preferred height for its width.

    A ``QScrollArea`` with a resizable widget gives it at least its minimum
    size; making that the preferred (height-for-width) size means every dock is
    laid out as tall as it asks to be, and the scroll area scrolls instead of
    squeezing them.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._width = -1

    def _wanted_height(self, width: int) -> int:
        layout = self.layout()
        if layout is None:
            return 0
        if layout.hasHeightForWidth() and width > 0:
            return max(layout.heightForWidth(width), layout.minimumSize().height())
        return layout.sizeHint().height()

    def minimumSizeHint(self) -> QSize:
        """The layout's minimum width; the preferred height for the current width."""
        layout = self.layout()
        width = layout.minimumSize().width() if layout is not None else 0
        return QSize(width, self._wanted_height(self.width()))

    def resizeEvent(self, event: Any) -> None:
        """Ask the scroll area again when the width changes."""
        super().resizeEvent(event)
        if event.size().width() != self._width:
            self._width = event.size().width()
            self.updateGeometry()  # the wanted height depends on the width


class _ScrollArea(QScrollArea):
    """A vertical scroll area as wide as its widget needs and only a few lines tall at minimum."""

    def eventFilter(self, watched: Any, event: Any) -> bool:
        """Follow the scrolled widget's layout changes (see below)."""
        # The size hints below follow the widget's: when its layout changes (a section opens, a
        # dock grows wider), the layout holding the scroll area must ask again.
        if watched is self.widget() and event.type() == QEvent.Type.LayoutRequest:
            self.updateGeometry()
        return super().eventFilter(watched, event)

    def _extra_width(self) -> int:
        scrollbar = self.style().pixelMetric(QStyle.PixelMetric.PM_ScrollBarExtent, None, self)
        return scrollbar + 2 * self.frameWidth()

    def minimumSizeHint(self) -> QSize:
        """As wide as the docks need (with the scroll bar), :data:`MINIMUM_HEIGHT` tall."""
        widget = self.widget()
        width = widget.minimumSizeHint().width() if widget is not None else 0
        return QSize(width + self._extra_width(), MINIMUM_HEIGHT)

    def sizeHint(self) -> QSize:
        """The docks' preferred size, at most :data:`PREFERRED_MAX_HEIGHT` tall."""
        widget = self.widget()
        if widget is None:
            return super().sizeHint()
        hint = widget.sizeHint()
        height = min(hint.height() + 2 * self.frameWidth(), PREFERRED_MAX_HEIGHT)
        return QSize(hint.width() + self._extra_width(), max(height, MINIMUM_HEIGHT))


class SegloopPanel(QWidget):
    """The Model, Predict, Threshold and Confusion docks as collapsible sections in one scrolling panel.

    Model, Predict and Threshold are open at first, Confusion closed; a dock is
    made when its section is first opened or its accessor (:attr:`model_dock`,
    :attr:`predict_dock`, :attr:`threshold_dock`, :attr:`confusion_dock`) is
    first read. The docks share the viewer's session with any dock opened on
    its own from the Plugins menu.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it when the panel is opened).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.sections: dict[str, Section] = {}
        self._scroll_target: str | None = None
        self._scroll_timer = QTimer(self)  # a child: it goes with the panel
        self._scroll_timer.setSingleShot(True)
        self._scroll_timer.setInterval(0)
        self._scroll_timer.timeout.connect(self._apply_scroll)
        column = _Column()
        column_layout = QVBoxLayout(column)
        column_layout.setContentsMargins(0, 0, 0, 0)
        column_layout.setSpacing(2)
        for title, _ in SECTIONS:
            section = Section(title, self._factory(title), column)
            self.sections[title] = section
            column_layout.addWidget(section)
        column_layout.addStretch(1)
        self.scroll = _ScrollArea(self)
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded)
        self.scroll.setWidget(column)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.scroll)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)
        for title, opened in SECTIONS:
            if opened:
                self.sections[title].expand()

    def _factory(self, title: str) -> Callable[[], QWidget]:
        module, name = DOCKS[title]

        def make() -> QWidget:
            # Imported here: a section never opened never imports (or builds) its dock.
            dock_class = getattr(importlib.import_module(module), name)
            return dock_class(self.viewer)

        return make

    # -- sections -------------------------------------------------------------
    def section(self, title: str) -> Section:
        """The section called ``title`` (``"Model"``, ``"Predict"``, ``"Threshold"``, ``"Confusion"``)."""
        return self.sections[title]

    def expand_all(self) -> None:
        """Open every section (making the docks not made yet)."""
        for section in self.sections.values():
            section.expand()

    def scroll_to(self, title: str) -> None:
        """Open a section and scroll the panel so that the section starts at the top."""
        self.sections[title].expand()
        self._scroll_target = title
        self._apply_scroll()
        # Again once the scroll area has laid out the opened section (its range may grow).
        self._scroll_timer.start()

    def _apply_scroll(self) -> None:
        section = self.sections.get(self._scroll_target or "")
        if section is not None:
            self.scroll.widget().layout().activate()
            self.scroll.verticalScrollBar().setValue(section.y())

    # -- the docks ------------------------------------------------------------
    @property
    def model_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.model_dock.ModelDock` (made on first access)."""
        return self.sections["Model"].widget()

    @property
    def predict_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.predict_dock.PredictDock` (made on first access)."""
        return self.sections["Predict"].widget()

    @property
    def threshold_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.threshold_dock.ThresholdDock` (made on first access)."""
        return self.sections["Threshold"].widget()

    @property
    def confusion_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.confusion_dock.ConfusionDock` (made on first access)."""
        return self.sections["Confusion"].widget()

    @property
    def classes_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.classes_dock.ClassesDock` (made on first access)."""
        return self.sections["Classes"].widget()

    @property
    def finetune_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.finetune_dock.FinetuneDock` (made on first access)."""
        return self.sections["Fine-tune"].widget()

    @property
    def uncertainty_dock(self) -> Any:
        """The :class:`~napari_segloop.widgets.uncertainty_dock.UncertaintyDock` (made on first access)."""
        return self.sections["Uncertainty"].widget()
