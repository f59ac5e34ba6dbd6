"""The segloop panel: the five docks in one scrolling column that fits a 1600 x 1000 screen."""

from __future__ import annotations

import numpy as np
import pytest

SCREEN = (1600, 1000)
DOCKS = ("Model", "Predict", "Threshold", "Confusion", "Classes", "Fine-tune", "Uncertainty")


def _proxy(viewer):
    from napari.utils._proxies import PublicOnlyProxy  # test only: what napari hands to plugins

    return PublicOnlyProxy(viewer)


def _panel(viewer):
    from napari_segloop.widgets.panel import SegloopPanel

    return SegloopPanel(_proxy(viewer))


def _in(widget, ancestor):
    """``widget``'s geometry in ``ancestor``'s coordinates."""
    from qtpy.QtCore import QRect

    return QRect(widget.mapTo(ancestor, widget.rect().topLeft()), widget.size())


@pytest.fixture
def window(make_napari_viewer, qtbot):
    """A shown napari window of 1600 x 1000 with a 3-D image and the panel docked on the right."""
    viewer = make_napari_viewer(show=True)
    qt_window = viewer.window._qt_window
    qt_window.resize(*SCREEN)
    viewer.add_image(np.random.default_rng(0).random((5, 64, 64), dtype=np.float32), name="stack")
    panel = _panel(viewer)
    viewer.window.add_dock_widget(panel, name="segloop", area="right")
    qtbot.wait(300)
    return viewer, panel


def _assert_fits(viewer, panel) -> None:
    qt_window = viewer.window._qt_window
    menus = qt_window.menuBar().height() + qt_window.statusBar().height()
    assert panel.minimumSizeHint().height() <= SCREEN[1] - menus
    assert qt_window.height() <= SCREEN[1]
    assert qt_window.minimumSizeHint().height() <= SCREEN[1]
    dims = viewer.window._qt_viewer.dims
    assert viewer.dims.ndim == 3
    assert dims.isVisible()
    assert dims.height() > 0
    # The panel ends inside the window: nothing runs off the screen.
    bottom = panel.mapTo(qt_window, panel.rect().bottomLeft()).y()
    assert bottom <= qt_window.height()


def test_panel_fits_a_1600x1000_window(window, qtbot):
    viewer, panel = window
    assert [s.title for s in panel.sections.values()] == list(DOCKS)  # workflow order
    assert {t: panel.section(t).isExpanded() for t in DOCKS} == {
        "Model": True, "Predict": True, "Threshold": True, "Confusion": False, "Classes": False,
        "Fine-tune": False,
        "Uncertainty": False}
    assert panel.minimumSizeHint().height() <= 200  # a few lines; the rest scrolls
    _assert_fits(viewer, panel)
    # Every section open: more than the screen's height of docks, and it still fits (it scrolls).
    panel.expand_all()
    qtbot.wait(300)
    column = panel.scroll.widget()
    assert column.height() > SCREEN[1]
    assert panel.scroll.verticalScrollBar().isVisible()
    _assert_fits(viewer, panel)


def test_panel_shows_each_dock_at_its_preferred_height(window, qtbot):
    _, panel = window
    panel.expand_all()
    qtbot.wait(300)
    column = panel.scroll.widget()
    for title in DOCKS:
        dock = getattr(panel, f"{title.lower().replace('-', '')}_dock")
        assert dock.isVisible()
        wanted = dock.heightForWidth(dock.width()) if dock.hasHeightForWidth() else dock.sizeHint().height()
        assert dock.height() >= max(wanted, dock.minimumSizeHint().height()), title
        assert dock.width() <= panel.scroll.viewport().width()  # no part cut off on the right
        assert _in(dock, column).right() <= column.width()
    # A dock that grows (a long status message) gets the room: nothing is clipped.
    dock = panel.threshold_dock
    dock.status.setText("a long message that wraps over several lines " * 12)
    qtbot.wait(200)
    assert dock.status.height() >= dock.status.heightForWidth(dock.status.width())


def test_sections_are_built_when_first_opened(window, qtbot):
    _, panel = window
    confusion = panel.section("Confusion")
    assert not confusion.built
    assert not confusion.isExpanded()
    dock = panel.confusion_dock  # the accessor makes the dock; the section stays closed
    assert confusion.built and not confusion.isExpanded()
    assert not dock.isVisible()
    assert panel.confusion_dock is dock
    panel.scroll_to("Confusion")
    qtbot.wait(200)
    assert confusion.isExpanded() and dock.isVisible()
    confusion.collapse()
    qtbot.wait(100)
    assert not dock.isVisible()
    confusion.header.click()  # the title toggles the section
    assert confusion.isExpanded() and dock.isVisible()


def test_panel_docks_share_the_session(window):
    from napari_segloop.widgets.session import session_for

    viewer, panel = window
    session = session_for(viewer)
    assert panel.model_dock.session is session
    assert panel.predict_dock.session is session
    assert panel.threshold_dock.session is session


@pytest.mark.parametrize("name", ["segloop (all steps)", *DOCKS])
def test_each_dock_opens_alone_from_the_plugins_menu(make_napari_viewer, qtbot, name):
    """Every widget of the manifest docks alone, as the Plugins menu does it."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(*SCREEN)
    frame, widget = viewer.window.add_plugin_dock_widget("napari-segloop", name)
    qtbot.wait(100)
    assert frame.isVisible() and widget.isVisible()
    assert frame.minimumSizeHint().height() <= SCREEN[1]


def test_threshold_plot_does_not_overlap_the_readout(make_napari_viewer, qtbot):
    from napari_segloop.widgets.threshold_dock import ThresholdDock

    viewer = make_napari_viewer()
    dock = ThresholdDock(_proxy(viewer))
    qtbot.addWidget(dock)
    dock.show()
    for width in (340, 420, 560):
        # As tall as the dock lets itself be made: a full dock area gives it no more.
        dock.resize(width, 1)
        qtbot.wait(50)
        plot, readout = _in(dock.plot, dock), _in(dock.readout, dock)
        assert plot.height() > 0
        assert not plot.intersects(readout), (width, plot, readout)
        assert plot.bottom() < readout.top()
    dock.resize(420, dock.sizeHint().height())
    qtbot.wait(50)
    assert dock.plot.height() >= dock.plot.minimumSizeHint().height()
    assert not _in(dock.plot, dock).intersects(_in(dock.readout, dock))


def test_threshold_plot_does_not_overlap_the_readout_in_the_panel(window):
    _, panel = window
    dock = panel.threshold_dock
    assert dock.isVisible()
    plot, readout = _in(dock.plot, dock), _in(dock.readout, dock)
    assert not plot.intersects(readout)
    assert dock.plot.height() >= dock.plot.minimumSizeHint().height()


def test_metrics_table_is_short_at_its_minimum(qtbot):
    from napari_segloop.widgets.metrics_table import MetricsTable

    table = MetricsTable()
    qtbot.addWidget(table)
    rows = table.rowCount() * table.verticalHeader().defaultSectionSize()
    assert table.sizeHint().height() >= rows  # every row, without an inner scroll bar
    assert table.minimumSizeHint().height() < rows / 2
    assert table.minimumSizeHint().height() >= 3 * table.verticalHeader().defaultSectionSize()
