"""Screenshot of the docs: the Threshold and Confusion docks scoring a zarr-backed map larger than memory.

Writes a synthetic N x N (default 12,000²) probability map of nuclei and its
ground truth as multiscale OME-Zarr, opens both in napari as zarr-backed
multiscale layers (nothing is read whole), lets the Threshold dock build its
curve from the histogram of the blocks, clicks Best, shows the errors
(TP / FP / FN, a lazy pyramid) and zooms on one region. The window
(1600 x 1000) is saved to ``large_eval.png``.

Run it under Xvfb on a headless machine::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_large_eval.py [docs/images] [--size 12000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_segloop.demo import demo_panel, wait_until

TIMEOUT = 900.0


def make_maps(root: Path, size: int) -> tuple[list, list]:
    """A probability map and its instance labels, both multiscale OME-Zarr; their levels."""
    import zarr
    from scipy import ndimage

    from napari_segloop.core.io.omezarr import open_output
    from napari_segloop.core.synthetic import make_nuclei

    prob = open_output(root / "prob.ome.zarr", (size, size), np.float32, axes="YX", chunk=1024,
                       fingerprint={"input": "synthetic"}, kind="probability", name="slide probability")
    truth = open_output(root / "truth.ome.zarr", (size, size), np.uint16, axes="YX", chunk=1024,
                        fingerprint={"input": "synthetic"}, kind="mask", name="slide truth")
    prob.live = truth.live = True
    tile = 2048
    for k, y in enumerate(range(0, size, tile)):
        for j, x in enumerate(range(0, size, tile)):
            h, w = min(tile, size - y), min(tile, size - x)
            _, labels = make_nuclei((h, w), seed=1000 * k + j)
            rng = np.random.default_rng(k * 7919 + j)
            # A plausible model output: soft edges, some missed and some spurious signal.
            ids = np.unique(labels)[1:]
            weak = np.isin(labels, rng.choice(ids, size=len(ids) // 8, replace=False)) if len(ids) else 0
            soft = ndimage.gaussian_filter((labels > 0).astype(np.float32) * (1 - 0.55 * weak), 2.5)
            drift = ndimage.gaussian_filter(rng.normal(0, 3.0, (h, w)), 12)  # stains, blur, debris
            p = np.clip(0.08 + 0.85 * soft + drift, 0, 1)
            index = (slice(y, y + h), slice(x, x + w))
            prob.write(index, p.astype(np.float32))
            truth.write(index, labels.astype(np.uint16))
    prob.mark_complete()
    truth.mark_complete()
    out = []
    for name in ("prob.ome.zarr", "truth.ome.zarr"):
        group = zarr.open_group(str(root / name), mode="r")
        out.append([group[k] for k in sorted(group.array_keys(), key=int)])
    return out[0], out[1]


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.widgets.session import METADATA_KEY

    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="docs/images")
    parser.add_argument("--size", type=int, default=12000)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="segloop-shot-"))
    prob_levels, truth_levels = make_maps(root, args.size)

    viewer = napari.Viewer(title=f"napari-segloop: a {args.size:,} x {args.size:,} zarr-backed map, "
                                 "scored from histograms")
    viewer.window.resize(1600, 1000)
    prob = viewer.add_image(prob_levels, multiscale=True, name="slide probability", colormap="magma",
                            contrast_limits=(0, 1),
                            metadata={METADATA_KEY: {"role": "probability", "image": "slide"}})
    truth = viewer.add_labels(truth_levels, multiscale=True, name="slide truth", visible=False)
    _, panel = demo_panel(viewer)
    for title in ("Model", "Predict"):
        panel.section(title).collapse()
    tdock = panel.threshold_dock
    state = tdock.state
    state.probability = prob
    state.set_truth(truth)
    started = time.perf_counter()
    if not wait_until(lambda: tdock.engine.whole_curve is not None, TIMEOUT):
        print("screenshot_large_eval: no curve", file=sys.stderr)
        return 1
    print(f"curve of {args.size ** 2 / 1e6:.0f} MP in {time.perf_counter() - started:.0f} s")
    tdock.best_threshold()
    wait_until(lambda: not tdock.busy, TIMEOUT)
    panel.section("Confusion").expand()
    state.show = "errors"
    camera = viewer.camera
    camera.center = (args.size / 2 + 700, args.size / 2 + 900)  # away from the seams of the tiles made
    camera.zoom = camera.zoom * 24
    wait_until(lambda: False, 3.0)
    wait_until(lambda: not tdock.busy, TIMEOUT)
    wait_until(lambda: False, 3.0)
    viewer.screenshot(str(out / "large_eval.png"), canvas_only=False)
    print(f"{tdock.status.text()}")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
