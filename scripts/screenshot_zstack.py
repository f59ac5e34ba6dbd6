"""Screenshot of the docs: a confocal-like z-stack scored with 3-D objects.

Makes a synthetic confocal-like stack (20 ellipsoidal nuclei in 32 x 256 x
256 voxels, blurred more along z than in the plane, with shot noise) and its
3-D instance labels, opens the segloop panel, predicts the whole stack with
the built-in default model (slice by slice), and shows the errors against the
labels with **Objects: 3-D**: the Confusion section reports the nuclei as 20
three-dimensional objects (per-slice counting would report several hundred).
Saves the whole window, 1600 x 1000, to ``docs/images/zstack_3d_objects.png``.

Run it under Xvfb on a headless machine (a real window, not the offscreen platform)::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_zstack.py [docs/images/zstack_3d_objects.png]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from napari_segloop.demo import demo_panel, fit_view, wait_until

TIMEOUT = 900.0
SHAPE = (32, 256, 256)


def _say(message: str) -> None:
    print(f"screenshot_zstack: {message}", file=sys.stderr)


def confocal_stack(n: int = 20, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A confocal-like uint16 stack of ``n`` ellipsoidal nuclei and its 3-D instance labels."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    zz, yy, xx = np.indices(SHAPE, dtype=np.float32)
    labels = np.zeros(SHAPE, dtype=np.int32)
    centres: list[np.ndarray] = []
    while len(centres) < n:
        c = np.array([rng.uniform(8, SHAPE[0] - 8), rng.uniform(24, SHAPE[1] - 24),
                      rng.uniform(24, SHAPE[2] - 24)])
        if all(np.linalg.norm((c - o) * (2.5, 1, 1)) > 34 for o in centres):
            centres.append(c)
    for i, (cz, cy, cx) in enumerate(centres, start=1):
        rz, ry, rx = rng.uniform(5, 7), rng.uniform(11, 15), rng.uniform(11, 15)
        inside = ((zz - cz) / rz) ** 2 + ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        labels[inside & (labels == 0)] = i
    brightness = rng.uniform(0.6, 1.0, n + 1)
    brightness[0] = 0.05
    signal = ndi.gaussian_filter(brightness[labels].astype(np.float32), sigma=(2.0, 1.0, 1.0))
    texture = ndi.gaussian_filter(rng.standard_normal(SHAPE).astype(np.float32), 1.5)
    signal = np.clip(signal * (1 + 0.25 * texture), 0, None)
    image = rng.poisson(signal * 300 + 20).astype(np.uint16)
    return image, labels


def main(argv: list[str]) -> int:
    import napari

    out = Path(argv[0] if argv else "docs/images/zstack_3d_objects.png")
    image, labels = confocal_stack()
    viewer = napari.Viewer(title="napari-segloop: a z-stack with 3-D objects")
    viewer.window.resize(1600, 1000)
    viewer.add_image(image, name="nuclei stack", axis_labels=("z", "y", "x"))
    viewer.add_labels(labels, name="nuclei stack labels", axis_labels=("z", "y", "x"))
    _, panel = demo_panel(viewer)
    model_dock, predict_dock = panel.model_dock, panel.predict_dock
    session = model_dock.session
    predict_dock.image_combo.set_layer(viewer.layers["nuclei stack"])
    model_dock.load_default()
    ok = wait_until(lambda: not session.busy, TIMEOUT) and session.bundle is not None
    ok = ok and predict_dock.run() and wait_until(lambda: not session.busy, TIMEOUT)
    if not ok:
        _say(f"could not predict: {predict_dock.status.text()}")
        return 1
    for title in ("Model", "Predict"):
        panel.section(title).collapse()
    panel.section("Threshold").expand()
    panel.section("Confusion").expand()
    tdock, cdock = panel.threshold_dock, panel.confusion_dock
    cdock.truth_combo.set_layer(viewer.layers["nuclei stack labels"])
    done = wait_until(lambda: not tdock.busy and not cdock.busy and cdock.engine.objects_current, TIMEOUT)
    if not done:
        _say("the evaluation did not finish")
        return 1
    viewer.layers["nuclei stack labels"].visible = False  # as a user would: the overlay alone
    viewer.layers.selection.active = viewer.layers["nuclei stack confusion"]
    viewer.dims.set_current_step(0, SHAPE[0] // 2)
    panel.scroll_to("Confusion")
    fit_view(viewer)
    wait_until(lambda: not tdock.busy and not cdock.busy, TIMEOUT)
    wait_until(lambda: False, 1.0)
    _say(f"objects: {cdock.table.text('n_true_objects', 1)} true, {cdock.table.text('matched_objects', 1)} "
         f"matched; status: {cdock.status.text()}")
    out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(out), canvas_only=False)
    _say(f"saved {out}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
