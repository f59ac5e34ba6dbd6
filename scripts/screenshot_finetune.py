"""Screenshots of the docs: fine-tuning the default model on scribbles of the phase-contrast sample.

Opens the segloop panel with the phase-contrast sample (dark cells in bright
halos: the default model marks the halos), predicts it, then paints scribbles
(about 1 % of the pixels, in the left 40 % of the image, as
:func:`napari_segloop.core.synthetic.simulate_scribbles` paints them) in a new
scribble layer and trains in the Fine-tune section with the live preview on.
Saves three pictures of the whole window (1600 x 1000):

* ``finetune_before.png``: the default model's probabilities and the scribbles;
* ``finetune_running.png``: midway, with the curves and the preview;
* ``finetune_after.png``: the new model's probabilities when the run has saved it.

Run it under Xvfb on a headless machine::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_finetune.py [docs/images] [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from napari_segloop.demo import demo_panel, fit_view, wait_until

TIMEOUT = 900.0


def _say(message: str) -> None:
    print(f"screenshot_finetune: {message}", file=sys.stderr)


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.core.synthetic import simulate_scribbles
    from napari_segloop.sample_data import phase_contrast_cells

    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", default="docs/images")
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args(argv)
    out = Path(args.folder)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-segloop: fine-tuning on scribbles")
    viewer.window.resize(1600, 1000)
    (image, image_meta, _), (truth, _, _) = phase_contrast_cells()
    layer = viewer.add_image(image, **image_meta)
    _, panel = demo_panel(viewer)
    model_dock, predict_dock = panel.model_dock, panel.predict_dock
    session = model_dock.session
    predict_dock.image_combo.set_layer(layer)
    model_dock.load_default()
    ok = wait_until(lambda: not session.busy, TIMEOUT) and session.bundle is not None
    ok = ok and predict_dock.run() and wait_until(lambda: not session.busy, TIMEOUT)
    if not ok:
        _say(f"could not predict: {predict_dock.status.text()}")
        return 1
    for title in ("Model", "Predict", "Threshold"):
        panel.section(title).collapse()
    panel.scroll_to("Fine-tune")
    dock = panel.finetune_dock
    dock.folder_edit.setText(tempfile.mkdtemp(prefix="segloop-shots-"))
    dock.image_combo.set_layer(layer)
    scribbles = dock.new_scribble_layer()
    scribbles.data = simulate_scribbles(truth, (slice(None), slice(0, 200)), fraction=0.01, seed=0)
    dock.seconds_spin.setValue(args.seconds)
    fit_view(viewer)
    wait_until(lambda: False, 1.0)
    viewer.screenshot(str(out / "finetune_before.png"), canvas_only=False)
    if not dock.train():
        _say("training did not start")
        return 1
    wait_until(lambda: dock.state.seconds >= args.seconds * 0.4 or not session.busy, TIMEOUT)
    wait_until(lambda: False, 0.5)
    viewer.screenshot(str(out / "finetune_running.png"), canvas_only=False)
    if not wait_until(lambda: not session.busy, TIMEOUT):
        _say("training did not finish")
        return 1
    wait_until(lambda: False, 1.5)
    viewer.screenshot(str(out / "finetune_after.png"), canvas_only=False)
    _say(f"status: {dock.status.text()}")
    _say(f"saved {out}/finetune_before.png, finetune_running.png, finetune_after.png")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
