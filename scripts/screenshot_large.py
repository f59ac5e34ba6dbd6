"""Screenshot of the docs: a zarr-backed probability layer filled over a large image, in a real window.

Writes a synthetic 12,000 x 12,000 uint16 image of nuclei as a multiscale
OME-Zarr (the way a slide scanner's export looks), opens its levels in napari
as one multiscale layer backed by zarr (nothing is read whole), zooms on one
region (the corner of four blocks), and runs the Predict dock: the
``<image> probability`` layer is zarr-backed and filled block by block, the
blocks on screen first. The window (1600 x 1000) is saved to
``large_layer.png`` once two of the four blocks on screen are done.

Run it under Xvfb on a headless machine::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" \\
        .venv/bin/python scripts/screenshot_large.py [docs/images] [--size 12000]
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


def make_input(path: Path, size: int) -> list:
    """A multiscale uint16 OME-Zarr image of nuclei; returns its levels as zarr arrays."""
    import zarr

    from napari_segloop.core.io.omezarr import open_output
    from napari_segloop.core.synthetic import make_nuclei

    out = open_output(path, (size, size), np.uint16, axes="YX", chunk=1024,
                      fingerprint={"input": "synthetic"}, kind="mask", name="slide")
    out.live = True
    out.kind = "probability"  # levels are means of 2 x 2 pixels (intensities, not labels)
    tile = 2048
    for k, y in enumerate(range(0, size, tile)):
        for j, x in enumerate(range(0, size, tile)):
            h, w = min(tile, size - y), min(tile, size - x)
            img, _ = make_nuclei((h, w), seed=1000 * k + j)
            out.write((slice(y, y + h), slice(x, x + w)), np.clip(img, 0, 65535).astype(np.uint16))
    out.mark_complete()
    group = zarr.open_group(str(path), mode="r")
    return [group[k] for k in sorted(group.array_keys(), key=int)]


def main(argv: list[str]) -> int:
    import napari

    from napari_segloop.core.bundle import load_model

    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default="docs/images")
    parser.add_argument("--size", type=int, default=12000)
    parser.add_argument("--cache", default=None, help="a folder to keep (and reuse) the input image in")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="segloop-shot-"))
    path = root / f"slide{args.size}.ome.zarr"
    if (path / ".zattrs").exists() and '"complete": true' in (path / ".zattrs").read_text():
        import zarr

        group = zarr.open_group(str(path), mode="r")
        levels = [group[k] for k in sorted(group.array_keys(), key=int)]
    else:
        levels = make_input(path, args.size)

    title = f"napari-segloop: a {args.size:,} x {args.size:,} image, predicted block by block"
    viewer = napari.Viewer(title=title)
    viewer.window.resize(1600, 1000)
    image_layer = viewer.add_image(levels, multiscale=True, name="slide", colormap="gray",
                                   contrast_limits=(0, 1500))
    _, panel = demo_panel(viewer)
    panel.model_dock.session.set_model(load_model("default"), label="default")
    for title in ("Model", "Threshold"):
        panel.section(title).collapse()
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera
    # The view on the corner of four 2,048-px blocks: they come first, two of them shown done.
    corner = 2048 * round(args.size / 2 / 2048)
    camera.center = (corner, corner)
    camera.zoom = camera.zoom * 7
    wait_until(lambda: False, 2.0)
    predict = panel.predict_dock
    predict.image_combo.set_layer(image_layer)
    started = time.perf_counter()
    if not predict.run() or predict.run_state is None:
        print("screenshot_large: the prediction did not start", file=sys.stderr)
        return 1
    # The blocks on screen first: shoot once they are in and the rest is still running.
    if not wait_until(lambda: predict.run_state is None or (predict.run_state.live is not None
                                                            and _blocks_written(predict) >= 2), TIMEOUT):
        print("screenshot_large: no block was written", file=sys.stderr)
        return 1
    if predict.run_state is None:
        print(f"screenshot_large: the prediction stopped: {predict.status.text()}", file=sys.stderr)
        return 1
    viewer.layers.selection.active = viewer.layers["slide probability"]
    wait_until(lambda: False, 2.0)
    viewer.screenshot(str(out / "large_layer.png"), canvas_only=False)
    print(f"screenshot after {time.perf_counter() - started:.0f} s, {_blocks_written(predict)} blocks")
    predict.cancel()
    wait_until(lambda: not predict.session.busy, TIMEOUT)
    viewer.close()
    return 0


def _blocks_written(predict) -> int:
    state = predict.run_state
    if state is None or state.live is None:
        return 0
    return state.live.output.count_written() // 4  # a 2,048-px block is 4 chunks of 1,024


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
