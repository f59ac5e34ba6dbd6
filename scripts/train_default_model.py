"""Train the built-in default nuclei model on procedurally generated images.

The training data come from :func:`napari_segloop.core.synthetic.make_nuclei`
with widely varied settings (:func:`napari_segloop.core.synthetic.random_params`):
object size, shape, density, clustering, blur, Poisson and Gaussian noise,
uneven background, intensity and camera ranges, texture, dim and very bright
objects. Everything is derived from ``--seed``; no real image is used.

Training runs the product's own loop, :func:`napari_segloop.core.training.train`
(the one the CLI's ``segloop train`` and the Fine-tune dock run), in mode
``dense`` from a new model: images percentile-normalised exactly as at
inference (1 and 99.8 percentiles of the whole image to 0 and 1, clipped to
``[-0.5, 1.5]``), patches rescaled by 0.6-1.6 (robustness to object size),
rotated, flipped, with random gamma and contrast changes. The target is the
foreground *minus a thin line where two objects touch*, so that connected
components of the thresholded prediction separate touching nuclei.

The weights with the best Dice on separate synthetic validation images (pairs
marked ``validation``) are saved as a float16 bundle with their provenance
(script, seed, commit, history).

Usage (about 12-15 minutes on one CPU thread)::

    HF_HUB_OFFLINE=1 python scripts/train_default_model.py

Quick smoke run (a minute; writes to a temporary folder unless ``--out``)::

    HF_HUB_OFFLINE=1 python scripts/train_default_model.py --quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from napari_segloop.core.bundle import Normalization

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/train_default_model.py"
DEFAULT_OUT = REPO / "src" / "napari_segloop" / "models" / "default"
NORM_LOW, NORM_HIGH, CLIP_MIN, CLIP_MAX = 1.0, 99.8, -0.5, 1.5


def git_commit() -> str:
    """Return the repository's HEAD commit, or ``"uncommitted"``."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=True, timeout=10,
        )
        return out.stdout.strip() or "uncommitted"
    except (OSError, subprocess.SubprocessError):
        return "uncommitted"


def uncommitted_sources() -> list[str]:
    """Training sources (this script, the generator) that differ from HEAD or are untracked."""
    paths = [SCRIPT, "src/napari_segloop/core/synthetic.py"]
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", *paths],
            capture_output=True, text=True, check=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return paths
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]


def touching_border(labels: np.ndarray) -> np.ndarray:
    """Pixels of an object that have a different object among their 8 neighbours.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels.

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    big = np.iinfo(np.int32).max
    lab = labels.astype(np.int32)
    hi = ndi.maximum_filter(lab, size=3)
    lo = ndi.minimum_filter(np.where(lab > 0, lab, big), size=3)
    return (lab > 0) & ((hi != lab) & (hi > 0) | ((lo != lab) & (lo != big)))


def target_mask(labels: np.ndarray) -> np.ndarray:
    """Training target: foreground minus a 3-4 px wide line where objects touch."""
    border = ndi.binary_dilation(touching_border(labels))  # 4-connected growth by 1 px
    return ((labels > 0) & ~border).astype(np.float32)


def make_dataset(
    seed: int, start: int, count: int, size: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Generate ``count`` synthetic images (raw float32) and int32 labels.

    Image ``i`` uses ``make_nuclei(seed=seed * 1_000_003 + start + i)`` with
    settings from ``random_params(default_rng([seed, start + i]))``.
    """
    from napari_segloop.core.synthetic import make_nuclei, random_params

    images = np.empty((count, size, size), dtype=np.float32)
    labels = np.empty((count, size, size), dtype=np.int32)
    params = []
    for i in range(count):
        rng = np.random.default_rng([seed, start + i])
        kwargs = random_params(rng)
        images[i], labels[i] = make_nuclei((size, size), seed * 1_000_003 + start + i, **kwargs)
        params.append(kwargs)
    return images, labels, params


def evaluate(
    model: Any, images: np.ndarray, labels: np.ndarray, thresholds: list[float]
) -> dict[float, dict[str, float]]:
    """Dice (pooled over the validation set) and mean object F1, with the product's own code.

    Images are normalised by the core (:func:`normalize_slice`, the inference path) and
    scored by :func:`napari_segloop.core.evaluation.evaluate` (objects matched at IoU > 0.5).
    """
    import torch

    from napari_segloop.core.bundle import Normalization
    from napari_segloop.core.evaluation import evaluate as score
    from napari_segloop.core.inference.normalize import normalize_slice

    norm = Normalization(kind="percentile", low=NORM_LOW, high=NORM_HIGH, clip=True,
                         clip_min=CLIP_MIN, clip_max=CLIP_MAX)
    model.eval()
    pixels: dict[float, Any] = dict.fromkeys(thresholds)
    f1 = dict.fromkeys(thresholds, 0.0)
    with torch.inference_mode():
        for img, lab in zip(images, labels, strict=True):
            x, _ = normalize_slice(img[None], norm)
            prob = torch.sigmoid(model(torch.from_numpy(x)[None]))[0, 0].numpy()
            for t in thresholds:
                ev = score(prob, lab, t)
                pixels[t] = ev.pixel if pixels[t] is None else pixels[t] + ev.pixel
                f1[t] += ev.objects.f1
    model.train()
    n = len(images)
    return {t: {"dice": pixels[t].dice, "object_f1": f1[t] / n} for t in thresholds}


def main(argv: list[str] | None = None) -> int:
    """Train and save the default model with the product's trainer; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1600, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192, help="training crop edge, px")
    parser.add_argument("--n-train", type=int, default=800, help="synthetic training images")
    parser.add_argument("--train-size", type=int, default=288, help="training image edge, px")
    parser.add_argument("--n-val", type=int, default=48, help="synthetic validation images")
    parser.add_argument("--val-size", type=int, default=256, help="validation image edge, px")
    parser.add_argument("--val-every", type=int, default=100, help="validate every N steps")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--encoder", default="tu-lcnet_075")
    parser.add_argument("--decoder-channels", default="64,32,24,16,8")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop early after this many minutes of training (keeps the best weights)")
    parser.add_argument("--out", default=None, help=f"bundle folder (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)

    if args.quick:
        args.steps, args.n_train, args.n_val, args.val_every = 30, 16, 4, 15
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="segloop-quick-")) / "default" if args.quick else DEFAULT_OUT
    )

    import torch

    from napari_segloop.core.bundle import BundleSettings, PostProcess, create_model, save_bundle
    from napari_segloop.core.events import Notice, Validation, run_to_end
    from napari_segloop.core.training import TrainConfig, TrainingPair, train

    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    log(f"generating {args.n_train} training and {args.n_val} validation images")
    train_x, train_y, _ = make_dataset(args.seed, 0, args.n_train, args.train_size)
    val_x, val_y, _ = make_dataset(args.seed, 10_000_000, args.n_val, args.val_size)
    # Dense labels: the target (foreground minus touching borders) is the foreground.
    pairs = [TrainingPair(x, target_mask(y).astype(np.uint8), f"train {i}")
             for i, (x, y) in enumerate(zip(train_x, train_y, strict=True))]
    pairs += [TrainingPair(x, target_mask(y).astype(np.uint8), f"validation {i}", validation=True)
              for i, (x, y) in enumerate(zip(val_x, val_y, strict=True))]
    log("data ready")

    decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    norm = Normalization(kind="percentile", low=NORM_LOW, high=NORM_HIGH, clip=True,
                         clip_min=CLIP_MIN, clip_max=CLIP_MAX)
    settings = BundleSettings(channel_names=["nuclei"], normalization=norm, object_size=20.0,
                              tile_size=256, overlap=0.25, threshold=0.5,
                              postprocess=PostProcess(min_size=15, fill_holes=True))
    bundle = create_model("Unet", args.encoder, in_channels=1, classes=1, encoder_weights=None,
                          settings=settings, decoder_channels=decoder)
    n_params = sum(p.numel() for p in bundle.model.parameters())
    log(f"Unet {args.encoder} decoder {decoder}: {n_params / 1e6:.2f} M parameters")

    blocks_per_image = -(-args.val_size // 64) ** 2
    config = TrainConfig(
        mode="dense", loss="bce+dice", max_steps=args.steps,
        max_seconds=60 * args.max_minutes if args.max_minutes else None, lr=args.lr,
        batch_size=args.batch, crop=args.crop, val_every=args.val_every, patience=0,
        max_val_blocks=args.n_val * blocks_per_image, seed=args.seed, device="cpu",
        threads=args.threads, zoom_range=(0.6, 1.6), gamma_range=(0.6, 1.7),
    )

    def on(event: object) -> None:
        if isinstance(event, Validation):
            log(f"step {event.step}: validation loss {event.loss:.4f}, Dice {event.dice:.4f}"
                + (" (best)" if event.best else ""))
        elif isinstance(event, Notice):
            log(f"{event.level}: {event.text}")

    result = run_to_end(train(bundle, pairs, config), on)
    model = result.bundle.model
    training = result.bundle.settings.provenance["training"]
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    sweep = evaluate(model, val_x, val_y, thresholds)
    # Threshold: best mean of validation Dice and object F1 (synthetic data only).
    threshold = max(thresholds, key=lambda t: sweep[t]["dice"] + sweep[t]["object_f1"])
    log(f"best step {result.best_step} (val Dice {result.best['dice']:.4f}); threshold sweep: "
        + json.dumps({str(t): {k: round(v, 4) for k, v in m.items()} for t, m in sweep.items()}))

    minutes = (time.perf_counter() - t0) / 60
    settings.threshold = float(threshold)
    settings.provenance = {
        "script": SCRIPT,
        "command": "python " + " ".join([SCRIPT, *(argv if argv is not None else sys.argv[1:])]),
        "seed": args.seed,
        "commit": git_commit(),
        "uncommitted_sources": uncommitted_sources(),
        "training_data": "synthetic only (napari_segloop.core.synthetic.make_nuclei "
                         "with random_params); no real images",
        "trainer": "napari_segloop.core.training.train (the product's training loop)",
        "hyperparameters": {
            "steps": args.steps, "batch": args.batch, "crop": args.crop,
            "n_train": args.n_train, "train_size": args.train_size, "n_val": args.n_val,
            "val_size": args.val_size, "lr": args.lr, "encoder": args.encoder,
            "decoder_channels": list(decoder), "loss": "BCE + Dice",
            "target": "foreground minus touching borders", "threads": args.threads,
            "zoom_range": list(config.zoom_range), "gamma_range": list(config.gamma_range),
        },
        "best_step": result.best_step,
        "best_val_dice": round(result.best["dice"], 4),
        "threshold_sweep": {str(t): {k: round(v, 4) for k, v in m.items()}
                            for t, m in sweep.items()},
        "stop_reason": result.stop_reason,
        "training_minutes": round(minutes, 1),
        "training_seconds": training["seconds"],
        "history": result.history,
        "note": (
            "Built-in default model: binary foreground of fluorescent nuclei-like objects "
            "on a dark background, trained only on procedurally generated images. "
            "Touching objects are separated by a thin gap, so connected components "
            "give instances. Works best for objects about 10-40 px across; give the "
            "object size for other scales. See docs/default_model.md."
        ),
    }
    result.bundle.settings = settings
    result.bundle.source = "default"
    save_bundle(result.bundle, out, dtype="float16")
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    log(f"saved {out} ({size / 1e6:.2f} MB) after {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
