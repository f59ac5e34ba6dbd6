"""Screenshots of the docs: a 3-class prediction and its per-class confusion in a real window.

Trains a small U-Net ("U-Net, light") for three classes (background,
interior, border) on the package's multi-class sample
(``core.synthetic.make_nuclei_classes``) with the product's trainer, then
opens napari with a held-out image and its ground truth, predicts it with the
Predict dock, scores it in the Classes dock, and saves the whole window
(1600 x 1000):

* ``multiclass_classes.png``: the class map over the image, the Classes dock
  with the per-class table and the confusion matrix;
* ``multiclass_confusion.png``: the TP / FP / FN of the border class.

Run it under Xvfb on a headless machine::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_multiclass.py [docs/images] [--seconds 90]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_segloop.demo import demo_panel, wait_until

TIMEOUT = 600.0
NAMES = ["background", "interior", "border"]


def train_model(seconds: float):
    """A 3-class "U-Net, light" trained on three 256² border-class samples."""
    import torch

    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.models.presets import find_preset
    from napari_segloop.core.models.registry import create_model
    from napari_segloop.core.synthetic import make_nuclei_classes
    from napari_segloop.core.training import TrainConfig, TrainingPair, train

    preset = find_preset("U-Net, light")
    torch.manual_seed(0)
    start = create_model(preset.architecture, preset.encoder, 1, 3, **preset.options)
    start.settings.class_names = list(NAMES)
    pairs = [TrainingPair(*make_nuclei_classes((256, 256), seed=300 + i), f"train {i}") for i in range(3)]
    result = run_to_end(train(start, pairs, TrainConfig(mode="dense", max_seconds=seconds, batch_size=4,
                                                        crop=128, patience=0, device="cpu")))
    return result.bundle


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.core.synthetic import make_nuclei_classes

    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="docs/images")
    parser.add_argument("--seconds", type=float, default=90.0)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bundle = train_model(args.seconds)

    viewer = napari.Viewer(title="napari-segloop: three classes (background, interior, border)")
    viewer.window.resize(1600, 1000)
    image, truth = make_nuclei_classes((384, 384), seed=401)
    image_layer = viewer.add_image(image, name="nuclei", colormap="gray")
    truth_layer = viewer.add_labels(truth, name="ground truth", opacity=0.0)
    _, panel = demo_panel(viewer)
    panel.model_dock.session.set_model(bundle, label="borders (3 classes)")
    for title in ("Model", "Threshold"):
        panel.section(title).collapse()
    predict = panel.predict_dock
    predict.image_combo.set_layer(image_layer)
    if not predict.run() or not wait_until(lambda: not predict.session.busy, TIMEOUT):
        print("screenshot_multiclass: the prediction did not run", file=sys.stderr)
        return 1
    panel.section("Predict").collapse()
    panel.section("Classes").expand()
    dock = panel.classes_dock
    dock.truth_combo.set_layer(truth_layer)
    if not wait_until(lambda: dock.scores is not None, TIMEOUT):
        print("screenshot_multiclass: no scores", file=sys.stderr)
        return 1
    viewer.layers["nuclei probability"].visible = False
    if "nuclei mask" in viewer.layers:  # the Threshold dock's binary view of one class
        viewer.layers["nuclei mask"].visible = False
    confusion = viewer.layers["nuclei class confusion"]
    confusion.visible = False
    viewer.layers.selection.active = image_layer
    wait_until(lambda: False, 1.5)
    viewer.screenshot(str(out / "multiclass_classes.png"), canvas_only=False)

    dock.class_combo.setCurrentIndex(2)  # the border class
    before = dock.scores
    wait_until(lambda: dock.scores is not before, TIMEOUT)
    viewer.layers["nuclei classes"].visible = False
    wait_until(lambda: False, 1.0)  # the Threshold dock redraws its binary view of the new class
    if "nuclei mask" in viewer.layers:
        viewer.layers["nuclei mask"].visible = False
    confusion.visible = True
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    camera.zoom = camera.zoom * 1.8
    wait_until(lambda: False, 1.5)
    viewer.screenshot(str(out / "multiclass_confusion.png"), canvas_only=False)
    print(dock.scores_text())
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
