"""Fine-tuning quality on real images: Dice of the unannotated part against training time.

For every ``--pair IMAGE GT`` (TIFF files; ``GT`` holds a mask or instance
labels of the image's shape, without a channel axis) the image is split into
an *annotated* part and a *scored* part:

* 2-D image: the left ``--annotated-share`` (40 %) of the columns is
  annotated, the other columns are scored;
* stack ``(Z, Y, X)``: the slices given by ``--slices`` after the pair (by
  default the first half, at least one) are annotated, the others scored.

Then, with the product's own trainer
(:func:`napari_segloop.core.training.train`):

``default``
    the built-in default model, no training (its Dice at t = 0);
``ft-scribbles``
    fine-tuning the default model on simulated scribbles
    (:func:`napari_segloop.core.synthetic.simulate_scribbles`, about
    ``--fraction`` = 1 % of the annotated part's pixels) on the whole image;
``scratch-scribbles``
    the same scribbles, from a new Unet with the default model's encoder and
    decoder channels (as ``benchmarks/bench_training.py`` builds it);
``ft-dense``
    fine-tuning the default model in mode ``dense`` on the annotated part
    alone (a cropped image or the annotated slices) with its full ground truth.

Every training run has a budget of ``--seconds`` on the trainer's clock (the
preparation of the annotated planes is not counted, as in the product). The
Dice of the scored part, at the model's own threshold (pixels, no
post-processing), is measured for the best weights so far (the trainer's
``Snapshot`` events, what Stop would save) at t = 0, 10, 20, 30, 45 and 60 s
(those within the budget), and for the weights the run returns ("final").
Times are measured from the end of the preparation. For the default model and
the final weights the object F1 of the scored part is given too (connected
components after the model's post-processing, matched to the true objects at
IoU > 0.5, slice by slice in a stack; objects cut by the split count as they
are cut). For a stack the Dice of each scored slice is in the JSON.

Prints a Markdown table per image and a summary, progress on stderr, and as
the last line one JSON object with all numbers.

Run (2-core CPU, 1 thread: about 3 minutes per pair; the images are extracted from
PyPI wheels as ``docs/finetuning_quality.md`` describes)::

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/evaluate_finetuning.py --threads 1 --seconds 60 \\
        --pair /tmp/ftq/data/stardist_img2d.tif /tmp/ftq/data/stardist_img2d_labels.tif \\
        --pair /tmp/ftq/data/ecoli_phase_t19.tif /tmp/ftq/data/ecoli_phase_t19_labels.tif \\
        --pair /tmp/ftq/data/ecoli_phase_t19.tif /tmp/ftq/data/ecoli_phase_t19_labels.tif \\
            --convert invert \\
        --pair /tmp/ftq/data/bbbc007_POS0008.tif /tmp/ftq/data/bbbc007_POS0008_labels.tif \\
        --pair /tmp/ftq/data/cho3d_t0.tif /tmp/ftq/data/cho3d_t0_labels.tif --slices 0,1 \\
        --pair /tmp/ftq/data/cho3d_t0.tif /tmp/ftq/data/cho3d_t0_labels.tif --slices 1,3

``--convert`` and ``--slices`` apply to the ``--pair`` before them; add ``--seed 1``
for a second set of scribbles and validation split. ``--runs`` picks a subset
of the runs. Results and their reading: ``docs/finetuning_quality.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MARKS = (0, 10, 20, 30, 45, 60)
RUNS = ("default", "ft-scribbles", "scratch-scribbles", "ft-dense")
TITLES = {
    "default": "default model, no training",
    "ft-scribbles": "fine-tune default, scribbles",
    "scratch-scribbles": "from scratch, scribbles",
    "ft-dense": "fine-tune default, dense (annotated part only)",
}


def _say(text: str) -> None:
    print(f"evaluate_finetuning: {text}", file=sys.stderr, flush=True)


class _PairAction(argparse.Action):
    """``--pair IMAGE GT``: start a new entry of ``namespace.pairs``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        pairs = getattr(namespace, "pairs", None) or []
        pairs.append({"image": values[0], "truth": values[1], "convert": "none", "slices": None})
        namespace.pairs = pairs


class _PairOption(argparse.Action):
    """``--convert`` / ``--slices``: an option of the last ``--pair``."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        pairs = getattr(namespace, "pairs", None)
        if not pairs:
            parser.error(f"{option_string} must follow a --pair")
        if self.dest == "slices":
            try:
                values = [int(v) for v in str(values).split(",") if v.strip()]
            except ValueError:
                parser.error(f"--slices takes comma-separated slice numbers, not {values!r}")
        pairs[-1][self.dest] = values


def read_tiff(path: str | Path) -> np.ndarray:
    """Read a TIFF file as a numpy array."""
    import tifffile

    return np.asarray(tifffile.imread(str(path)))


def split(image: np.ndarray, truth: np.ndarray, share: float, slices: list[int] | None) -> dict[str, Any]:
    """The annotated and scored parts of an image.

    Parameters
    ----------
    image, truth : numpy.ndarray
        The image (optionally with a trailing channel axis) and its labels.
    share : float
        2-D: the annotated share of the columns (from the left).
    slices : list of int, optional
        Stack: the annotated slices (default: the first half, at least one).

    Returns
    -------
    dict
        ``kind`` ("2d" or "stack"), ``annotated`` and ``scored`` (index
        tuples into ``truth``), ``cut`` (2-D) or ``slices`` / ``scored_slices``
        (stack), and a readable ``text``.
    """
    if image.shape[:truth.ndim] != truth.shape or image.ndim > truth.ndim + 1:
        raise SystemExit(f"Ground truth {truth.shape} does not match the image {image.shape} "
                         "(only a trailing channel axis may differ).")
    if truth.ndim == 2:
        w = truth.shape[1]
        cut = round(share * w)
        if not 0 < cut < w:
            raise SystemExit(f"--annotated-share {share} leaves no annotated or no scored column.")
        return {"kind": "2d", "cut": cut, "annotated": (slice(None), slice(0, cut)),
                "scored": (slice(None), slice(cut, None)),
                "text": f"columns 0-{cut - 1} annotated ({100 * cut / w:.0f} %), {cut}-{w - 1} scored"}
    if truth.ndim != 3:
        raise SystemExit(f"Only 2-D images and (Z, Y, X) stacks are supported; got labels {truth.shape}.")
    n = truth.shape[0]
    chosen = sorted(set(slices)) if slices else list(range(max(1, n // 2)))
    if any(not 0 <= z < n for z in chosen) or len(chosen) >= n:
        raise SystemExit(f"--slices {chosen} must be slices of 0..{n - 1} and leave some to score.")
    scored = [z for z in range(n) if z not in chosen]
    return {"kind": "stack", "slices": chosen, "scored_slices": scored,
            "annotated": (chosen,), "scored": (scored,),
            "text": f"slices {chosen} annotated, slices {scored} scored"}


def scribbles_for(truth: np.ndarray, part: dict[str, Any], fraction: float, seed: int) -> np.ndarray:
    """Simulated scribbles on the annotated part, about ``fraction`` of its pixels."""
    from napari_segloop.core.synthetic import simulate_scribbles

    if part["kind"] == "2d":
        share = part["cut"] / truth.shape[1]
        return simulate_scribbles(truth, part["annotated"], fraction=fraction * share, seed=seed)
    out = np.zeros(truth.shape, np.uint8)
    for z in part["slices"]:
        out[z] = simulate_scribbles(truth[z], None, fraction=fraction, seed=seed + z)
    return out


def scratch_model(default):
    """A new Unet with the default model's encoder, decoder channels and settings (threshold 0.5)."""
    import torch

    from napari_segloop.core.models.registry import create_model

    torch.manual_seed(0)
    new = create_model("Unet", default.encoder, 1, 1, settings=copy.deepcopy(default.settings),
                       decoder_channels=tuple(default.config["decoder_channels"]))
    new.settings.threshold = 0.5
    return new


class Scorer:
    """Dice of the scored part of one image for a model (probability map cached per weights)."""

    def __init__(self, image: np.ndarray, truth: np.ndarray, part: dict[str, Any], convert: str) -> None:
        self.image, self.part, self.convert = image, part, convert
        self.truth = np.asarray(truth)[part["scored"]] > 0

    def prob(self, bundle) -> np.ndarray:
        from napari_segloop.core.inference.predict import predict_array

        prob = predict_array(bundle, self.image, device="cpu", convert=self.convert)
        return np.asarray(prob)[self.part["scored"]]

    def dice(self, bundle) -> float:
        from napari_segloop.core.evaluation import evaluate

        p = self.prob(bundle)
        return float(evaluate(p, self.truth, float(bundle.settings.threshold), objects=False).pixel.dice)

    def per_slice(self, bundle) -> dict[str, float] | None:
        """Stack: Dice of each scored slice (None for a 2-D image)."""
        from napari_segloop.core.evaluation import evaluate

        if self.part["kind"] != "stack":
            return None
        p, thr = self.prob(bundle), float(bundle.settings.threshold)
        return {str(z): round(float(evaluate(p[k], self.truth[k], thr, objects=False).pixel.dice), 4)
                for k, z in enumerate(self.part["scored_slices"])}

    def object_f1(self, bundle) -> float:
        """Object F1 (IoU > 0.5) at the model's threshold with its post-processing (2-D objects)."""
        from napari_segloop.core.evaluation import evaluate

        ev = evaluate(self.prob(bundle), self.truth, float(bundle.settings.threshold), objects=True,
                      postprocess=bundle.settings.postprocess)
        return float(ev.objects.f1)

    def best(self, bundle) -> tuple[float, float]:
        """Dice at the threshold that is best *for the scored part itself* (optimistic), and it."""
        from napari_segloop.core.evaluation import ThresholdCurve

        best = ThresholdCurve(self.prob(bundle), self.truth).best_threshold("dice")
        return float(best.score), float(best.threshold)


def run_training(name: str, start, pairs, mode: str, scorer: Scorer, args, convert: str) -> dict[str, Any]:
    """One training run; Dice of the scored part at each mark (best weights so far) and at the end."""
    from napari_segloop.core.events import Notice, Progress, Snapshot, run_to_end
    from napari_segloop.core.training import TrainConfig, train

    snaps: list[tuple[float, int, dict]] = []
    notices: list[str] = []
    call = time.perf_counter()
    origin = [call]

    def on(event) -> None:
        now = time.perf_counter()
        if isinstance(event, Progress) and event.message.startswith("preparing") \
                and event.done == event.total:
            origin[0] = now
        elif isinstance(event, Snapshot):
            snaps.append((now - origin[0], event.step, event.state_dict))
        elif isinstance(event, Notice):
            notices.append(f"{event.level}: {event.text}")

    cfg = TrainConfig(mode=mode, max_seconds=args.seconds, device="cpu", threads=args.threads,
                      seed=args.seed, convert=convert)
    result = run_to_end(train(start, pairs, cfg), on)
    wall = time.perf_counter() - call
    prep = origin[0] - call
    at_zero = scorer.dice(start)
    model = copy.deepcopy(result.bundle)
    cache: dict[int, float] = {}
    curve: dict[str, float | None] = {}
    for mark in [m for m in MARKS if m <= args.seconds]:
        if mark == 0:
            curve["0"] = round(at_zero, 4)
            continue
        chosen = [s for s in snaps if s[0] <= mark]
        if not chosen:
            curve[str(mark)] = round(at_zero, 4) if start.source != "new" else None
            continue
        _t, step, state = chosen[-1]
        if step not in cache:
            model.model.load_state_dict(state)
            cache[step] = scorer.dice(model)
        curve[str(mark)] = round(cache[step], 4)
    final = scorer.dice(result.bundle)
    out = {
        "run": name, "mode": mode, "start": "scratch" if start.source == "new" else "default",
        "dice_by_seconds": curve, "final": round(final, 4),
        "final_per_slice": scorer.per_slice(result.bundle),
        "final_object_f1": round(scorer.object_f1(result.bundle), 4),
        "steps": result.steps, "best_step": result.best_step, "stop_reason": result.stop_reason,
        "val_dice_start": None if result.baseline is None else round(result.baseline["dice"], 4),
        "val_dice_best": round(result.best["dice"], 4),
        "snapshots": [[round(t, 1), s] for t, s, _ in snaps],
        "prep_seconds": round(prep, 1), "wall_seconds": round(wall, 1),
        "threshold": float(result.bundle.settings.threshold),
        "warnings": list(result.warnings), "notices": notices,
    }
    _say(f"  {name}: {curve} final {final:.4f} ({result.steps} steps, best step {result.best_step}, "
         f"{result.stop_reason}, held-out val Dice {out['val_dice_start']} -> {out['val_dice_best']}, "
         f"prep {prep:.1f} s)")
    return out


def evaluate_pair(spec: dict[str, Any], default, args) -> dict[str, Any]:
    """All runs on one image."""
    from napari_segloop.core.training import TrainingPair

    image, truth = read_tiff(spec["image"]), read_tiff(spec["truth"])
    part = split(image, truth, args.annotated_share, spec["slices"])
    convert = spec["convert"]
    name = Path(spec["image"]).stem + ("" if convert == "none" else f" (--convert {convert})")
    if part["kind"] == "stack":
        name += f" (slices {','.join(map(str, part['slices']))} annotated)"
    _say(f"{name}: image {image.shape} {image.dtype}; {part['text']}")
    scorer = Scorer(image, truth, part, convert)
    scribbles = scribbles_for(truth, part, args.fraction, args.seed)
    ann_pixels = int(np.asarray(truth)[part["annotated"]].size)
    scribbled = float((scribbles > 0).sum()) / ann_pixels
    t0 = scorer.dice(default)
    best_dice, best_t = scorer.best(default)
    _say(f"  default: Dice {t0:.4f} at {default.settings.threshold:g} "
         f"(best {best_dice:.4f} at {best_t:.3g}); "
         f"scribbles: {100 * scribbled:.2f} % of the annotated pixels")
    entry: dict[str, Any] = {
        "image": str(spec["image"]), "truth": str(spec["truth"]), "name": name, "convert": convert,
        "shape": list(image.shape), "split": part["text"],
        "scored_foreground_percent": round(100 * float(scorer.truth.mean()), 2),
        "scribbled_percent_of_annotated": round(100 * scribbled, 2),
        "default": {"dice": round(t0, 4), "threshold": float(default.settings.threshold),
                    "per_slice": scorer.per_slice(default), "object_f1": round(scorer.object_f1(default), 4),
                    "best_dice_scored_part": round(best_dice, 4), "best_threshold": round(best_t, 4)},
        "runs": [],
    }
    if part["kind"] == "2d":
        crop_img = image[:, :part["cut"]]
        crop_gt = truth[:, :part["cut"]]
    else:
        crop_img = image[part["slices"]]
        crop_gt = truth[part["slices"]]
    dense_gt = np.asarray(crop_gt).astype(np.int32 if crop_gt.dtype.kind == "i" else np.uint32)
    plans = {
        "ft-scribbles": (default, [TrainingPair(image, scribbles, name)], "scribbles"),
        "scratch-scribbles": (None, [TrainingPair(image, scribbles, name)], "scribbles"),
        "ft-dense": (default, [TrainingPair(crop_img, dense_gt, name + " annotated part")], "dense"),
    }
    for run in args.runs:
        if run == "default":
            continue
        start, pairs, mode = plans[run]
        if start is None:
            start = scratch_model(default)
        entry["runs"].append(run_training(run, start, pairs, mode, scorer, args, convert))
    return entry


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.3f}"


def markdown(results: list[dict[str, Any]], args) -> str:
    """Per-image tables and a summary table."""
    marks = [m for m in MARKS if m <= args.seconds]
    lines: list[str] = []
    for r in results:
        d = r["default"]
        lines += [f"### {r['name']}", "",
                  f"Image {tuple(r['shape'])}; {r['split']}; "
                  f"scored foreground {r['scored_foreground_percent']} %; "
                  f"scribbles cover {r['scribbled_percent_of_annotated']} % of the annotated pixels. "
                  f"Default model at the best threshold for the scored part itself (optimistic): "
                  f"{d['best_dice_scored_part']:.3f} at {d['best_threshold']:.3g}.", "",
                  "| run | " + " | ".join(f"{m} s" for m in marks) +
                  " | final | object F1 (final) | steps | best step | held-out val Dice (start → best) |",
                  "|---|" + "---|" * (len(marks) + 5)]
        if "default" in args.runs:
            cells = ([f"{d['dice']:.3f}"] + ["–"] * (len(marks) - 1)
                     + [f"{d['dice']:.3f}", f"{d['object_f1']:.3f}", "–", "–", "–"])
            title = f"{TITLES['default']} (threshold {d['threshold']:g})"
            lines.append(f"| {title} | " + " | ".join(cells) + " |")
        for run in r["runs"]:
            c = run["dice_by_seconds"]
            start = "–" if run["val_dice_start"] is None else f"{run['val_dice_start']:.3f}"
            lines.append(f"| {TITLES[run['run']]} (threshold {run['threshold']:g}) | "
                         + " | ".join(_fmt(c.get(str(m))) for m in marks)
                         + f" | **{run['final']:.3f}** | {run['final_object_f1']:.3f} | {run['steps']}"
                           f" | {run['best_step']} | "
                           f"{start} → {run['val_dice_best']:.3f} |")
        if d.get("per_slice"):
            lines += ["", "Dice per scored slice (final weights): default "
                      + ", ".join(f"z{z} {v:.3f}" for z, v in d["per_slice"].items())
                      + "".join(f"; {run['run']} " + ", ".join(f"z{z} {v:.3f}"
                                                              for z, v in run["final_per_slice"].items())
                                for run in r["runs"]) + "."]
        lines.append("")
    lines += ["### Summary (Dice of the scored part; fine-tuned runs: final weights)", "",
              "| image | default | " + " | ".join(TITLES[k] for k in args.runs if k != "default") + " |",
              "|---|---|" + "---|" * len([k for k in args.runs if k != "default"])]
    for r in results:
        by = {run["run"]: run["final"] for run in r["runs"]}
        lines.append(f"| {r['name']} | {r['default']['dice']:.3f} | "
                     + " | ".join(_fmt(by.get(k)) for k in args.runs if k != "default") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pair", nargs=2, metavar=("IMAGE", "GT"), action=_PairAction, dest="pairs",
                        required=True, help="an image and its ground truth (TIFF); repeat for more")
    parser.add_argument("--convert", action=_PairOption, dest="convert",
                        help="channel conversion of the pair before (none, gray, invert, ...)")
    parser.add_argument("--slices", action=_PairOption, dest="slices",
                        help="stack: comma-separated annotated slices of the pair before")
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget of each run")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scribbles and the trainer")
    parser.add_argument("--fraction", type=float, default=0.01,
                        help="scribbled share of the annotated part's pixels (approximate)")
    parser.add_argument("--annotated-share", type=float, default=0.4,
                        help="2-D: annotated share of the columns, from the left")
    parser.add_argument("--runs", default=",".join(RUNS),
                        help=f"comma-separated subset of {','.join(RUNS)}")
    args = parser.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in args.runs if r not in RUNS]
    if unknown:
        parser.error(f"unknown runs {unknown}; choose from {', '.join(RUNS)}")

    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.inference.threads import apply_threads

    threads = apply_threads(args.threads)
    default = load_model("default")
    started = time.perf_counter()
    results = [evaluate_pair(spec, default, args) for spec in args.pairs]
    print(markdown(results, args))
    print()
    out = {"seconds": args.seconds, "threads": threads, "seed": args.seed, "fraction": args.fraction,
           "annotated_share": args.annotated_share, "machine": platform.machine(), "cpus": os.cpu_count(),
           "minutes": round((time.perf_counter() - started) / 60, 1), "results": results}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
