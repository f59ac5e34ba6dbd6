"""Train the built-in default nuclei model on procedurally generated images.

The training data come from :func:`napari_segloop.core.synthetic.make_nuclei`
with widely varied settings (:func:`napari_segloop.core.synthetic.random_params`):
object size, shape, density, clustering, blur, Poisson and Gaussian noise,
uneven background, intensity and camera ranges, texture, dim and very bright
objects. Everything is derived from ``--seed``; no real image is used.

Each training sample is a random crop, randomly rescaled (robustness to object
size), flipped/rotated, percentile-normalised exactly as the product does at
inference (1 and 99.8 percentiles of the whole image to 0 and 1, clipped to
``[-0.5, 1.5]``), with random gamma and contrast changes. The target is the
foreground *minus a thin line where two objects touch*, so that connected
components of the thresholded prediction separate touching nuclei.

The checkpoint with the best Dice on a held-out synthetic validation set is
saved as a float16 bundle with its provenance (script, seed, commit, history).

Usage (about 20-25 minutes on one CPU core)::

    HF_HUB_OFFLINE=1 python scripts/train_default_model.py

Quick smoke run (a minute; writes to a temporary folder unless ``--out``)::

    HF_HUB_OFFLINE=1 python scripts/train_default_model.py --quick
"""

from __future__ import annotations

import argparse
import copy
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
from napari_segloop.core.inference.normalize import apply_stats, compute_stats

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
SCRIPT = "scripts/train_default_model.py"
DEFAULT_OUT = REPO / "src" / "napari_segloop" / "models" / "default"
NORM_LOW, NORM_HIGH, CLIP_MIN, CLIP_MAX = 1.0, 99.8, -0.5, 1.5
#: The product's normalisation without the clip (augmentation comes first, then the clip).
UNCLIPPED = Normalization(kind="percentile", low=NORM_LOW, high=NORM_HIGH, clip=False)


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


class Sampler:
    """Random augmented training crops from a pool of synthetic images.

    Parameters
    ----------
    images, labels : numpy.ndarray
        The pool, ``(N, S, S)``.
    crop : int
        Output crop edge in pixels.
    rng : numpy.random.Generator
        Source of randomness.
    zoom : (float, float)
        Range of the random rescaling factor (sampled log-uniformly).
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        crop: int,
        rng: np.random.Generator,
        zoom: tuple[float, float] = (0.6, 1.6),
    ) -> None:
        self.images, self.labels, self.crop, self.rng, self.zoom = images, labels, crop, rng, zoom
        # Statistics as the product computes them at inference (one per whole image).
        self.stats = [compute_stats(im[None], UNCLIPPED) for im in images]

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """Return one ``(image, target)`` crop pair, float32 ``(crop, crop)``."""
        rng, crop = self.rng, self.crop
        i = int(rng.integers(len(self.images)))
        size = self.images.shape[-1]
        z = float(np.exp(rng.uniform(np.log(self.zoom[0]), np.log(self.zoom[1]))))
        region = int(min(size, max(16, round(crop / z))))
        y = int(rng.integers(0, size - region + 1))
        x = int(rng.integers(0, size - region + 1))
        raw = self.images[i, y:y + region, x:x + region]
        lab = self.labels[i, y:y + region, x:x + region]
        # Normalised with the core's code; a quarter of the crops as if the crop were the image.
        stats = compute_stats(raw[None], UNCLIPPED) if rng.random() < 0.25 else self.stats[i]
        img = np.array(raw, dtype=np.float32)[None]
        apply_stats(img, stats)
        img = img[0]
        if region != crop:
            factor = crop / region
            if factor < 1:  # anti-alias before shrinking
                img = ndi.gaussian_filter(img, 0.5 / factor - 0.5 if factor < 0.9 else 0)
            img = ndi.zoom(img, factor, order=1, grid_mode=True, mode="grid-mirror")
            lab = ndi.zoom(lab, factor, order=0, grid_mode=True, mode="grid-mirror")
            img, lab = _fit(img, crop), _fit(lab, crop)
        target = target_mask(lab)
        # Intensity augmentation on the normalised image.
        if rng.random() < 0.5:
            gamma = float(np.exp(rng.uniform(np.log(0.6), np.log(1.7))))
            img = np.sign(img) * np.abs(img) ** gamma
        if rng.random() < 0.5:
            img = img * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1)
        img = np.clip(img, CLIP_MIN, CLIP_MAX)
        k = int(rng.integers(4))
        img, target = np.rot90(img, k), np.rot90(target, k)
        if rng.random() < 0.5:
            img, target = img[:, ::-1], target[:, ::-1]
        return np.ascontiguousarray(img), np.ascontiguousarray(target)

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``n`` stacked samples as ``(n, 1, crop, crop)`` arrays."""
        pairs = [self.sample() for _ in range(n)]
        x = np.stack([p[0] for p in pairs])[:, None]
        y = np.stack([p[1] for p in pairs])[:, None]
        return x, y


def _fit(a: np.ndarray, n: int) -> np.ndarray:
    """Crop or edge-pad a 2-D array to ``(n, n)`` (zoom may be off by a pixel)."""
    a = a[:n, :n]
    ph, pw = n - a.shape[0], n - a.shape[1]
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
    return a


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
    """Train and save the default model; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1600, help="optimiser steps")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=192, help="training crop edge, px")
    parser.add_argument("--n-train", type=int, default=800, help="synthetic training images")
    parser.add_argument("--train-size", type=int, default=288, help="training image edge, px")
    parser.add_argument("--n-val", type=int, default=48, help="synthetic validation images")
    parser.add_argument("--val-every", type=int, default=100, help="validate every N steps")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--encoder", default="tu-lcnet_075")
    parser.add_argument("--decoder-channels", default="64,32,24,16,8")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop early after this many minutes (keeps the best checkpoint)")
    parser.add_argument("--out", default=None, help=f"bundle folder (default: {DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args(argv)

    if args.quick:
        args.steps, args.n_train, args.n_val, args.val_every = 30, 16, 4, 15
    out = Path(args.out) if args.out else (
        Path(tempfile.mkdtemp(prefix="segloop-quick-")) / "default" if args.quick else DEFAULT_OUT
    )

    import segmentation_models_pytorch as smp
    import torch

    from napari_segloop.core.bundle import (
        BundleSettings,
        Normalization,
        PostProcess,
        create_model,
        save_bundle,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    log(f"generating {args.n_train} training and {args.n_val} validation images")
    train_x, train_y, _ = make_dataset(args.seed, 0, args.n_train, args.train_size)
    val_x, val_y, _ = make_dataset(args.seed, 10_000_000, args.n_val, 256)
    sampler = Sampler(train_x, train_y, args.crop, np.random.default_rng([args.seed, 1]))
    log("data ready")

    decoder = tuple(int(c) for c in args.decoder_channels.split(","))
    bundle = create_model("Unet", args.encoder, in_channels=1, classes=1,
                          encoder_weights=None, decoder_channels=decoder)
    model = bundle.model
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log(f"Unet {args.encoder} decoder {decoder}: {n_params / 1e6:.2f} M parameters")

    dice_loss = smp.losses.DiceLoss(mode="binary", from_logits=True)
    bce_loss = smp.losses.SoftBCEWithLogitsLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1
    )

    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"dice": -1.0}
    best_state = copy.deepcopy(model.state_dict())
    running: list[float] = []
    stopped_early = False
    for step in range(1, args.steps + 1):
        x, y = sampler.batch(args.batch)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        logits = model(xt)
        loss = bce_loss(logits, yt) + dice_loss(logits, yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(loss.item())
        last = step == args.steps
        out_of_time = args.max_minutes is not None and (
            time.perf_counter() - t0 > 60 * args.max_minutes
        )
        if step % args.val_every == 0 or last or out_of_time:
            metrics = evaluate(model, val_x, val_y, [0.5])[0.5]
            entry = {
                "step": step,
                "train_loss": round(float(np.mean(running)), 4),
                "val_dice": round(metrics["dice"], 4),
                "val_object_f1": round(metrics["object_f1"], 4),
                "lr": round(sched.get_last_lr()[0], 6),
                "minutes": round((time.perf_counter() - t0) / 60, 2),
            }
            running = []
            history.append(entry)
            if metrics["dice"] > best["dice"]:
                best = {"dice": metrics["dice"], "step": step}
                best_state = copy.deepcopy(model.state_dict())
            log(json.dumps(entry))
        if out_of_time and not last:
            log(f"stopping early after {args.max_minutes} minutes at step {step}")
            stopped_early = True
            break

    model.load_state_dict(best_state)
    model.eval()
    thresholds = [0.3, 0.4, 0.5, 0.6, 0.7]
    sweep = evaluate(model, val_x, val_y, thresholds)
    # Threshold: best mean of validation Dice and object F1 (synthetic data only).
    threshold = max(thresholds, key=lambda t: sweep[t]["dice"] + sweep[t]["object_f1"])
    log(f"best step {best['step']} (val Dice {best['dice']:.4f}); threshold sweep: "
        + json.dumps({str(t): {k: round(v, 4) for k, v in m.items()} for t, m in sweep.items()}))

    minutes = (time.perf_counter() - t0) / 60
    bundle.settings = BundleSettings(
        channel_names=["nuclei"],
        normalization=Normalization(kind="percentile", low=NORM_LOW, high=NORM_HIGH,
                                    clip=True, clip_min=CLIP_MIN, clip_max=CLIP_MAX),
        object_size=20.0,
        tile_size=256,
        overlap=0.25,
        threshold=float(threshold),
        postprocess=PostProcess(min_size=15, fill_holes=True),
        provenance={
            "script": SCRIPT,
            "command": "python " + " ".join([SCRIPT, *(argv if argv is not None else sys.argv[1:])]),
            "seed": args.seed,
            "commit": git_commit(),
            "uncommitted_sources": uncommitted_sources(),
            "training_data": "synthetic only (napari_segloop.core.synthetic.make_nuclei "
                             "with random_params); no real images",
            "hyperparameters": {
                "steps": args.steps, "batch": args.batch, "crop": args.crop,
                "n_train": args.n_train, "train_size": args.train_size, "n_val": args.n_val,
                "lr": args.lr, "encoder": args.encoder, "decoder_channels": list(decoder),
                "loss": "BCE + Dice", "target": "foreground minus touching borders",
                "threads": args.threads,
            },
            "best_step": best["step"],
            "best_val_dice": round(best["dice"], 4),
            "threshold_sweep": {str(t): {k: round(v, 4) for k, v in m.items()}
                                for t, m in sweep.items()},
            "stopped_early": stopped_early,
            "training_minutes": round(minutes, 1),
            "history": history,
            "note": (
                "Built-in default model: binary foreground of fluorescent nuclei-like objects "
                "on a dark background, trained only on procedurally generated images. "
                "Touching objects are separated by a thin gap, so connected components "
                "give instances. Works best for objects about 10-40 px across; give the "
                "object size for other scales. See docs/default_model.md."
            ),
        },
    )
    save_bundle(bundle, out, dtype="float16")
    size = sum(f.stat().st_size for f in Path(out).iterdir() if f.is_file())
    log(f"saved {out} ({size / 1e6:.2f} MB) after {minutes:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
