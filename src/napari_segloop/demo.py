"""``segloop demo``: napari with the sample image, the default model and the plugin's docks.

The Threshold and Confusion docks come with the sample's ground truth
chosen, so after the prediction the window shows the mask, the TP / FP / FN
overlay and its metrics.

The docks are added through napari's plugin system
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
WINDOW_SIZE = (1500, 950)


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


def open_demo(show: bool = True) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Open a viewer with the sample nuclei and the Model and Predict docks.

    Returns
    -------
    viewer, model_dock, predict_dock
        The viewer and the two dock widgets.
    frames : dict
        napari's dock frames (``"Model"``, ``"Predict"``), e.g. for screenshots.
    """
    import napari

    viewer = napari.Viewer(title="napari-segloop demo", show=show)
    viewer.window.resize(*WINDOW_SIZE)
    viewer.open_sample(PLUGIN, "nuclei")
    model_frame, model_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Model")
    predict_frame, predict_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    predict_dock.image_combo.set_layer(viewer.layers["nuclei"])
    return viewer, model_dock, predict_dock, {"Model": model_frame, "Predict": predict_frame}


def add_evaluation_docks(viewer: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Dock Threshold and Confusion (tabbed together) with the sample's ground truth chosen.

    Returns
    -------
    threshold_dock, confusion_dock
        The two dock widgets; they follow ``nuclei probability`` once it exists.
    frames : dict
        napari's dock frames (``"Threshold"``, ``"Confusion"``).
    """
    threshold_frame, threshold_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Threshold")
    confusion_frame, confusion_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Confusion", tabify=True)
    if "nuclei ground truth" in viewer.layers:
        truth = viewer.layers["nuclei ground truth"]
        threshold_dock.truth_combo.set_value(truth)
        confusion_dock.truth_combo.set_value(truth)
    return threshold_dock, confusion_dock, {"Threshold": threshold_frame, "Confusion": confusion_frame}


def _evaluation_ready(threshold_dock: Any, confusion_dock: Any) -> bool:
    return (not threshold_dock.busy and not confusion_dock.busy and confusion_dock.result is not None
            and threshold_dock.mask_layer() is not None)


def _open_predicted(timeout: float) -> tuple[Any, Any, Any, dict] | None:
    """Open the demo, load the default model and predict the sample; None (window closed) on failure."""
    viewer, model_dock, predict_dock, frames = open_demo()
    session = model_dock.session
    model_dock.load_default()
    ok = wait_until(lambda: not session.busy, timeout) and session.bundle is not None
    ok = ok and predict_dock.run() and wait_until(lambda: not session.busy, timeout)
    if not ok:
        _say(f"could not predict the sample: {model_dock.status.text()} {predict_dock.status.text()}")
        viewer.close()
        return None
    return viewer, model_dock, predict_dock, frames


def save_evaluation_screenshots(folder: str, timeout: float = 600.0) -> int:
    """Write the pictures of ``docs/threshold_and_confusion.md`` (``threshold_*.png``, ``confusion_*.png``).

    Run it in a real window (under ``xvfb-run`` on a headless machine)::

        python -c "from napari_segloop.demo import save_evaluation_screenshots as s; s('docs/images')"
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    opened = _open_predicted(timeout)
    if opened is None:
        return 1
    viewer, _, _, frames = opened
    for frame in frames.values():
        viewer.window.remove_dock_widget(frame)
    viewer.window.resize(1400, 900)
    tdock, cdock, eval_frames = add_evaluation_docks(viewer)
    wait_until(lambda: _evaluation_ready(tdock, cdock), timeout)
    tdock.best_threshold()
    wait_until(lambda: tdock.best is not None and _evaluation_ready(tdock, cdock), timeout)
    viewer.layers["nuclei confusion"].visible = False
    viewer.layers.selection.active = viewer.layers["nuclei mask"]
    scene = getattr(viewer, "scene", None)  # napari >= 0.9 moved the camera to viewer.scene
    camera = scene.camera if scene is not None else viewer.camera
    camera.center = (0, 150, 150)
    camera.zoom = 2.5
    eval_frames["Threshold"].raise_()
    _settle(2.0)
    viewer.screenshot(str(out / "threshold_mask.png"), canvas_only=False, flash=False)
    viewer.layers["nuclei confusion"].visible = True
    viewer.layers["nuclei mask"].visible = False
    viewer.layers.selection.active = viewer.layers["nuclei confusion"]
    eval_frames["Confusion"].raise_()
    _settle(2.0)
    viewer.screenshot(str(out / "confusion_overlay.png"), canvas_only=False, flash=False)
    tdock.set_threshold(0.1)  # a low threshold: false positives around every nucleus
    wait_until(lambda: _evaluation_ready(tdock, cdock) and cdock.result.threshold == tdock.threshold, timeout)
    _settle(1.5)
    viewer.screenshot(str(out / "confusion_low_threshold.png"), canvas_only=True, flash=False)
    tdock.best_threshold()
    wait_until(lambda: _evaluation_ready(tdock, cdock) and cdock.result.threshold == tdock.threshold, timeout)
    for name, size, file in (("Threshold", (460, 640), "threshold_dock.png"),
                             ("Confusion", (460, 700), "confusion_dock.png")):
        eval_frames[name].setFloating(True)
        eval_frames[name].resize(*size)
        _settle(0.8)
        eval_frames[name].grab().save(str(out / file))
    tdock.plot.resize(520, 220)
    _settle(0.3)
    tdock.plot.grab().save(str(out / "threshold_plot.png"))
    viewer.close()
    _say(f"screenshots saved to {out}")
    return 0


def save_doc_screenshots(folder: str, timeout: float = 600.0) -> int:
    """Write the user guide's pictures (``demo.png``, ``model_dock.png``, ``predict_dock.png``).

    Run it in a real window (under ``xvfb-run`` on a headless machine)::

        python -c "from napari_segloop.demo import save_doc_screenshots as s; s('docs/images')"
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    opened = _open_predicted(timeout)
    if opened is None:
        return 1
    viewer, model_dock, predict_dock, frames = opened
    _settle(1.5)
    viewer.screenshot(str(out / "demo.png"), canvas_only=False, flash=False)
    # Floating docks get room for their expanded sections.
    model_dock.weights_section.expand(animate=False)
    model_dock.new_section.expand(animate=False)
    predict_dock.tiling_section.expand(animate=False)
    for name, size, file in (("Model", (470, 980), "model_dock.png"),
                             ("Predict", (460, 640), "predict_dock.png")):
        frames[name].setFloating(True)
        frames[name].resize(*size)
        _settle(0.8)
        frames[name].grab().save(str(out / file))
    viewer.close()
    _say(f"screenshots saved to {out}")
    return 0


def run_demo(screenshot: str | None = None, timeout: float = 600.0) -> int:
    """Run the demo.

    Parameters
    ----------
    screenshot : str, optional
        Predict the sample, save a PNG of the whole window here and exit.
        Without it, napari stays open (``napari.run()``).
    timeout : float
        Seconds to wait for loading and predicting in screenshot mode.

    Returns
    -------
    int
        0 on success; 1 if the default model is missing or a step failed.
    """
    import napari

    from napari_segloop.core.bundle import default_model_path
    from napari_segloop.widgets.predict_dock import default_model_available

    viewer, model_dock, predict_dock, _ = open_demo()
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
    _settle()
    path = Path(screenshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    viewer.close()
    _say(f"screenshot saved to {path}")
    return 0
