"""Which model should I use? Every architecture trained under the same time budget, one table.

Each architecture of the registry presets (``core.models.presets``) is
created fresh (seed 0, no pre-trained weights: there is no network here) and
trained with the product's trainer (``core.training.train``, dense labels,
the same batch, crop, augmentation and validation for all) for the same
wall-clock budget on the same data. Then, for each:

``params_M``
    Parameters in millions (and the share in the encoder).
``steps_per_s``
    Training steps per second (batch ``--batch-size`` of ``--crop``² patches).
``infer_MP_per_s``
    Inference megapixels per second through the tiler (``core.inference.predict``)
    on a 512 x 512 held-out image, after one warm-up.
``score``
    Pixel Dice at threshold 0.5 on held-out images the model never saw; for
    the multi-class sample, the mIoU (background, interior, border) of the
    arg-max class map.

A second block compares feature extraction (frozen encoder) with full
fine-tuning and with "frozen, then unfrozen" for a model whose encoder is
really pre-trained: the built-in default model (trained on synthetic nuclei)
fine-tuned on each dataset. With ``--encoder-weights imagenet`` (needs the
network or a cache) the ImageNet encoders get the same three rows.

Datasets: ``nuclei`` and ``phase`` are the package's synthetic samples
(train on three 256² images, test on two 512² images of other seeds);
``borders`` is the multi-class sample: the nuclei as three classes,
background / interior / a 2-px border (``core.synthetic.border_classes``),
the set-up that separates touching nuclei (3 softmax outputs; the
default-model block is left out, the default model being binary);
``--real DIR`` adds every ``NAME.tif`` with ``NAME_labels.tif`` in DIR
(train on the top half, test on the bottom half), for example the images of
``docs/finetuning_quality.md``.

Run (2-core CPU, 45 s per model: about 10 minutes per dataset)::

    HF_HUB_OFFLINE=1 python benchmarks/compare_architectures.py --datasets nuclei \\
        --real /tmp/ftq/data --only stardist_img2d ecoli_phase_t19 --seconds 45

Prints a Markdown table per dataset and, as the last line, one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _say(text: str) -> None:
    print(f"compare_architectures: {text}", file=sys.stderr, flush=True)


#: Classes of each dataset (2: binary).
CLASSES = {"borders": 3}


def synthetic(kind: str):
    """Train pairs (three 256² images) and test pairs (two 512² images) of a synthetic sample."""
    from napari_segloop.core.synthetic import border_classes, make_nuclei, make_phase_contrast

    make = make_phase_contrast if kind == "phase" else make_nuclei
    train = [make((256, 256), seed=100 + i) for i in range(3)]
    test = [make((512, 512), seed=200 + i) for i in range(2)]
    if kind == "borders":
        return ([(img, border_classes(lab)) for img, lab in train],
                [(img, border_classes(lab)) for img, lab in test])
    return ([(img, (lab > 0).astype(np.uint8)) for img, lab in train],
            [(img, lab > 0) for img, lab in test])


def real(path: Path, borders: bool = False):
    """Top half to train, bottom half to test, of a real image with instance labels.

    ``borders``: the instance labels as background / interior / border classes instead.
    """
    import tifffile

    from napari_segloop.core.synthetic import border_classes

    img = tifffile.imread(path).astype(np.float32)
    lab = tifffile.imread(path.with_name(path.stem + "_labels.tif"))
    if img.ndim == 3:  # a stack: its middle plane
        img, lab = img[img.shape[0] // 2], lab[lab.shape[0] // 2]
    half = img.shape[0] // 2
    if borders:
        cls = border_classes(lab)
        return [(img[:half], cls[:half])], [(img[half:], cls[half:])]
    fg = lab > 0
    return [(img[:half], fg[:half].astype(np.uint8))], [(img[half:], fg[half:])]


def dice(bundle, test, device: str) -> tuple[float, float]:
    """(pooled pixel Dice at 0.5 or mIoU, inference megapixels per second on the first test image)."""
    from napari_segloop.core.evaluation.multiclass import evaluate_classes
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.inference.predict import PredictOptions, predict

    opts = PredictOptions(device=device)
    run_to_end(predict(bundle, test[0][0][:256, :256], opts))  # warm-up
    tp = fp = fn = 0
    rate = 0.0
    pooled = None
    for i, (img, truth) in enumerate(test):
        t0 = time.perf_counter()
        prob = run_to_end(predict(bundle, img, opts))
        if i == 0:
            rate = img.size / 1e6 / (time.perf_counter() - t0)
        if bundle.classes > 1:
            m = evaluate_classes(prob, truth, bundle.classes)
            pooled = m if pooled is None else pooled + m
            continue
        mask = prob >= 0.5
        tp += int((mask & truth).sum())
        fp += int((mask & ~truth).sum())
        fn += int((~mask & truth).sum())
    if pooled is not None:
        return pooled.miou, rate
    return 2 * tp / max(1, 2 * tp + fp + fn), rate


def run_one(start, train_pairs, test, args, transfer: str = "full") -> dict:
    """Train ``start`` for the budget and measure it."""
    import torch

    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.training import TrainConfig, TrainingPair, train

    pairs = [TrainingPair(img, lab, f"train {i}") for i, (img, lab) in enumerate(train_pairs)]
    cfg = TrainConfig(mode="dense", max_seconds=args.seconds, batch_size=args.batch_size,
                      crop=args.crop, threads=args.threads, device=args.device, transfer=transfer,
                      patience=0, val_every=25, seed=0, amp=not args.no_amp)
    result = run_to_end(train(start, pairs, cfg))
    # Steps per second of training proper (the trainer's clock: no setup, no final checks).
    train_s = float(result.bundle.settings.provenance["training"]["seconds"])
    score, rate = dice(result.bundle, test, args.device)
    model = result.bundle.model
    encoder = getattr(model, "encoder", None)
    n = sum(p.numel() for p in model.parameters())
    n_enc = sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0
    out = {"params_M": round(n / 1e6, 2), "encoder_M": round(n_enc / 1e6, 2),
           "steps": result.steps, "steps_per_s": round(result.steps / max(train_s, 1e-9), 3),
           "infer_MP_per_s": round(rate, 3), "score": round(score, 4), "transfer": transfer,
           "input_multiple": result.bundle.input_multiple}
    del result, model
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return out


def table(rows: list[dict], title: str) -> str:
    """A Markdown table of one dataset's rows."""
    score = "mIoU" if "mIoU" in title else "Dice"
    head = ("| model | transfer | params (M) | encoder (M) | multiple | steps/s | steps | "
            f"inference MP/s | {score} |")
    lines = [f"### {title}", "", head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['transfer']} | {r['params_M']} | {r['encoder_M']} | "
                     f"{r['input_multiple']} | {r['steps_per_s']} | {r['steps']} | "
                     f"{r['infer_MP_per_s']} | {r['score']:.3f} |")
    return "\n".join(lines)


def main() -> int:
    """Run the comparison and print the tables and the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=["nuclei"], choices=("nuclei", "phase", "borders"))
    parser.add_argument("--real", type=Path, default=None, help="folder of NAME.tif + NAME_labels.tif")
    parser.add_argument("--only", nargs="*", default=None, help="names of real images to use")
    parser.add_argument("--real-classes", action="store_true",
                        help="also each real image as background / interior / border classes")
    parser.add_argument("--models", nargs="*", default=None, help="preset labels (default: all)")
    parser.add_argument("--seconds", type=float, default=45.0, help="training budget per model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    parser.add_argument("--base-channels", type=int, default=32,
                        help="base width of the plain-encoder networks (64 in the paper)")
    parser.add_argument("--encoder-weights", choices=("none", "imagenet"), default="none")
    parser.add_argument("--no-transfer", action="store_true", help="skip the frozen/full block")
    args = parser.parse_args()

    import torch

    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.models.presets import PRESETS, find_preset
    from napari_segloop.core.models.registry import create_model

    presets = [find_preset(m) for m in args.models] if args.models else list(PRESETS)
    data = {f"{k} (synthetic)": synthetic(k) for k in args.datasets}
    classes = {f"{k} (synthetic)": CLASSES.get(k, 2) for k in args.datasets}
    if args.real is not None:
        for path in sorted(args.real.glob("*.tif")):
            if path.stem.endswith("_labels") or (args.only and path.stem not in args.only):
                continue
            if path.with_name(path.stem + "_labels.tif").exists():
                data[path.stem] = real(path)
                if args.real_classes:
                    data[f"{path.stem} borders"] = real(path, borders=True)
                    classes[f"{path.stem} borders"] = 3
    results: dict[str, list[dict]] = {}
    for name, (train_pairs, test) in data.items():
        rows = results.setdefault(name, [])
        for preset in presets:
            options = dict(preset.options)
            if preset.encoder == "plain" and "base_channels" in options:
                options["base_channels"] = args.base_channels
            torch.manual_seed(0)
            k = classes.get(name, 2)
            start = create_model(preset.architecture, preset.encoder, 1, 1 if k <= 2 else k,
                                 encoder_weights=None if preset.encoder == "plain"
                                 else args.encoder_weights, **options)
            modes = ["full"]
            if args.encoder_weights == "imagenet" and preset.encoder != "plain" and not args.no_transfer:
                modes += ["frozen", "frozen_then_unfrozen"]
            for mode in modes:
                _say(f"{name}: {preset.label} ({mode})")
                row = run_one(start, train_pairs, test, args, mode)
                row["model"] = preset.label + (" (imagenet)" if args.encoder_weights == "imagenet"
                                               and preset.encoder != "plain" else "")
                rows.append(row)
                _say(f"  -> {row}")
        if not args.no_transfer and classes.get(name, 2) <= 2:
            for mode in ("frozen", "full", "frozen_then_unfrozen"):
                _say(f"{name}: default model fine-tuned ({mode})")
                row = run_one(load_model("default"), train_pairs, test, args, mode)
                row["model"] = "default model, fine-tuned"
                rows.append(row)
                _say(f"  -> {row}")
        what = ", mIoU" if classes.get(name, 2) > 2 else ""
        print(table(rows, f"{name}: {args.seconds:g} s of training per model, {args.device}{what}"),
              flush=True)
        print(flush=True)
    print(json.dumps({"device": args.device, "cpu": platform.processor() or platform.machine(),
                      "torch_threads": args.threads, "seconds_per_model": args.seconds,
                      "batch_size": args.batch_size, "crop": args.crop, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
