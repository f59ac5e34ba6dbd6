"""``segloop evaluate``: Dice/IoU/objects against ground truth, a wrapper over
:func:`napari_segloop.core.evaluation.batch.evaluate_files`."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from napari_segloop.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_image_limit_arg,
    apply_image_limit,
    err,
    evaluate_threshold_arg,
    note,
    say,
)
from napari_segloop.cli.predict import OBJECT_DIMS, model_input


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``evaluate`` command."""
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
    how.add_argument("--threshold", type=evaluate_threshold_arg, default=None, metavar="T",
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
    p.add_argument("--object-diameter", default=None, metavar="PX",
                   help="typical object diameter in pixels for --split-touching (default: the "
                        "model's with --threshold auto, else estimated from each mask)")
    p.add_argument("--objects", choices=("auto", "2d", "3d"), default="auto",
                   help="objects of stacks: 3d (connected across slices), 2d (slice by slice) or "
                        "auto (3d for a stack, unless its file says its third-last axis is time "
                        "or channels; default)")
    p.add_argument("--pair-by", choices=("stem", "order"), default="stem",
                   help="pair files of two folders by name (default; suffixes such as _probability, "
                        "_mask, _labels, _gt are ignored) or by sorted order")
    p.add_argument("--per-slice", action="store_true", help="also one row per slice of stacks")
    p.add_argument("--no-objects", action="store_true", help="skip the object metrics (faster)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: one object for one pair, else {rows, summary, errors}")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write the rows to a CSV file")
    p.add_argument("--classes", type=int, default=None, metavar="K",
                   help="K >= 3: multi-class evaluation of class maps (or K-class probabilities, "
                        "class axis first) against ground truth of class ids 0..K-1: per-class "
                        "Dice, IoU, precision, recall, mIoU and the K x K confusion matrix; "
                        "--threshold is then the minimum confidence of probabilities")
    add_image_limit_arg(p)


def parse_object_diameter(text: str | None) -> float | None:
    """``--object-diameter``: None when not given, else a finite number of pixels > 0.

    Raises
    ------
    ValueError
        With the one-line message for the user.
    """
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"--object-diameter must be a number of pixels > 0, not {text!r}.")
    return value


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_table(report, per_slice: bool) -> None:
    rows, summary, single, best = report.rows, report.summary, report.single, report.best
    cols = ("name", "slice", "threshold", "dice", "iou", "precision", "recall", "accuracy",
            "object_f1")
    if not per_slice:
        cols = tuple(c for c in cols if c != "slice")
    table = [[_fmt(r.get(c)) for c in cols] for r in rows]
    if not single:
        table.append([_fmt(summary.get(c) if c != "name" else "all pairs") for c in cols])
    widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    for line in table:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
    if best is not None and not best.exact:
        print(f"best threshold {best.threshold:.6g} (Dice {best.score:.4f}; not the exact optimum: too many "
              "probabilities near it to refine in memory, the best of those refined)")
    elif best is not None:
        print(f"best threshold {best.threshold!r} (Dice {best.score:.4f}"
              f"{' over all pairs' if not single else ''})")


def csv_plan(args: argparse.Namespace, threshold: object) -> Any:
    """The checked :class:`~napari_segloop.core.io.guard.OutputPlan` of ``--csv`` (empty without it).

    Checked before any work: the CSV must not replace an input (a prediction, a ground truth,
    the region, the model), and must be writable.

    Raises
    ------
    SegloopError
        The CSV would replace an input or cannot be written.
    """
    from napari_segloop.core.io.guard import CSV_OUTPUT, OutputPlan
    from napari_segloop.core.io.images import expand_inputs

    plan = OutputPlan()
    if not args.csv:
        return plan
    from napari_segloop.core.io.lazy import is_zarr_path

    for arg, what in ((Path(args.prediction), "the prediction"), (Path(args.truth), "the ground truth")):
        if arg.is_dir() and not is_zarr_path(arg):
            for path in expand_inputs([arg])[0]:
                plan.protect(path, f"{what.replace('the ', 'a ', 1)} in {arg}")
        else:
            plan.protect(arg, what)
    plan.protect(args.region, "the region")
    if args.model != "default" or threshold == "auto":
        plan.protect(model_input(args.model), "the model")
    plan.add(args.csv, "--csv", kind=CSV_OUTPUT)
    plan.check()
    return plan


def _print_classes(report) -> None:
    for name, metrics in [*report.pairs, *([("all pairs", report.total)] if len(report.pairs) > 1 else [])]:
        summary = metrics.summary()
        print(f"{name}: mIoU {summary['miou']:.4f}, mean Dice of the classes {summary['mean_dice']:.4f}, "
              f"pixel accuracy {summary['accuracy']:.4f}"
              + (f", unassigned {summary['unassigned']:.2%}" if metrics.unassigned else ""))
        cols = ("class", "name", "support", "dice", "iou", "precision", "recall")
        table = [[_fmt(r[c]) for c in cols] for r in metrics.rows()]
        widths = [max(len(c), *(len(line[i]) for line in table)) for i, c in enumerate(cols)]
        print("  " + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
        for line in table:
            print("  " + "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)))
        k = metrics.classes
        heads = [str(c) for c in range(k)] + (["unassigned"] if metrics.unassigned else [])
        cm = metrics.confusion[:, :len(heads)]
        width = max(len(h) for h in [*heads, str(int(cm.max()))])
        print("  confusion (rows: truth, columns: prediction)")
        print("  " + " " * 4 + "  ".join(h.rjust(width) for h in heads))
        for c in range(k):
            print(f"  {c:>3} " + "  ".join(str(int(v)).rjust(width) for v in cm[c]))


def _run_classes(args: argparse.Namespace, threshold: object) -> int:
    """``segloop evaluate --classes K``."""
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.evaluation.class_batch import evaluate_class_files
    from napari_segloop.core.evaluation.report import write_metrics_csv
    from napari_segloop.core.events import Notice, run_to_end
    from napari_segloop.core.io.images import read_image

    if threshold in ("best", "otsu"):
        err("--best-threshold and otsu are binary; with --classes give a minimum confidence or 'auto'.")
        return EXIT_USAGE
    from napari_segloop.core.masks import PostProcess

    names = None
    min_conf = 0.0 if threshold is None else threshold
    pp = None
    if args.min_size or args.fill_holes:
        pp = PostProcess(min_size=int(args.min_size or 0), fill_holes=bool(args.fill_holes))
    if args.split_touching:
        err("--split-touching separates objects of a binary mask; it does not apply with --classes.")
        return EXIT_USAGE
    if threshold == "auto" or args.model != "default":
        from napari_segloop.core.bundle import load_model

        try:
            bundle = load_model(args.model)
        except SegloopError as exc:
            err(str(exc))
            return EXIT_FAILED
        if bundle.classes != args.classes:
            err(f"{args.model} has {max(2, bundle.classes)} classes, not {args.classes}.")
            return EXIT_USAGE
        names = tuple(bundle.class_names)
        if threshold == "auto":
            # As `segloop predict --threshold auto`: the model's minimum confidence and post-processing.
            min_conf = float(bundle.settings.threshold)
            pp = pp or bundle.settings.postprocess
    try:
        plan = csv_plan(args, threshold)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    try:
        region = read_image(args.region) if args.region is not None else None
        report = run_to_end(
            evaluate_class_files(Path(args.prediction), Path(args.truth), args.classes,
                                 min_confidence=float(min_conf), region=region,
                                 pair_by=args.pair_by, names=names, postprocess=pp,
                                 object_dims=3 if args.objects == "3d" else 2),
            lambda e: say(e) if isinstance(e, Notice) else None)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    if args.csv:
        try:
            write_metrics_csv(args.csv, report.rows() + report.failures, protect=plan.inputs)
        except SegloopError as exc:
            err(str(exc))
            return EXIT_FAILED
    if args.json:
        print(json.dumps(report.to_dict(), allow_nan=False))
    elif report.pairs:
        _print_classes(report)
    if report.failures:
        if len(report.pairs) + len(report.failures) > 1:
            err(f"{len(report.failures)} pair(s) failed.")
        return EXIT_FAILED
    return EXIT_OK


#: Options that need whole objects or the map in memory (refused for OME-Zarr maps).
_IN_MEMORY_ONLY = (("region", "--region"), ("min_size", "--min-size"), ("fill_holes", "--fill-holes"),
                   ("split_touching", "--split-touching"), ("object_diameter", "--object-diameter"),
                   ("per_slice", "--per-slice"), ("classes", "--classes"))


def _run_out_of_core(args: argparse.Namespace) -> int:
    """An OME-Zarr map (or ground truth): pixel metrics block by block, in bounded memory."""
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.evaluation.out_of_core import evaluate_out_of_core
    from napari_segloop.core.evaluation.report import write_metrics_csv
    from napari_segloop.core.events import Notice, run_to_end

    given = [flag for name, flag in _IN_MEMORY_ONLY if getattr(args, name, None) not in (None, False)]
    if given:
        err(f"{', '.join(given)}: not for a .zarr map, which is scored block by block (pixel metrics of "
            "the raw threshold); evaluate a crop saved as TIFF, or post-process with segloop predict.")
        return EXIT_USAGE
    threshold = "best" if args.best_threshold else args.threshold
    try:
        plan = csv_plan(args, threshold)
        report = run_to_end(evaluate_out_of_core(args.prediction, args.truth, threshold=threshold,
                                                 model=args.model),
                            lambda e: say(e) if isinstance(e, Notice) else None)
        if args.csv:
            write_metrics_csv(args.csv, report.rows, protect=plan.inputs)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    if args.json:
        print(json.dumps(report.rows[0], allow_nan=False))
    else:
        _print_table(report, False)
        note(report.rows[0]["notes"])
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``segloop evaluate``."""
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.evaluation.batch import evaluate_files
    from napari_segloop.core.evaluation.report import write_metrics_csv
    from napari_segloop.core.events import Notice, run_to_end
    from napari_segloop.core.io.images import read_image

    if (problem := apply_image_limit(args)) is not None:
        err(problem)
        return EXIT_USAGE
    pred_arg, truth_arg = Path(args.prediction), Path(args.truth)
    for path in (pred_arg, truth_arg):
        if not path.exists():
            err(f"{path}: file not found.")
            return EXIT_FAILED
    from napari_segloop.core.io.lazy import is_zarr_path

    if is_zarr_path(pred_arg) or is_zarr_path(truth_arg):
        return _run_out_of_core(args)
    if pred_arg.is_dir() != truth_arg.is_dir():
        err("give two files or two folders for --prediction and --truth.")
        return EXIT_USAGE
    if args.min_size is not None and args.min_size < 0:
        err("--min-size must be >= 0.")
        return EXIT_USAGE
    try:
        diameter = parse_object_diameter(args.object_diameter)
    except ValueError as exc:
        err(str(exc))
        return EXIT_USAGE
    threshold = "best" if args.best_threshold else args.threshold
    if args.classes is not None:
        if not 2 <= args.classes <= 32:
            err(f"--classes must be from 2 to 32; got {args.classes}.")
            return EXIT_USAGE
        if args.classes >= 3:
            return _run_classes(args, threshold)
    try:
        plan = csv_plan(args, threshold)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    try:
        region = read_image(args.region) if args.region is not None else None
        report = run_to_end(
            evaluate_files(pred_arg, truth_arg, threshold=threshold, model=args.model, region=region,
                           min_size=args.min_size, fill_holes=args.fill_holes,
                           split_touching=args.split_touching, pair_by=args.pair_by,
                           per_slice=args.per_slice, objects=not args.no_objects,
                           object_dims=OBJECT_DIMS[args.objects],
                           object_diameter=diameter),
            lambda e: say(e) if isinstance(e, Notice) else None,
        )
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED

    if args.csv:
        try:
            write_metrics_csv(args.csv, report.rows + report.failures
                              + ([report.summary] if not report.single else []),
                              protect=plan.inputs)
        except SegloopError as exc:
            err(str(exc))
            return EXIT_FAILED
    if args.json:
        if report.single and not args.per_slice:
            if report.rows:
                print(json.dumps(report.rows[0], allow_nan=False))
        else:
            print(json.dumps({"rows": report.rows, "summary": report.summary,
                              "errors": report.failures}, allow_nan=False))
    elif report.rows:
        _print_table(report, args.per_slice)
    if report.failures:
        if not report.single:
            err(f"{len(report.failures)} pair(s) failed.")
        return EXIT_FAILED
    return EXIT_OK
