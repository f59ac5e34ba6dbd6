"""Benchmark: the Threshold and Confusion docks in a real napari window, on a large probability map.

Needs a display (run it under ``xvfb-run -a -s "-screen 0 1600x1000x24"`` on a
headless machine). Both docks are open and the Confusion dock shows the errors.
Prints progress lines, then as the last line one JSON object whose ``cases``
hold, per map size (2048² and 4096² by default):

``tick_ratio``
    Median time of one slider step, from ``slider.setValue`` until the
    viewer's layers (confusion preview contrast limits, the confusion Labels
    hidden when stale) and the metrics table (pixel metrics
    of the whole image) reflect the new threshold, divided by the median
    time of a bare ``np.greater(prob, t, out=buf)`` on the same map in the
    same run. Goal: <= 3. Every step is checked (outside the timing) against
    the expected contrast limits and ``ThresholdCurve`` counts.
``tick_ms``, ``greater_ms``
    The two medians.
``frame_ms``
    Median time napari then takes to redraw the canvas (processing the Qt
    events after a step; the GPU work, not part of the tick).
``metrics_ms``
    Median time of all pixel metrics (as a dict) for a new slider value
    from the cached curve. Goal: < 1 ms.
``release_ms``
    Median time from the slider's release until the ``<image> mask`` Labels
    (with post-processing: fill holes, remove small objects) and the
    ``<image> confusion`` Labels are written and shown and the metrics table
    shows the pixel metrics of that mask (computed in a worker; the GUI stays
    responsive meanwhile). Goal: <= 1000 ms at 2048². ``release_core_ms`` is
    the same work as plain core calls on one thread (``make_mask``,
    ``confusion_image``, pixel ``evaluate``) and ``release_ratio`` the quotient.
``objects_ms``
    Median time from the release until the object metrics follow (shown as
    "…" until then).
``setup_ms``
    Time from opening the docks to everything built (curves, previews, first
    Labels).

Run::

    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_threshold.py
    xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_threshold.py --sizes 2048 --ticks 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np


def say(message: str) -> None:
    print(f"bench_threshold: {message}", flush=True)


def make_case(size: int, tile: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic nuclei (tiled to ``size``) and a realistic probability map: blurred truth plus noise."""
    from scipy import ndimage as ndi

    from napari_segloop.core.synthetic import make_nuclei

    tile = min(tile, size)
    reps = -(-size // tile)
    _, labels = make_nuclei((tile, tile), seed=seed)
    labels = labels.astype(np.int32)
    n = int(labels.max())
    truth = np.zeros((reps * tile, reps * tile), dtype=np.int32)
    for i in range(reps):
        for j in range(reps):
            k = i * reps + j
            truth[i * tile:(i + 1) * tile, j * tile:(j + 1) * tile] = np.where(labels > 0, labels + k * n, 0)
    truth = np.ascontiguousarray(truth[:size, :size])
    rng = np.random.default_rng(seed)
    soft = ndi.gaussian_filter((truth > 0).astype(np.float32), 2.0)
    noise = ndi.gaussian_filter(rng.standard_normal((size, size), dtype=np.float32), 1.5) * 0.6
    logits = 8.0 * (soft - 0.5) + noise
    prob = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return prob, truth


def run_case(size: int, args: argparse.Namespace) -> dict | None:
    """Open a window with both docks on a ``size`` x ``size`` map; measure ticks and releases."""
    import napari
    from qtpy.QtWidgets import QApplication

    from napari_segloop.core.bundle import PostProcess
    from napari_segloop.core.evaluation import confusion_image, evaluate
    from napari_segloop.core.masks import make_mask
    from napari_segloop.widgets import previews
    from napari_segloop.widgets.confusion_dock import ConfusionDock
    from napari_segloop.widgets.evaluation import format_value, slider_threshold
    from napari_segloop.widgets.session import METADATA_KEY
    from napari_segloop.widgets.threshold_dock import ThresholdDock

    say(f"making a {size} x {size} probability map and ground truth")
    prob, truth = make_case(size, args.tile, args.seed)
    say(f"{int(truth.max())} true objects, {100 * np.count_nonzero(truth) / truth.size:.1f}% foreground")

    viewer = napari.Viewer(title="bench_threshold", show=True)
    viewer.window.resize(1600, 1000)
    viewer.add_image(prob, name="nuclei probability", colormap="magma", contrast_limits=(0, 1),
                     metadata={METADATA_KEY: {"role": "probability", "image": "nuclei"}})
    viewer.add_labels(truth, name="nuclei ground truth", opacity=0.4)
    app = QApplication.instance()

    def settle(condition, timeout: float = 600.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            app.processEvents()
            if condition():
                return True
            time.sleep(0.002)
        return condition()

    t0 = time.perf_counter()
    tdock = ThresholdDock(viewer)
    cdock = ConfusionDock(viewer)
    engine = tdock.engine
    viewer.window.add_dock_widget(tdock, name="Threshold")
    viewer.window.add_dock_widget(cdock, name="Confusion", tabify=True)
    tdock.set_postprocess(PostProcess())
    tdock.set_threshold(0.5)
    idle = lambda: not tdock.busy and not cdock.busy  # noqa: E731
    if not settle(lambda: idle() and tdock.curve is not None and engine.objects_current):
        say("the docks did not become ready")
        return None
    setup_ms = (time.perf_counter() - t0) * 1e3
    say(f"docks ready in {setup_ms:.0f} ms (curves, previews, first Labels, object metrics)")
    curve = tdock.curve
    on_truth, on_background = cdock.preview_layers()
    assert engine.shown() == "errors", "the Confusion dock shows the errors"

    buf = np.empty(prob.shape, dtype=bool)
    greater = []
    for _ in range(30):
        t = float(np.float32(np.random.default_rng().random()))
        s = time.perf_counter()
        np.greater(prob, t, out=buf)
        greater.append(time.perf_counter() - s)
    greater_ms = statistics.median(greater) * 1e3
    say(f"bare np.greater: {greater_ms:.2f} ms")

    rng = np.random.default_rng(args.seed)
    steps = rng.integers(50, 950, size=args.ticks)
    ticks, frames = [], []
    for k, step in enumerate(steps.tolist()):
        if step == tdock.slider.value():
            step += 1
        s = time.perf_counter()
        tdock.slider.setValue(step)
        ticks.append(time.perf_counter() - s)
        t = slider_threshold(step)
        limits = previews.preview_limits(t)
        assert tuple(on_truth.contrast_limits) == limits and tuple(on_background.contrast_limits) == limits
        assert on_truth.visible and on_background.visible
        assert not cdock.confusion_layer().visible
        assert cdock.table.text("tp") == format_value(curve.counts_at_step(step)[0])
        s = time.perf_counter()
        app.processEvents()
        frames.append(time.perf_counter() - s)
        if k % 20 == 19:
            say(f"{k + 1} ticks, median {statistics.median(ticks) * 1e3:.2f} ms")
    tick_ms = statistics.median(ticks) * 1e3
    frame_ms = statistics.median(frames) * 1e3
    say(f"tick {tick_ms:.2f} ms (max {max(ticks) * 1e3:.1f} ms), redraw {frame_ms:.1f} ms")

    metric_times = []
    for step in rng.integers(0, 1001, size=500).tolist():
        s = time.perf_counter()
        curve.metrics(slider_threshold(step)).to_dict()
        metric_times.append(time.perf_counter() - s)
    metrics_ms = statistics.median(metric_times) * 1e3

    pp = PostProcess(min_size=30, fill_holes=True)
    tdock.set_postprocess(pp)
    settle(idle)
    releases, objects, cores = [], [], []
    for step in rng.integers(300, 700, size=args.releases).tolist():
        t = slider_threshold(step)
        tdock.slider.setValue(step)
        s = time.perf_counter()
        tdock.slider.sliderReleased.emit()

        def drawn() -> bool:
            if not (engine.mask_current and engine.score_current):
                return False
            layer = cdock.confusion_layer()
            ev = engine.score.evaluation
            return (layer is not None and layer.visible and tdock.mask_layer() is not None
                    and cdock.table.text("tp") == format_value(ev.pixel.tp))

        ok = settle(drawn)
        releases.append(time.perf_counter() - s)
        ok = ok and settle(lambda: engine.objects_current)
        objects.append(time.perf_counter() - s)
        if not ok:
            say("a release did not finish")
            return None
        settle(idle)
        # the same work in plain core calls on this thread: the baseline of the release
        s = time.perf_counter()
        mask = make_mask(prob, t, pp)
        confusion_image(mask, truth)
        evaluate(mask, truth, None, objects=False)
        cores.append(time.perf_counter() - s)
        say(f"release at {t:.3f}: drawn in {releases[-1] * 1e3:.0f} ms, objects in {objects[-1] * 1e3:.0f} ms"
            f" (core alone {cores[-1] * 1e3:.0f} ms)")
    release_ms = statistics.median(releases) * 1e3
    objects_ms = statistics.median(objects) * 1e3
    core_ms = statistics.median(cores) * 1e3
    t = tdock.threshold
    expected = make_mask(prob, t, pp)
    assert np.array_equal(tdock.mask_layer().data, expected), "mask differs from the core's"
    assert np.array_equal(cdock.confusion_layer().data, confusion_image(expected, truth)), "confusion differs"
    say("mask and confusion Labels equal the core's results for the post-processed mask")
    viewer.close()
    return {
        "size": size,
        "tick_ratio": round(tick_ms / greater_ms, 3),
        "tick_ms": round(tick_ms, 3),
        "greater_ms": round(greater_ms, 3),
        "frame_ms": round(frame_ms, 2),
        "metrics_ms": round(metrics_ms, 4),
        "release_ms": round(release_ms, 1),
        "release_core_ms": round(core_ms, 1),
        "release_ratio": round(release_ms / core_ms, 3),
        "objects_ms": round(objects_ms, 1),
        "setup_ms": round(setup_ms, 1),
        "ticks": len(ticks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--tile", type=int, default=2048, help="edge of the generated nuclei tile")
    parser.add_argument("--ticks", type=int, default=60)
    parser.add_argument("--releases", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
        parser.error("needs a display: run it under xvfb-run -a -s '-screen 0 1600x1000x24'")
    import napari

    results = []
    for size in args.sizes:
        result = run_case(size, args)
        if result is None:
            return 1
        results.append(result)
    print(json.dumps({
        "cases": results,
        "python": platform.python_version(),
        "napari": napari.__version__,
        "cpus": os.cpu_count(),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
