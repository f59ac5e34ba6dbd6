"""Benchmark: the trainer's speed, napari's responsiveness while it trains, and Dice against time.

Prints progress lines, then as the last line one JSON object with:

``trainer_vs_minimal_ratio``
    Steps per second of the product's trainer
    (:func:`napari_segloop.core.training.train`: patch sampling around the
    scribbles, augmentation, masked loss with the keep term, validation every
    20 steps) divided by those of a minimal hand-written PyTorch loop on the
    same model, batch and crop size (random crops of a pre-normalised image,
    masked BCE, AdamW, BatchNorm statistics fixed as when fine-tuning), in the
    same run and thread count. Goal: at least 0.9.
``ui_stall_p95_ms``
    The 95th percentile of napari event-loop stalls (how late a 10 ms QTimer
    fires) in a real viewer while the Fine-tune dock trains with the live
    preview on. ``ui_stall_p95_idle_ms`` is the same timer with nothing
    running. Goal: at most 50 ms. Needs a display (run under ``xvfb-run``).
``dice_curve``
    For the phase-contrast sample (the default model fails on it) with about
    1 % of its pixels scribbled in its left 40 %, and for the nuclei sample
    (the default model is good there): pixel Dice against the full ground
    truth of the *unscribbled* right part, at t = 0 and after 10, 20, 30, 45
    and 60 s of training (the best weights so far, as Stop would save them),
    from the default model and from random initialisation.

Run (2-core CPU: about 8 minutes)::

    HF_HUB_OFFLINE=1 xvfb-run -a -s "-screen 0 1600x1000x24" python benchmarks/bench_training.py
    python benchmarks/bench_training.py --skip-ui --seconds 30     # no display, shorter
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHAPE = (512, 512)
PART = 200  # columns 0..PART-1 are scribbled; Dice is measured on the rest
MARKS = (10, 20, 30, 45, 60)


def _say(text: str) -> None:
    print(f"bench_training: {text}", file=sys.stderr, flush=True)


def sample(kind: str):
    """(image, labels, scribbles) of a sample."""
    from napari_segloop.core.synthetic import make_nuclei, make_phase_contrast, simulate_scribbles

    make = make_phase_contrast if kind == "phase contrast" else make_nuclei
    image, labels = make(SHAPE, seed=2024)
    scribbles = simulate_scribbles(labels, (slice(None), slice(0, PART)), fraction=0.01, seed=0)
    return image, labels, scribbles


def _start(kind: str):
    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.models.registry import create_model

    default = load_model("default")
    if kind == "default":
        return default
    import torch

    torch.manual_seed(0)
    new = create_model("Unet", default.encoder, 1, 1, settings=copy.deepcopy(default.settings),
                       decoder_channels=tuple(default.config["decoder_channels"]))
    new.settings.threshold = 0.5
    return new


def _dice_right(bundle, image, labels) -> float:
    from napari_segloop.core.evaluation import evaluate
    from napari_segloop.core.inference.predict import predict_array

    prob = predict_array(bundle, image, device="cpu")
    return float(evaluate(prob[:, PART:], labels[:, PART:] > 0, bundle.settings.threshold).pixel.dice)


def dice_curve(kind: str, start_kind: str, seconds: float, threads: int) -> dict:
    """Dice of the unscribbled part against training time (best weights so far)."""
    from napari_segloop.core.events import Snapshot, run_to_end
    from napari_segloop.core.training import TrainConfig, TrainingPair, train

    image, labels, scribbles = sample(kind)
    start = _start(start_kind)
    at_zero = _dice_right(start, image, labels)
    snaps: list[tuple[float, int, dict]] = []
    t0 = time.perf_counter()

    def on(event) -> None:
        if isinstance(event, Snapshot):
            snaps.append((time.perf_counter() - t0, event.step, event.state_dict))

    cfg = TrainConfig(mode="scribbles", max_seconds=seconds, device="cpu", threads=threads)
    result = run_to_end(train(start, [TrainingPair(image, scribbles, kind)], cfg), on)
    curve = {"0": round(at_zero, 4)}
    model = copy.deepcopy(result.bundle)
    for mark in [m for m in MARKS if m <= seconds] or [seconds]:
        chosen = [s for s in snaps if s[0] <= mark]
        if not chosen:
            curve[str(mark)] = round(at_zero, 4) if start_kind == "default" else None
            continue
        model.model.load_state_dict(chosen[-1][2])
        curve[str(mark)] = round(_dice_right(model, image, labels), 4)
    _say(f"{kind}, from {start_kind}: {curve} ({result.steps} steps, {result.stop_reason}, "
         f"scribbled {100 * (scribbles > 0).mean():.2f} % of the pixels)")
    return {"image": kind, "start": start_kind, "dice_by_seconds": curve, "steps": result.steps,
            "scribbled_percent": round(100 * float((scribbles > 0).mean()), 2)}


def speed(steps: int, threads: int) -> dict:
    """Steps per second: the product's trainer against a minimal loop (same model, batch, crop)."""
    import torch
    import torch.nn.functional as F

    from napari_segloop.core.events import TrainStep, run_to_end
    from napari_segloop.core.inference.normalize import normalize_slice
    from napari_segloop.core.training import TrainConfig, TrainingPair, train

    image, _, scribbles = sample("phase contrast")
    cfg = TrainConfig(mode="scribbles", max_steps=steps, device="cpu", threads=threads, patience=0)
    torch.set_num_threads(threads)

    times: list[float] = []

    def on(event) -> None:
        if isinstance(event, TrainStep):
            times.append(time.perf_counter())

    run_to_end(train(_start("default"), [TrainingPair(image, scribbles)], cfg), on)
    warm = 5
    product = (len(times) - warm - 1) / (times[-1] - times[warm])

    start = _start("default")
    model = copy.deepcopy(start.model).train()
    for module in model.modules():  # as the trainer does when fine-tuning: BatchNorm statistics fixed
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    x_full, _ = normalize_slice(image[None], start.settings.normalization)
    x_full = torch.from_numpy(x_full)
    target = torch.from_numpy((scribbles == 1).astype(np.float32))[None]
    weight = torch.from_numpy((scribbles > 0).astype(np.float32))[None]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    crop, batch = cfg.crop, cfg.batch_size
    marks = []
    for _ in range(steps):
        ys = rng.integers(0, SHAPE[0] - crop, batch)
        xs = rng.integers(0, SHAPE[1] - crop, batch)
        xb = torch.stack([x_full[:, y:y + crop, x:x + crop] for y, x in zip(ys, xs, strict=True)])
        yb = torch.stack([target[:, y:y + crop, x:x + crop] for y, x in zip(ys, xs, strict=True)])
        wb = torch.stack([weight[:, y:y + crop, x:x + crop] for y, x in zip(ys, xs, strict=True)])
        loss = F.binary_cross_entropy_with_logits(model(xb), yb, weight=wb, reduction="sum")
        loss = loss / wb.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        marks.append(time.perf_counter())
    minimal = (len(marks) - warm - 1) / (marks[-1] - marks[warm])
    _say(f"speed: trainer {product:.2f} steps/s, minimal loop {minimal:.2f} steps/s "
         f"(batch {batch}, crop {crop}, {threads} thread(s))")
    return {"trainer_steps_per_s": round(product, 3), "minimal_steps_per_s": round(minimal, 3),
            "trainer_vs_minimal_ratio": round(product / minimal, 3)}


def ui_stall(seconds: float) -> dict:
    """p95 of QTimer lateness in a real viewer: idle, and while the Fine-tune dock trains."""
    import napari
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_segloop.widgets.finetune_dock import FinetuneDock

    image, _labels, scribbles = sample("phase contrast")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(image, name="phase contrast")
    dock = FinetuneDock(viewer)
    viewer.window.add_dock_widget(dock, name="Fine-tune")
    layer = dock.new_scribble_layer()
    layer.data = scribbles
    dock.seconds_spin.setValue(int(seconds))
    dock.folder_edit.setText(os.path.join(os.environ.get("TMPDIR", "/tmp"), "segloop-bench-models"))
    app = QApplication.instance()
    interval = 10

    def measure(duration: float, busy) -> list[float]:
        late: list[float] = []
        last = [time.perf_counter()]

        def tick() -> None:
            now = time.perf_counter()
            late.append(max(0.0, (now - last[0]) * 1000 - interval))
            last[0] = now
            # What a user does meanwhile: pan a little (a redraw per tick).
            viewer.camera.center = (viewer.camera.center[0], viewer.camera.center[1] + 0.01)

        timer = QTimer()
        timer.setInterval(interval)
        timer.timeout.connect(tick)
        timer.start()
        end = time.perf_counter() + duration
        while time.perf_counter() < end and busy():
            app.processEvents()
            time.sleep(0.001)
        timer.stop()
        return late[5:]

    idle = measure(5.0, lambda: True)
    assert dock.train()
    # Skip the set-up (the starting model's prediction of the scribbled plane) and measure the steps.
    while dock.state.phase == "preparing":
        app.processEvents()
        time.sleep(0.005)
    busy = measure(seconds, lambda: dock.session.busy)
    while dock.session.busy:
        app.processEvents()
        time.sleep(0.01)
    previews = "live preview on" if dock.preview_check.isChecked() else "no preview"
    viewer.close()
    p95_idle = float(np.percentile(idle, 95))
    p95 = float(np.percentile(busy, 95))
    _say(f"UI stalls: p95 {p95:.1f} ms while training ({previews}; {len(busy)} ticks), "
         f"{p95_idle:.1f} ms idle; max {max(busy):.0f} ms")
    return {"ui_stall_p95_ms": round(p95, 1), "ui_stall_p95_idle_ms": round(p95_idle, 1),
            "ui_stall_max_ms": round(max(busy), 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="training time of each curve")
    parser.add_argument("--steps", type=int, default=60, help="steps of the speed comparison")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the product's auto policy)")
    parser.add_argument("--skip-ui", action="store_true", help="no napari window (no display)")
    parser.add_argument("--skip-curves", action="store_true")
    args = parser.parse_args(argv)
    from napari_segloop.core.inference.threads import resolve_threads

    threads = args.threads or resolve_threads("auto")
    out: dict = {"machine": platform.machine(), "cpus": os.cpu_count(), "threads": threads}
    out.update(speed(args.steps, threads))
    if not args.skip_curves:
        out["dice_curve"] = [dice_curve(kind, start, args.seconds, threads)
                             for kind in ("phase contrast", "nuclei") for start in ("default", "scratch")]
    if not args.skip_ui:
        out.update(ui_stall(min(args.seconds, 30.0)))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
