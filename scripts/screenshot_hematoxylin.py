"""Screenshot of the docs: the default model on an IHC colour image with the hematoxylin conversion.

Opens a real napari window with scikit-image's immunohistochemistry sample
(``skimage.data.immunohistochemistry()``, hematoxylin-stained nuclei and
brown DAB, shipped with scikit-image, no download), docks Model, Predict and
Threshold, chooses *hematoxylin (H&E / IHC colour images)* in the Predict
dock's Channels box, predicts with the built-in default model and saves the
window, with the ``immunohistochemistry mask`` outlined over the image, to
``docs/images/hematoxylin.png`` (256 colours, to keep it small).

Run it under Xvfb on a headless machine (a real window, not the offscreen platform)::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_hematoxylin.py [docs/images/hematoxylin.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_segloop.demo import PLUGIN, wait_until

NAME = "immunohistochemistry"
TIMEOUT = 600.0


def _say(message: str) -> None:
    print(f"screenshot_hematoxylin: {message}", file=sys.stderr)


def _save_small(rgba: np.ndarray, path: Path) -> None:
    """Save a window grab as a 256-colour PNG (a third of the size of a true-colour one)."""
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    image.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def main(out: str = "docs/images/hematoxylin.png") -> int:
    """Predict the IHC sample with the hematoxylin conversion and save a picture of the window."""
    import napari
    from skimage import data

    viewer = napari.Viewer(title="napari-segloop: hematoxylin conversion", show=True)
    viewer.window.resize(1500, 950)
    viewer.add_image(data.immunohistochemistry(), name=NAME, rgb=True)
    _, model_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Model")
    predict_frame, predict_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict")
    session = model_dock.session
    model_dock.load_default()
    if not wait_until(lambda: not session.busy, TIMEOUT) or session.bundle is None:
        _say(f"could not load the default model: {model_dock.status.text()}")
        viewer.close()
        return 1
    predict_dock.image_combo.set_layer(viewer.layers[NAME])
    predict_dock.set_conversion("hematoxylin")
    if predict_dock.conversion() != ("hematoxylin", None):
        _say(f"the Channels box does not offer hematoxylin: {predict_dock.conversion()}")
        viewer.close()
        return 1
    if not predict_dock.run():
        _say(f"could not start the prediction: {predict_dock.status.text()}")
        viewer.close()
        return 1
    probability = f"{NAME} probability"
    if not wait_until(lambda: not session.busy and probability in viewer.layers, TIMEOUT):
        _say(f"the prediction did not finish: {predict_dock.status.text()}")
        viewer.close()
        return 1

    # The Threshold dock makes the mask at the model's threshold with its post-processing.
    threshold_frame, threshold_dock = viewer.window.add_plugin_dock_widget(PLUGIN, "Threshold", tabify=True)
    ready = wait_until(lambda: not threshold_dock.busy and threshold_dock.mask_layer() is not None, TIMEOUT)
    if not ready:
        _say(f"the mask did not appear: {threshold_dock.status.text()}")
        viewer.close()
        return 1
    mask = threshold_dock.mask_layer()
    share = float(np.mean(np.asarray(mask.data) > 0))
    _say(f"mask at threshold {threshold_dock.threshold:g}: {share:.1%} foreground")
    mask.contour = 2  # outlines, so the nuclei underneath stay visible
    mask.opacity = 1.0
    viewer.layers[probability].visible = False
    viewer.layers.selection.active = mask
    predict_frame.raise_()
    wait_until(lambda: False, 2.0)
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_small(viewer.screenshot(canvas_only=False, flash=False), path)
    threshold_frame.raise_()
    viewer.close()
    _say(f"saved {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
