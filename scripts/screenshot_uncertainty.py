"""Screenshots of the docs: the Uncertainty section on the nuclei sample, and "Next region".

Opens the segloop panel with the synthetic nuclei sample, loads the default
model, computes the uncertainty (method chosen with ``--method``), outlines the
ten most uncertain regions of 96 px, then presses "Next region" twice, painting
a few scribbles in the first region as a user would. Saves pictures of the
whole window (1600 x 1000):

* ``uncertainty_ranked.png``: the uncertainty layer and the ranked rectangles;
* ``uncertainty_next.png``: after "Next region": zoomed on the region, paint tool on.

Run it under Xvfb on a headless machine::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_uncertainty.py [docs/images] [--method tta]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_segloop.demo import demo_panel, fit_view, wait_until

TIMEOUT = 900.0


def _say(message: str) -> None:
    print(f"screenshot_uncertainty: {message}", file=sys.stderr)


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.core.synthetic import simulate_scribbles
    from napari_segloop.sample_data import synthetic_nuclei

    parser = argparse.ArgumentParser()
    parser.add_argument("folder", nargs="?", default="docs/images")
    parser.add_argument("--method", default="tta", choices=("entropy", "tta"))
    args = parser.parse_args(argv)
    out = Path(args.folder)
    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-segloop: where to annotate next")
    viewer.window.resize(1600, 1000)
    (image, image_meta, _), (truth, _, _) = synthetic_nuclei()
    layer = viewer.add_image(image, **image_meta)
    _, panel = demo_panel(viewer)
    model_dock = panel.model_dock
    session = model_dock.session
    model_dock.load_default()
    if not (wait_until(lambda: not session.busy, TIMEOUT) and session.bundle is not None):
        _say("could not load the default model")
        return 1
    for title in ("Model", "Predict", "Threshold"):
        panel.section(title).collapse()
    panel.scroll_to("Uncertainty")
    dock = panel.uncertainty_dock
    dock.image_combo.set_layer(layer)
    dock.method_combo.setCurrentIndex(dock.method_combo.findData(args.method))
    dock.side_spin.setValue(96)
    if not (dock.compute() and wait_until(lambda: not session.busy, TIMEOUT)) or dock.queue is None:
        _say(f"the uncertainty was not computed: {dock.status.text()}")
        return 1
    fit_view(viewer)
    wait_until(lambda: False, 1.0)
    viewer.screenshot(str(out / "uncertainty_ranked.png"), canvas_only=False)
    first = dock.next_region()
    scribbles = dock.labels_combo.layer()
    y0, x0, y1, x1 = first.bbox
    scribbles.data = simulate_scribbles(truth, (slice(y0, y1), slice(x0, x1)), fraction=0.05, seed=0)
    second = dock.next_region()
    wait_until(lambda: False, 1.0)
    viewer.screenshot(str(out / "uncertainty_next.png"), canvas_only=False)
    _say(f"first region {first.bbox} (score {first.score:.3f}), then {second.bbox}; "
         f"{dock.status.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
