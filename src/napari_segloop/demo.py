"""``segloop demo``: napari with the sample image, the default model and the plugin's docks.

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


def save_doc_screenshots(folder: str, timeout: float = 600.0) -> int:
    """Write the user guide's pictures (``demo.png``, ``model_dock.png``, ``predict_dock.png``).

    Run it in a real window (under ``xvfb-run`` on a headless machine)::

        python -c "from napari_segloop.demo import save_doc_screenshots as s; s('docs/images')"
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    viewer, model_dock, predict_dock, frames = open_demo()
    session = model_dock.session
    model_dock.load_default()
    ok = wait_until(lambda: not session.busy, timeout) and session.bundle is not None
    ok = ok and predict_dock.run() and wait_until(lambda: not session.busy, timeout)
    if not ok:
        _say(f"could not predict the sample: {model_dock.status.text()} {predict_dock.status.text()}")
        viewer.close()
        return 1
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
    _settle()
    path = Path(screenshot)
    path.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(path), canvas_only=False, flash=False)
    viewer.close()
    _say(f"screenshot saved to {path}")
    return 0
