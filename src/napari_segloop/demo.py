"""``segloop demo``: napari with the sample image, the default model and the plugin's panel.

The demo docks the *segloop (all steps)* panel
(:class:`~napari_segloop.widgets.panel.SegloopPanel`: the Model, Predict,
Threshold and Confusion docks as collapsible sections in one scrolling column,
so the window fits a 1600 x 1000 screen) with the sample's ground truth chosen
in Threshold and Confusion; after the prediction the window shows the mask,
the TP / FP / FN overlay and its metrics. Once the panel is docked and the
window has its final size, the view is fitted to the image.

The panel is added through napari's plugin system
(``viewer.window.add_plugin_dock_widget("napari-segloop", ...)``), so the demo
also proves that napari discovers the plugin's manifest. With a screenshot
path it predicts the sample image, saves a picture of the whole window and
exits, which makes it usable as a smoke test and for the documentation.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLUGIN = "napari-segloop"
#: The display name of the panel in ``napari.yaml``.
PANEL = "segloop (all steps)"
#: The demo window's size (width, height) where the screen has room for it.
WINDOW_SIZE = (1500, 950)
#: Pixels kept free above the window for a window manager's title bar.
TITLE_BAR = 40


def _say(message: str) -> None:
    print(f"segloop demo: {message}", file=sys.stderr)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Process Qt events until ``condition()`` is true or ``timeout`` seconds pass."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        app.processEvents()
        if condition():
            return True
        time.sleep(0.02)
    app.processEvents()
    return condition()


def _settle(seconds: float = 1.0) -> None:
    """Let napari redraw for a moment (for screenshots)."""
    wait_until(lambda: False, seconds)


def fit_to_screen(size: tuple[int, int] = WINDOW_SIZE) -> tuple[int, int]:
    """``size`` (width, height), made smaller where the screen's free area is smaller.

    The height leaves :data:`TITLE_BAR` pixels for the window manager's title bar.
    """
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    screen = app.primaryScreen() if app is not None else None
    if screen is None:
        return size
    free = screen.availableGeometry()
    return min(size[0], free.width()), min(size[1], free.height() - TITLE_BAR)


def _camera(viewer: Any) -> Any:
    from napari_segloop.widgets.session import camera_of  # widgets import napari: only when drawing

    return camera_of(viewer)


def _canvas_size(viewer: Any) -> tuple[int, ...]:
    """The canvas size in pixels (height, width), as napari's model knows it."""
    canvas = getattr(viewer, "canvas", None)  # napari >= 0.9
    size = getattr(canvas, "size", None)
    if size is None:
        size = getattr(viewer, "_canvas_size", ())
    return tuple(int(v) for v in size)


def fit_view(viewer: Any, timeout: float = 3.0, still: float = 0.3) -> None:
    """Fit the layers to the canvas once the window layout has settled.

    napari fits the view when the first layer is added; docks added afterwards
    make the canvas smaller, which leaves the image partly off it. This
    processes Qt events until the canvas size has not changed for ``still``
    seconds (at most ``timeout`` seconds), then calls ``viewer.reset_view()``.
    """
    last = [_canvas_size(viewer), time.monotonic()]

    def settled() -> bool:
        size, now = _canvas_size(viewer), time.monotonic()
        if size != last[0]:
            last[:] = [size, now]
        return now - last[1] >= still

    wait_until(settled, timeout)
    viewer.reset_view()
    wait_until(lambda: False, 0.05)


def demo_panel(viewer: Any) -> tuple[Any, Any]:
    """The panel docked in ``viewer`` (docked now if it is not yet).

    Returns
    -------
    frame, panel
        napari's dock frame and the :class:`~napari_segloop.widgets.panel.SegloopPanel`.
    """
    return viewer.window.add_plugin_dock_widget(PLUGIN, PANEL)


def open_demo(show: bool = True, viewer: Any = None,
              size: tuple[int, int] | None = None) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Open a viewer with the sample nuclei and the panel, and fit the view.

    Parameters
    ----------
    show : bool
        Show the window (a new viewer only).
    viewer : napari.viewer.Viewer, optional
        Use this viewer (e.g. one from a test fixture) instead of a new one.
    size : tuple of int, optional
        The window size (width, height); default :data:`WINDOW_SIZE`, bounded by the screen.

    Returns
    -------
    viewer, model_dock, predict_dock
        The viewer and the panel's Model and Predict docks.
    frames : dict
        napari's dock frame of the panel, as ``"segloop"``.
    """
    import napari

    if viewer is None:
        viewer = napari.Viewer(title="napari-segloop demo", show=show)
    viewer.window.resize(*(size or fit_to_screen()))
    viewer.open_sample(PLUGIN, "nuclei")
    frame, panel = demo_panel(viewer)
    panel.predict_dock.image_combo.set_layer(viewer.layers["nuclei"])
    fit_view(viewer)
    return viewer, panel.model_dock, panel.predict_dock, {"segloop": frame}


def add_evaluation_docks(viewer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Open the panel's Threshold and Confusion sections with the sample's ground truth chosen.

    Returns
    -------
    threshold_dock, confusion_dock
        The two docks; they follow ``nuclei probability`` once it exists.
    frames : dict
        napari's dock frame of the panel, as ``"segloop"``.
    """
    frame, panel = demo_panel(viewer)
    panel.section("Threshold").expand()
    panel.section("Confusion").expand()
    threshold_dock, confusion_dock = panel.threshold_dock, panel.confusion_dock
    if "nuclei ground truth" in viewer.layers:
        truth = viewer.layers["nuclei ground truth"]
        threshold_dock.truth_combo.set_value(truth)
        confusion_dock.truth_combo.set_value(truth)
    return threshold_dock, confusion_dock, {"segloop": frame}


def _evaluation_ready(threshold_dock: Any, confusion_dock: Any) -> bool:
    """Both docks idle, the mask on screen made and scored with its object metrics."""
    engine = threshold_dock.engine
    return (not threshold_dock.busy and not confusion_dock.busy and engine.mask_current
            and engine.objects_current and threshold_dock.mask_layer() is not None)


def _open_predicted(timeout: float, size: tuple[int, int] | None = None) -> tuple[Any, Any] | None:
    """Open the demo, load the default model and predict the sample; None (window closed) on failure.

    Returns
    -------
    viewer, panel
        The viewer and the :class:`~napari_segloop.widgets.panel.SegloopPanel`.
    """
    viewer, model_dock, predict_dock, _ = open_demo(size=size)
    session = model_dock.session
    model_dock.load_default()
    ok = wait_until(lambda: not session.busy, timeout) and session.bundle is not None
    ok = ok and predict_dock.run() and wait_until(lambda: not session.busy, timeout)
    if not ok:
        _say(f"could not predict the sample: {model_dock.status.text()} {predict_dock.status.text()}")
        viewer.close()
        return None
    return viewer, demo_panel(viewer)[1]


def save_evaluation_screenshots(folder: str, timeout: float = 600.0) -> int:
    """Write the pictures of ``docs/threshold_and_confusion.md`` (``threshold_*.png``, ``confusion_*.png``).

    Run it in a real window (under ``xvfb-run`` on a headless machine)::

        python -c "from napari_segloop.demo import save_evaluation_screenshots as s; s('docs/images')"
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    opened = _open_predicted(timeout, size=(1400, 900))
    if opened is None:
        return 1
    viewer, panel = opened
    panel.section("Model").collapse()
    panel.section("Predict").collapse()
    tdock, cdock, _ = add_evaluation_docks(viewer)
    wait_until(lambda: _evaluation_ready(tdock, cdock), timeout)
    tdock.best_threshold()
    wait_until(lambda: tdock.best is not None and _evaluation_ready(tdock, cdock), timeout)
    tdock.state.show = "mask"
    viewer.layers.selection.active = viewer.layers["nuclei mask"]
    camera = _camera(viewer)
    camera.center = (0, 150, 150)
    camera.zoom = 2.5
    panel.scroll_to("Threshold")
    _settle(2.0)
    viewer.screenshot(str(out / "threshold_mask.png"), canvas_only=False, flash=False)
    tdock.state.show = "errors"
    wait_until(lambda: _evaluation_ready(tdock, cdock), timeout)
    viewer.layers.selection.active = viewer.layers["nuclei confusion"]
    panel.scroll_to("Confusion")
    _settle(2.0)
    viewer.screenshot(str(out / "confusion_overlay.png"), canvas_only=False, flash=False)
    tdock.set_threshold(0.1)  # a low threshold: false positives around every nucleus
    wait_until(lambda: _evaluation_ready(tdock, cdock), timeout)
    _settle(1.5)
    viewer.screenshot(str(out / "confusion_low_threshold.png"), canvas_only=True, flash=False)
    tdock.best_threshold()
    wait_until(lambda: tdock.best is not None and _evaluation_ready(tdock, cdock), timeout)
    _settle(0.8)
    tdock.grab().save(str(out / "threshold_dock.png"))
    cdock.grab().save(str(out / "confusion_dock.png"))
    tdock.plot.resize(520, 220)  # grabbed before the layout puts it back
    tdock.plot.grab().save(str(out / "threshold_plot.png"))
    viewer.close()
    _say(f"screenshots saved to {out}")
    return 0


def save_doc_screenshots(folder: str, timeout: float = 600.0) -> int:
    """Write the user guide's pictures (``demo.png``, ``model_dock.png``, ``predict_dock.png``).

    Run it in a real window (under ``xvfb-run`` on a headless machine)::

        python -c "from napari_segloop.demo import save_doc_screenshots as s; s('docs/images')"

    ``docs/images/window_1600x1000.png`` comes from
    ``run_demo("docs/images/window_1600x1000.png", window_size=(1600, 1000))``.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    opened = _open_predicted(timeout)
    if opened is None:
        return 1
    viewer, panel = opened
    _settle(1.5)
    viewer.screenshot(str(out / "demo.png"), canvas_only=False, flash=False)
    model_dock, predict_dock = panel.model_dock, panel.predict_dock
    # The docks grow in the panel (it scrolls) to show their expanded sections.
    model_dock.weights_section.expand(animate=False)
    model_dock.new_section.expand(animate=False)
    predict_dock.tiling_section.expand(animate=False)
    _settle(0.8)
    model_dock.grab().save(str(out / "model_dock.png"))
    predict_dock.grab().save(str(out / "predict_dock.png"))
    viewer.close()
    _say(f"screenshots saved to {out}")
    return 0


def run_demo(screenshot: str | None = None, timeout: float = 600.0,
             window_size: tuple[int, int] | None = None) -> int:
    """Run the demo.

    Parameters
    ----------
    screenshot : str, optional
        Predict the sample, save a PNG of the whole window here and exit (every
        section of the panel open, scrolled to Threshold). Without it, napari
        stays open (``napari.run()``).
    timeout : float
        Seconds to wait for loading and predicting in screenshot mode.
    window_size : tuple of int, optional
        The window size (width, height); default :data:`WINDOW_SIZE`, bounded by the screen.

    Returns
    -------
    int
        0 on success; 1 if the default model is missing or a step failed.
    """
    import napari

    from napari_segloop.core.bundle import default_model_path
    from napari_segloop.widgets.predict_dock import default_model_available

    viewer, model_dock, predict_dock, _ = open_demo(size=window_size)
    threshold_dock, confusion_dock, _ = add_evaluation_docks(viewer)
    session = model_dock.session
    if not default_model_available():
        _say(f"the built-in default model is missing ({default_model_path()}); "
             "reinstall napari-segloop, or load a model in the Model dock.")
        if screenshot:
            viewer.close()
            return 1
    else:
        model_dock.load_default()
    if not screenshot:
        napari.run()
        return 0

    if not wait_until(lambda: not session.busy, timeout) or session.bundle is None:
        _say(f"could not load the default model: {model_dock.status.text()}")
        viewer.close()
        return 1
    if not predict_dock.run():
        _say(f"could not start the prediction: {predict_dock.status.text()}")
        viewer.close()
        return 1
    finished = wait_until(lambda: not session.busy, timeout)
    name = "nuclei probability"
    if not finished or name not in viewer.layers:
        _say(f"the prediction did not finish: {predict_dock.status.text()}")
        session.cancel_job()
        wait_until(lambda: not session.busy, 30)
        viewer.close()
        return 1
    if not wait_until(lambda: _evaluation_ready(threshold_dock, confusion_dock), timeout):
        _say(f"the mask and confusion overlay did not finish: {confusion_dock.status.text()}")
    demo_panel(viewer)[1].scroll_to("Threshold")
    fit_view(viewer)  # the layer list grew wider for the new layers' names: the canvas is smaller
    _settle()
    path = Path(screenshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    viewer.close()
    _say(f"screenshot saved to {path}")
    return 0
