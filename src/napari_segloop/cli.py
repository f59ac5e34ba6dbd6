"""The ``segloop`` command line: the same engine as the napari plugin, headless.

Every user error prints one line to stderr (``segloop: error: ...``) and the
command exits non-zero, without a traceback. With several inputs, a bad file
does not stop the others; the exit code is 1 when any failed.

Exit codes: 0 success, 1 some inputs or the operation failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_segloop import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(f"segloop: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"segloop: note: {message}", file=sys.stderr)


def _threshold_arg(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number in [0, 1] or 'auto'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return value


def _channel_axis_arg(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be auto, none or an integer axis") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None,
                   help="architecture of a plain state dict (e.g. Unet); not needed for bundles")
    p.add_argument("--encoder", default=None,
                   help="encoder of a plain state dict (e.g. resnet18)")
    p.add_argument("--in-channels", type=int, default=1,
                   help="input channels of a plain state dict (default 1)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``segloop`` command."""
    parser = argparse.ArgumentParser(
        prog="segloop",
        description="Deep-learning segmentation with a human in the loop (napari-segloop).",
    )
    parser.add_argument("--version", action="version", version=f"napari-segloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="predict probability maps or masks for images",
                       description="Predict probability maps (float32 TIFF) or masks for images.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (TIFF, PNG, JPEG, BMP, NPY) or folders of them")
    p.add_argument("--model", "-m", default="default",
                   help="'default', a bundle folder, or a state dict file (default: default)")
    p.add_argument("--output", "-o", required=True,
                   help="output file for one input, or a folder for several")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tile", type=int, default=None, help="tile size, a multiple of 32")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0-0.9)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass (default: 1 on the CPU, 8 on a GPU)")
    p.add_argument("--scale", type=float, default=None,
                   help="resize factor applied before the model (output resized back)")
    p.add_argument("--object-size", type=float, default=None,
                   help="typical object diameter in pixels in these images")
    p.add_argument("--threshold", type=_threshold_arg, default=None,
                   help="write a uint8 mask (probability > T), or 'auto' for the model's "
                        "stored threshold and post-processing")
    p.add_argument("--channel-axis", type=_channel_axis_arg, default="auto",
                   help="channel axis of the images: auto, none or an integer")
    p.add_argument("--convert", choices=("none", "gray", "repeat"), default="none",
                   help="explicit channel conversion when the image and model differ")
    p.add_argument("--channel", type=int, default=None, help="use only this channel")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_model_args(p)

    p = sub.add_parser("info", help="describe a model", description="Describe a model.")
    p.add_argument("model", help="'default', a bundle folder, or a state dict file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_model_args(p)

    p = sub.add_parser("demo", help="open napari with the sample image and the default model",
                       description="Open napari with the sample image, the default model and "
                                   "the plugin's docks.")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="run the prediction, save a screenshot of the window and exit")
    p = sub.add_parser(
        "evaluate", help="compare predictions with ground truth (Dice, IoU, objects)",
        description="Compare probability maps or masks with ground-truth masks or instance labels: "
                    "pixel metrics (TP, FP, FN, TN, Dice, IoU, precision, recall, accuracy) and "
                    "object metrics (objects matched at IoU > 0.5). Foreground is probability > T.",
    )
    p.add_argument("--prediction", "-p", required=True, metavar="PRED",
                   help="a probability map (float) or mask/label file, or a folder of them")
    p.add_argument("--truth", "-t", required=True, metavar="TRUTH",
                   help="a ground-truth mask or instance-label file (not float), or a folder of them")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--threshold", type=_evaluate_threshold_arg, default=None, metavar="T",
                     help="foreground where probability > T: a number in [0, 1], 'otsu', or 'auto' "
                          "(the threshold and post-processing stored in --model); default 0.5")
    how.add_argument("--best-threshold", action="store_true",
                     help="use the exact threshold that maximises Dice (one threshold for all pairs)")
    p.add_argument("--model", "-m", default="default",
                   help="bundle whose stored threshold --threshold auto uses (default: default)")
    p.add_argument("--region", metavar="MASK", default=None,
                   help="evaluate only where this mask file is non-zero (same shape as the "
                        "predictions, or one slice of them)")
    p.add_argument("--min-size", type=int, default=None, metavar="N",
                   help="post-processing: remove objects smaller than N pixels")
    p.add_argument("--fill-holes", action="store_true", help="post-processing: fill holes")
    p.add_argument("--split-touching", action="store_true",
                   help="post-processing: split touching objects (distance-transform watershed)")
    p.add_argument("--pair-by", choices=("stem", "order"), default="stem",
                   help="pair files of two folders by name (default; suffixes such as _probability, "
                        "_mask, _labels, _gt are ignored) or by sorted order")
    p.add_argument("--per-slice", action="store_true", help="also one row per slice of stacks")
    p.add_argument("--no-objects", action="store_true", help="skip the object metrics (faster)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: one object for one pair, else {rows, summary, errors}")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write the rows to a CSV file")
    return parser


def _load_model(args: argparse.Namespace):
    from napari_segloop.core.bundle import load_model

    return load_model(args.model, args.arch, args.encoder, args.in_channels)


def _output_paths(
    inputs: list[Path], output: Path, suffix: str, kind: str, as_folder: bool = False
) -> list[Path]:
    if len(inputs) == 1 and not (output.is_dir() or as_folder):
        return [output]
    output.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    paths = []
    for p in inputs:
        stem = f"{p.stem}_{kind}"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        paths.append(output / f"{stem}{'' if n == 0 else f'_{n + 1}'}{suffix}")
    return paths


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``segloop predict``."""
    from napari_segloop.core.devices import resolve_device
    from napari_segloop.core.errors import InputError, SegloopError
    from napari_segloop.core.imageio import expand_inputs, read_image, write_image
    from napari_segloop.core.inference import Notice, PredictOptions, Progress, predict
    from napari_segloop.core.threshold import apply_threshold, postprocess

    files, skipped = expand_inputs(args.inputs)
    for text in skipped:
        _note(text)
    if not files:
        _err("no input images found.")
        return EXIT_FAILED
    output = Path(args.output)
    # Path() drops a trailing slash, which says "a folder" (created if needed).
    as_folder = args.output.endswith(("/", os.sep))
    if len(files) > 1 and output.exists() and not output.is_dir():
        _err(f"{output}: several inputs need an output folder, but this is a file.")
        return EXIT_USAGE
    if len(files) == 1 and not output.is_dir() and not output.suffix and not as_folder:
        _err(f"{output}: give a file name with .tif or .npy, or an existing folder.")
        return EXIT_USAGE
    try:
        bundle = _load_model(args)
    except SegloopError as exc:
        _err(str(exc))
        return EXIT_FAILED
    options = PredictOptions(
        device=args.device, tile_size=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, scale=args.scale, object_size=args.object_size,
        amp=not args.no_amp, channel_axis=args.channel_axis, convert=args.convert,
        channel=args.channel,
    )
    try:
        options.resolved(bundle)
        # Resolve the device once: a bad name is a usage error, a fallback is told once.
        choice = resolve_device(args.device)
    except SegloopError as exc:
        _err(str(exc))
        return EXIT_USAGE
    for text in choice.notices:
        _note(text)
    options.device = str(choice.device)
    kind = "probability" if args.threshold is None else "mask"
    try:
        targets = _output_paths(files, output, ".tif", kind, as_folder)
    except OSError as exc:
        _err(f"{output}: cannot create the output folder ({exc.strerror or exc}).")
        return EXIT_FAILED
    from tqdm import tqdm

    failed = 0
    inputs = {f.resolve() for f in files}  # never overwrite a user's file that is still to be read
    for src, dst in zip(files, targets, strict=True):
        try:
            if dst.resolve() in inputs:
                raise InputError(f"{src}: the output {dst} would overwrite an input; choose another output.")
            image = read_image(src)
            gen = predict(bundle, image, options)
            # disable=None: no progress bar when stderr is not a terminal (logs, pipes).
            bar = tqdm(total=None, desc=src.name, unit="tile", disable=True if args.quiet else None,
                       file=sys.stderr, leave=False)
            try:
                while True:
                    try:
                        event = next(gen)
                    except StopIteration as stop:
                        prob = stop.value
                        break
                    if isinstance(event, Progress):
                        bar.total = event.total
                        bar.n = event.done
                        bar.refresh()
                    elif isinstance(event, Notice):
                        bar.clear()
                        _note(f"{src.name}: {event.text}")
            finally:
                bar.close()
            if args.threshold is None:
                result = prob
            elif args.threshold == "auto":
                s = bundle.settings
                result = postprocess(apply_threshold(prob, s.threshold), s.postprocess)
            else:
                result = apply_threshold(prob, float(args.threshold))
            write_image(dst, result)
            if not args.quiet:
                print(f"{src} -> {dst}", file=sys.stderr)
        except SegloopError as exc:
            failed += 1
            msg = str(exc)
            _err(msg if msg.startswith(str(src)) else f"{src}: {msg}")
        except MemoryError:
            failed += 1
            _err(f"{src}: not enough memory for this image.")
    if failed:
        _err(f"{failed} of {len(files)} input(s) failed.")
        return EXIT_FAILED
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Run ``segloop info``."""
    from napari_segloop.core.errors import SegloopError

    try:
        bundle = _load_model(args)
    except SegloopError as exc:
        _err(str(exc))
        return EXIT_FAILED
    info = bundle.describe()
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``segloop demo``."""
    try:
        from napari_segloop.demo import run_demo
    except ImportError as exc:
        _err(f"the demo needs napari with a Qt binding: pip install 'napari-segloop[qt]' ({exc}).")
        return EXIT_FAILED
    return run_demo(screenshot=args.screenshot)


def _evaluate_threshold_arg(text: str) -> float | str:
    if text in ("auto", "otsu"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number in [0, 1], 'otsu' or 'auto'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return value


#: Name suffixes ignored when files of two folders are paired by name.
PAIR_SUFFIXES = ("_probability", "_prob", "_prediction", "_pred", "_mask", "_masks", "_labels",
                 "_label", "_truth", "_gt")


def _pair_key(path: Path) -> str:
    stem = path.stem
    for suffix in PAIR_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def _evaluation_pairs(
    pred: Path, truth: Path, pair_by: str
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pairs (name, prediction, truth) and one error line per file left without a partner."""
    from napari_segloop.core.imageio import expand_inputs

    if not pred.is_dir() and not truth.is_dir():
        return [(_pair_key(pred), pred, truth)], []
    preds, skipped_p = expand_inputs([pred])
    truths, skipped_t = expand_inputs([truth])
    for text in skipped_p + skipped_t:
        if "no image files" not in text:
            _note(text)
    errors: list[str] = []
    if pair_by == "order":
        pairs = [(p.stem, p, t) for p, t in zip(preds, truths, strict=False)]
        errors += [f"{p}: no ground-truth file left to pair with (by sorted order)."
                   for p in preds[len(truths):]]
        errors += [f"{t}: no prediction file left to pair with (by sorted order)."
                   for t in truths[len(preds):]]
        return pairs, errors
    by_key: dict[str, list[Path]] = {}
    for t in truths:
        by_key.setdefault(_pair_key(t), []).append(t)
    pairs = []
    used: set[str] = set()
    for p in preds:
        key = _pair_key(p)
        found = by_key.get(key, [])
        if len(found) == 1:
            pairs.append((key, p, found[0]))
            used.add(key)
        elif not found:
            errors.append(f"{p}: no ground-truth file named {key}.* (or with a _mask/_labels/_gt "
                          f"suffix) in {truth}.")
        else:
            errors.append(f"{p}: several ground-truth files match: {', '.join(f.name for f in found)}.")
    errors += [f"{t}: no prediction file matches this ground truth." for key, files in by_key.items()
               if key not in used for t in files]
    return pairs, errors


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``segloop evaluate``."""
    import numpy as np

    from napari_segloop.core.bundle import PostProcess
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.imageio import read_image
    from napari_segloop.core.metrics import (
        as_probability,
        check_region,
        check_truth,
        evaluate,
        evaluate_stack,
        truth_foreground,
        write_metrics_csv,
    )
    from napari_segloop.core.thresholds import ThresholdCurve, otsu_threshold, read_bundle_settings

    pred_arg, truth_arg = Path(args.prediction), Path(args.truth)
    for path in (pred_arg, truth_arg):
        if not path.exists():
            _err(f"{path}: file not found.")
            return EXIT_FAILED
    if pred_arg.is_dir() != truth_arg.is_dir():
        _err("give two files or two folders for --prediction and --truth.")
        return EXIT_USAGE
    if args.min_size is not None and args.min_size < 0:
        _err("--min-size must be >= 0.")
        return EXIT_USAGE
    single = not pred_arg.is_dir()
    pairs, errors = _evaluation_pairs(pred_arg, truth_arg, args.pair_by)
    if not pairs and not errors:
        _err(f"no image files to evaluate in {pred_arg} and {truth_arg}.")
        return EXIT_FAILED
    for text in errors:
        _err(text)
    failures = [{"name": None, "error": text} for text in errors]

    postprocess = None
    fixed: float | None = None
    method = "given"
    if args.best_threshold:
        method = "best"
    elif args.threshold in ("otsu",):
        method = "otsu"
    elif args.threshold == "auto":
        method = "auto"
        try:
            settings = read_bundle_settings(args.model)
        except SegloopError as exc:
            _err(str(exc))
            return EXIT_FAILED
        fixed, postprocess = float(settings.threshold), settings.postprocess
    elif args.threshold is None:
        method, fixed = "default", 0.5
    else:
        fixed = float(args.threshold)
    if args.min_size is not None or args.fill_holes or args.split_touching:
        base = postprocess or PostProcess()
        postprocess = PostProcess(
            min_size=base.min_size if args.min_size is None else int(args.min_size),
            fill_holes=base.fill_holes or args.fill_holes,
            instances=base.instances or args.split_touching,
            split_touching=base.split_touching or args.split_touching,
        )
    region = None
    if args.region is not None:
        try:
            region = read_image(args.region)
        except SegloopError as exc:
            _err(str(exc))
            return EXIT_FAILED

    def fail(name: str, pred: Path, truth: Path, exc: Exception) -> None:
        msg = str(exc)
        where = f"{pred} vs {truth}"
        text = msg if msg.startswith((str(pred), str(truth))) else f"{where}: {msg}"
        _err(text)
        failures.append({"name": name, "prediction": str(pred), "truth": str(truth), "error": text})

    # Pass 1: read and check every pair (and pool the pixels for --best-threshold).
    loaded = []
    pooled_values, pooled_labels = [], []
    for name, pred_path, truth_path in pairs:
        try:
            pred = read_image(pred_path)
            truth = check_truth(read_image(truth_path), pred.shape)
            reg = check_region(region, pred.shape)
            is_prob = pred.dtype.kind == "f"
            if is_prob:
                pred = as_probability(pred)
            elif method in ("best", "otsu"):
                raise SegloopError(f"{pred_path} is a mask ({pred.dtype}), not a probability map: "
                                   f"--{'best-threshold' if method == 'best' else 'threshold otsu'} "
                                   "needs probabilities.")
            if method == "best":
                fg = truth_foreground(truth)
                pooled_values.append(pred[reg] if reg is not None else pred.ravel())
                pooled_labels.append(fg[reg] if reg is not None else fg.ravel())
            loaded.append((name, pred_path, truth_path, pred, truth, reg, is_prob))
        except SegloopError as exc:
            fail(name, pred_path, truth_path, exc)
        except MemoryError:
            fail(name, pred_path, truth_path, SegloopError("not enough memory for this pair."))

    best = None
    if method == "best" and loaded:
        values = np.concatenate(pooled_values)[None, :]
        labels = np.concatenate(pooled_labels)[None, :]
        pooled_values.clear()
        pooled_labels.clear()
        best = ThresholdCurve(values, labels).best_threshold("dice")
        fixed = best.threshold
        del values, labels
        if postprocess is not None:
            _note("the best threshold is searched without post-processing; the metrics below "
                  "include it.")
    if method == "default" and any(item[6] for item in loaded):
        _note("probability maps are thresholded at 0.5 (give --threshold T or --best-threshold).")

    # Pass 2: evaluate every pair at its threshold.
    rows: list[dict] = []
    total = None
    seen_notes: set[str] = set()
    for name, pred_path, truth_path, pred, truth, reg, is_prob in loaded:
        try:
            threshold = None
            if is_prob:
                threshold = otsu_threshold(pred, reg) if method == "otsu" else fixed
            kwargs = {"objects": not args.no_objects, "postprocess": postprocess}
            head = {"name": name, "prediction": str(pred_path), "truth": str(truth_path)}
            if args.per_slice and pred.ndim > 2:
                stack = evaluate_stack(pred, truth, threshold, reg, **kwargs)
                ev = stack.whole
                for i, sl in enumerate(stack.slices):
                    rows.append({**head, "slice": i, **sl.to_dict(),
                                 "threshold_method": method if is_prob else None})
                rows.append({**head, "slice": "all", **ev.to_dict(),
                             "threshold_method": method if is_prob else None})
            else:
                ev = evaluate(pred, truth, threshold, reg, **kwargs)
                rows.append({**head, **ev.to_dict(), "threshold_method": method if is_prob else None})
            for text in ev.notes:
                if text not in seen_notes:
                    seen_notes.add(text)
                    _note(f"{truth_path.name}: {text}")
            total = ev if total is None else total + ev
        except SegloopError as exc:
            fail(name, pred_path, truth_path, exc)
        except MemoryError:
            fail(name, pred_path, truth_path, SegloopError("not enough memory for this pair."))

    summary: dict = {"name": "summary", "pairs": len(pairs), "failed": len(failures)}
    if total is not None:
        summary.update(total.to_dict())
        whole_rows = [r for r in rows if r.get("slice", "all") == "all"]
        for key in ("dice", "iou", "object_f1"):
            vals = [r[key] for r in whole_rows if r.get(key) is not None]
            summary[f"mean_{key}"] = sum(vals) / len(vals) if vals else None
        if method == "otsu":
            summary["threshold"] = None
    if best is not None:
        summary["threshold"] = best.threshold
        summary["best_threshold"] = best.threshold
        summary["best_dice"] = best.score
        for row in rows:
            if row.get("threshold") is not None:
                row["best_dice"] = best.score if len(loaded) == 1 else None
    summary["threshold_method"] = method

    if args.csv:
        try:
            write_metrics_csv(args.csv, rows + failures + ([summary] if not single else []))
        except SegloopError as exc:
            _err(str(exc))
            return EXIT_FAILED

    if args.json:
        if single and not args.per_slice:
            if rows:
                print(json.dumps(rows[0], allow_nan=False))
        else:
            print(json.dumps({"rows": rows, "summary": summary, "errors": failures}, allow_nan=False))
    elif rows:
        cols = ("name", "slice", "threshold", "dice", "iou", "precision", "recall", "accuracy",
                "object_f1")
        if not args.per_slice:
            cols = tuple(c for c in cols if c != "slice")
        table = [[_fmt(r.get(c)) for c in cols] for r in rows]
        if not single:
            table.append([_fmt(summary.get(c) if c != "name" else "all pairs") for c in cols])
        widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(cols)]
        print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for line in table:
            print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
        if best is not None:
            print(f"best threshold {best.threshold!r} (Dice {best.score:.4f}"
                  f"{' over all pairs' if not single else ''})")
    if failures:
        if not single:
            _err(f"{len(failures)} pair(s) failed.")
        return EXIT_FAILED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segloop`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handlers = {"predict": cmd_predict, "info": cmd_info, "demo": cmd_demo,
                "evaluate": cmd_evaluate}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        _err("interrupted.")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
