"""Benchmark: the cost of uncertainty maps against plain inference, and whether they are informative.

Part 1, cost (one process, interleaved repeats after a warm-up): on an N x N
synthetic image (default 2048), the median time of
``core.active.uncertainty`` with each method divided by the median time of
``core.inference.predict`` (the plain prediction) on the same image, model and
settings. Goal: at most about the number of forward passes (1x for entropy,
one per augmentation for tta).

Part 2, informativeness: for each image with ground truth (the two package
samples, plus the real images of ``--real`` when that folder exists), split
into regions of ``--region`` px, the Spearman rank correlation between region
uncertainty and region error (share of wrong pixels at the model's threshold),
and the mean error of the top 10 % regions relative to the mean error. Models:
the default model, and an "early-round" model: the default fine-tuned for
``--steps`` steps on two random regions of the image (what an active-learning
round starts from).

Prints progress lines, then as the last line one JSON object.

Run::

    HF_HUB_OFFLINE=1 python benchmarks/bench_uncertainty.py
    HF_HUB_OFFLINE=1 python benchmarks/bench_uncertainty.py --size 1024 --repeats 1 --skip-quality
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REAL = ("stardist_img2d", "ecoli_phase_t19", "bbbc007_POS0008")


def _say(text: str) -> None:
    print(f"bench_uncertainty: {text}", file=sys.stderr, flush=True)


def cost(bundle, size: int, repeats: int, methods: list[tuple[str, int | None]]) -> dict:
    from napari_segloop.core.active import uncertainty
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.inference.predict import predict
    from napari_segloop.core.synthetic import make_nuclei

    image = make_nuclei((size, size), seed=7)[0]
    runs = {"predict": lambda: run_to_end(predict(bundle, image))}
    for method, passes in methods:
        runs[f"{method}{passes or ''}"] = (
            lambda m=method, p=passes: run_to_end(uncertainty(bundle, image, method=m, passes=p)))
    run_to_end(predict(bundle, image[:256, :256]))  # warm-up
    times: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats):
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            _say(f"repeat {r + 1}: {name} {times[name][-1]:.2f} s")
    base = statistics.median(times["predict"])
    out = {"size": size, "predict_s": round(base, 3)}
    for name in runs:
        if name != "predict":
            out[f"{name}_s"] = round(statistics.median(times[name]), 3)
            out[f"{name}_ratio"] = round(statistics.median(times[name]) / base, 3)
    return out


def _images(real: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from napari_segloop.sample_data import phase_contrast_cells, synthetic_nuclei

    out = {}
    samples = (("nuclei sample", synthetic_nuclei), ("phase-contrast sample", phase_contrast_cells))
    for name, sample in samples:
        (img, _, _), (lab, _, _) = sample()
        out[name] = (img, lab)
    if real.is_dir():
        import tifffile

        for name in REAL:
            if (real / f"{name}.tif").is_file():
                out[name] = (tifffile.imread(real / f"{name}.tif"),
                             tifffile.imread(real / f"{name}_labels.tif"))
    return out


def _early_model(bundle, image, truth, region: int, steps: int, seed: int = 0):
    """The default model fine-tuned on two random regions (dense ground truth there)."""
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.training import TrainConfig, TrainingPair, train
    from napari_segloop.core.training.annotations import BACKGROUND, FOREGROUND

    rng = np.random.default_rng(seed)
    h, w = truth.shape
    labels = np.zeros(truth.shape, np.uint8)
    for _ in range(2):
        y, x = rng.integers(0, max(1, h - region)), rng.integers(0, max(1, w - region))
        cut = truth[y:y + region, x:x + region] != 0
        labels[y:y + region, x:x + region] = np.where(cut, FOREGROUND, BACKGROUND)
    config = TrainConfig(mode="scribbles", max_steps=steps, patience=0, seed=seed, threads=1)
    return run_to_end(train(bundle, [TrainingPair(image, labels)], config)).bundle


def quality(bundle, real: Path, region: int, steps: int, methods: list[tuple[str, int | None]]) -> list[dict]:
    from napari_segloop.core.active import uncertainty
    from napari_segloop.core.active.quality import informativeness
    from napari_segloop.core.events import run_to_end

    rows = []
    for name, (img, lab) in _images(real).items():
        models = {"default": bundle, "early round": _early_model(bundle, img, lab, region, steps)}
        for model_name, model in models.items():
            for method, passes in methods:
                result = run_to_end(uncertainty(model, img, method=method, passes=passes))
                q = informativeness(result.uncertainty, result.probability, lab, region,
                                    threshold=model.settings.threshold)
                row = {"image": name, "model": model_name, "method": f"{method}{passes or ''}",
                       "spearman": round(q.spearman, 3), "top10_error_ratio": round(q.top_error_ratio, 2),
                       "mean_error": round(q.mean_error, 4), "regions": q.regions}
                _say(json.dumps(row))
                rows.append(row)
    return rows


def main(argv: list[str]) -> int:
    import torch

    from napari_segloop.core.bundle import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--region", type=int, default=64)
    p.add_argument("--steps", type=int, default=40, help="fine-tuning steps of the early-round model")
    p.add_argument("--real", type=Path, default=Path("/tmp/ftq/data"),
                   help="folder with the real images (see docs/finetuning_quality.md)")
    p.add_argument("--skip-quality", action="store_true")
    p.add_argument("--skip-cost", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_model("default")
    result: dict = {"machine": platform.processor() or platform.machine(), "threads": args.threads,
                    "torch": torch.__version__}
    if not args.skip_cost:
        result["cost"] = cost(bundle, args.size, args.repeats, [("entropy", None), ("tta", 4), ("tta", 8)])
    if not args.skip_quality:
        result["quality"] = quality(bundle, args.real, args.region, args.steps,
                                    [("entropy", None), ("tta", 4)])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
