"""Evaluating files and folders: pairing, one threshold policy, pooled best threshold, a summary.

:func:`evaluate_files` is what ``segloop evaluate`` runs: the command line
only parses arguments and prints the :class:`BatchReport`. It is a generator
(like every long job) that yields a :class:`~napari_segloop.core.events.Notice`
for every remark and every pair that fails (level ``"error"``), and a
:class:`~napari_segloop.core.events.Progress` per pair; a bad pair never stops
the others.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.evaluation.checks import (
    as_probability,
    check_region,
    check_truth,
    integer_map_notice,
    truth_foreground,
)
from napari_segloop.core.evaluation.curve import BestThreshold, ThresholdCurve, otsu_threshold
from napari_segloop.core.evaluation.evaluate import evaluate, evaluate_stack
from napari_segloop.core.evaluation.planes import auto_object_dims, check_object_dims, file_axes
from napari_segloop.core.evaluation.results import Evaluation
from napari_segloop.core.events import Event, Notice, Progress
from napari_segloop.core.masks import PostProcess, check_object_diameter, resolve_object_diameter

__all__ = ["PAIR_SUFFIXES", "BatchReport", "evaluate_files", "pair_files", "pair_key"]

#: Name suffixes ignored when files of two folders are paired by name.
PAIR_SUFFIXES = ("_probability", "_prob", "_prediction", "_pred", "_mask", "_masks", "_labels",
                 "_label", "_truth", "_gt")


def pair_key(path: Path) -> str:
    """The name two files are paired by: the stem without a known suffix (``_mask``, ``_gt``, ...)."""
    stem = path.stem
    for suffix in PAIR_SUFFIXES:
        if stem.lower().endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def pair_files(
    pred: Path, truth: Path, pair_by: str = "stem"
) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Pair prediction and ground-truth files (two files, or two folders).

    Parameters
    ----------
    pred, truth : Path
        Two files, or two folders of images.
    pair_by : {"stem", "order"}
        By name (suffixes in :data:`PAIR_SUFFIXES` ignored) or by sorted order.

    Returns
    -------
    pairs : list of (name, prediction, truth)
    errors : list of str
        One line per file left without a partner.
    notes : list of str
        Files skipped while listing the folders.
    """
    from napari_segloop.core.io.images import expand_inputs

    if not pred.is_dir() and not truth.is_dir():
        return [(pair_key(pred), pred, truth)], [], []
    preds, skipped_p = expand_inputs([pred])
    truths, skipped_t = expand_inputs([truth])
    notes = [text for text in skipped_p + skipped_t if "no image files" not in text]
    errors: list[str] = []
    if pair_by == "order":
        pairs = [(p.stem, p, t) for p, t in zip(preds, truths, strict=False)]
        errors += [f"{p}: no ground-truth file left to pair with (by sorted order)."
                   for p in preds[len(truths):]]
        errors += [f"{t}: no prediction file left to pair with (by sorted order)."
                   for t in truths[len(preds):]]
        return pairs, errors, notes
    by_key: dict[str, list[Path]] = {}
    for t in truths:
        by_key.setdefault(pair_key(t), []).append(t)
    pairs = []
    used: set[str] = set()
    for p in preds:
        key = pair_key(p)
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
    return pairs, errors, notes


@dataclass
class BatchReport:
    """What :func:`evaluate_files` found.

    Attributes
    ----------
    rows : list of dict
        One row per pair (and per slice with ``per_slice``), JSON-ready.
    summary : dict
        Pooled metrics of all pairs, mean Dice/IoU/object F1, the threshold
        method and, for the best threshold, its value and Dice.
    failures : list of dict
        One entry per pair or file that failed, with its ``error`` line.
    best : BestThreshold or None
        The pooled best threshold (``threshold="best"``).
    single : bool
        Two files were given (not two folders).
    method : str
        ``given``, ``default`` (0.5), ``best``, ``otsu`` or ``auto``.
    """

    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    best: BestThreshold | None = None
    single: bool = True
    method: str = "default"
    n_loaded: int = 0


def _policy(threshold: float | str | None, model: str) -> tuple[str, float | None, PostProcess | None]:
    from napari_segloop.core.bundle.folder import read_bundle_settings

    if threshold == "best":
        return "best", None, None
    if threshold == "otsu":
        return "otsu", None, None
    if threshold == "auto":
        settings = read_bundle_settings(model)
        pp = settings.postprocess
        # the model's diameter for splitting: its post-processing's, else its object size
        pp = dataclasses.replace(pp, object_diameter=resolve_object_diameter(pp, settings))
        return "auto", float(settings.threshold), pp
    if threshold is None:
        return "default", 0.5, None
    return "given", float(threshold), None


def evaluate_files(
    prediction: str | Path,
    truth: str | Path,
    *,
    threshold: float | str | None = None,
    model: str = "default",
    region: np.ndarray | None = None,
    min_size: int | None = None,
    fill_holes: bool = False,
    split_touching: bool = False,
    pair_by: str = "stem",
    per_slice: bool = False,
    objects: bool = True,
    object_dims: int | None = None,
    object_diameter: float | None = None,
) -> Generator[Event, None, BatchReport]:
    """Evaluate prediction files against ground-truth files.

    Parameters
    ----------
    prediction, truth : path
        Two files, or two folders (paired by ``pair_by``).
    threshold : float, "otsu", "auto", "best" or None
        Foreground where probability > T; ``otsu`` per pair; ``auto`` the
        threshold and post-processing stored in ``model``; ``best`` the exact
        threshold maximising Dice over all pairs pooled; None: 0.5.
    model : str
        The bundle ``threshold="auto"`` reads.
    region : ndarray of bool, optional
        Evaluate only where it is non-zero.
    min_size, fill_holes, split_touching
        Post-processing on top of the model's (``auto``) or alone.
    pair_by : {"stem", "order"}
    per_slice : bool
        One row per slice of stacks, then the whole stack.
    objects : bool
        Compute object metrics.
    object_dims : {2, 3} or None
        2-D or 3-D objects (post-processing and object metrics) for stacks;
        None: per pair, :func:`auto_object_dims` of the prediction's shape
        and of the axes its file (else the truth file) records. 2-D images
        always have 2-D objects.
    object_diameter : float, optional
        Object diameter for splitting touching objects; None: the model's
        (``auto``: its post-processing's, else its ``object_size``), else
        estimated from each mask.

    Yields
    ------
    Notice, Progress

    Returns
    -------
    BatchReport

    Raises
    ------
    SegloopError
        Nothing to evaluate, the model's settings cannot be read, or an
        invalid ``object_dims`` or ``object_diameter``.
    """
    if object_dims is not None:
        object_dims = check_object_dims(object_dims)
    if object_diameter is not None:
        object_diameter = check_object_diameter(object_diameter)
    pred_arg, truth_arg = Path(prediction), Path(truth)
    if pred_arg.is_dir() != truth_arg.is_dir():
        raise InputError("give two files or two folders for the prediction and the truth.")
    report = BatchReport(single=not pred_arg.is_dir())
    pairs, errors, notes = pair_files(pred_arg, truth_arg, pair_by)
    for text in notes:
        yield Notice(text)
    if not pairs and not errors:
        raise InputError(f"no image files to evaluate in {pred_arg} and {truth_arg}.")
    for text in errors:
        yield Notice(text, "error")
    report.failures = [{"name": None, "error": text} for text in errors]
    method, fixed, postprocess = _policy(threshold, model)
    report.method = method
    if min_size is not None or fill_holes or split_touching:
        base = postprocess or PostProcess()
        postprocess = PostProcess(
            min_size=base.min_size if min_size is None else int(min_size),
            fill_holes=base.fill_holes or fill_holes,
            instances=base.instances or split_touching,
            split_touching=base.split_touching or split_touching,
            object_diameter=base.object_diameter,
        )
    if postprocess is not None and object_diameter is not None:
        postprocess = dataclasses.replace(postprocess, object_diameter=object_diameter)
    if object_diameter is not None and not (postprocess is not None and postprocess.split_touching):
        yield Notice("the object diameter is only used to split touching objects (--split-touching).")

    def fail(name: str, pred: Path, truth: Path, exc: Exception) -> Notice:
        msg = str(exc)
        text = msg if msg.startswith((str(pred), str(truth))) else f"{pred} vs {truth}: {msg}"
        report.failures.append({"name": name, "prediction": str(pred), "truth": str(truth),
                                "error": text})
        return Notice(text, "error")

    from napari_segloop.core.io.images import read_image

    total_steps = 2 * len(pairs)
    # Pass 1: read and check every pair (and pool the pixels for the best threshold).
    loaded = []
    pooled_values, pooled_labels = [], []
    for k, (name, pred_path, truth_path) in enumerate(pairs):
        try:
            pred = read_image(pred_path)
            truth_arr = check_truth(read_image(truth_path), pred.shape)
            reg = check_region(region, pred.shape)
            is_prob = pred.dtype.kind == "f"
            if is_prob:
                pred = as_probability(pred, unit_range=True)
            elif (remark := integer_map_notice(pred)) is not None:
                yield Notice(f"{pred_path}: {remark}")
            if not is_prob and method in ("best", "otsu"):
                raise SegloopError(f"{pred_path} is a mask ({pred.dtype}), not a probability map: "
                                   f"--{'best-threshold' if method == 'best' else 'threshold otsu'} "
                                   "needs probabilities.")
            if method == "best":
                fg = truth_foreground(truth_arr)
                pooled_values.append(pred[reg] if reg is not None else pred.ravel())
                pooled_labels.append(fg[reg] if reg is not None else fg.ravel())
            dims = object_dims if object_dims is not None else auto_object_dims(
                pred.shape, file_axes(pred_path) or file_axes(truth_path))
            loaded.append((name, pred_path, truth_path, pred, truth_arr, reg, is_prob, dims))
        except SegloopError as exc:
            yield fail(name, pred_path, truth_path, exc)
        except MemoryError:
            yield fail(name, pred_path, truth_path, SegloopError("not enough memory for this pair."))
        yield Progress(k + 1, total_steps, "reading")
    report.n_loaded = len(loaded)

    if method == "best" and loaded:
        values = np.concatenate(pooled_values)[None, :]
        labels = np.concatenate(pooled_labels)[None, :]
        pooled_values.clear()
        pooled_labels.clear()
        report.best = ThresholdCurve(values, labels).best_threshold("dice")
        fixed = report.best.threshold
        del values, labels
        if postprocess is not None:
            yield Notice("the best threshold is searched without post-processing; the metrics "
                         "below include it.")
    if method == "default" and any(item[6] for item in loaded):
        yield Notice("probability maps are thresholded at 0.5 (give --threshold T or "
                     "--best-threshold).")

    if object_dims is None and objects and any(item[7] == 3 for item in loaded):
        yield Notice("objects of 3-D stacks are counted in 3-D (connected across slices); "
                     "--objects 2d counts them slice by slice.")

    # Pass 2: evaluate every pair at its threshold.
    rows = report.rows
    total: Evaluation | None = None
    seen_notes: set[str] = set()
    for k, (name, pred_path, truth_path, pred, truth_arr, reg, is_prob, dims) in enumerate(loaded):
        try:
            t = None
            if is_prob:
                t = otsu_threshold(pred, reg) if method == "otsu" else fixed
            kwargs = {"objects": objects, "postprocess": postprocess, "object_dims": dims}
            head = {"name": name, "prediction": str(pred_path), "truth": str(truth_path)}
            tm = method if is_prob else None
            if per_slice and pred.ndim > 2:
                stack = evaluate_stack(pred, truth_arr, t, reg, **kwargs)
                ev = stack.whole
                assert ev is not None
                for i, sl in enumerate(stack.slices):
                    rows.append({**head, "slice": i, **sl.to_dict(), "threshold_method": tm})
                rows.append({**head, "slice": "all", **ev.to_dict(), "threshold_method": tm})
            else:
                ev = evaluate(pred, truth_arr, t, reg, **kwargs)
                rows.append({**head, **ev.to_dict(), "threshold_method": tm})
            if pred.ndim > 2:
                rows[-1]["object_dims"] = dims
            for text in ev.notes:
                if text not in seen_notes:
                    seen_notes.add(text)
                    yield Notice(f"{truth_path.name}: {text}")
            total = ev if total is None else total + ev
        except SegloopError as exc:
            yield fail(name, pred_path, truth_path, exc)
        except MemoryError:
            yield fail(name, pred_path, truth_path, SegloopError("not enough memory for this pair."))
        yield Progress(len(pairs) + k + 1, total_steps, "evaluating")

    summary: dict[str, Any] = {"name": "summary", "pairs": len(pairs), "failed": len(report.failures)}
    if total is not None:
        summary.update(total.to_dict())
        whole_rows = [r for r in rows if r.get("slice", "all") == "all"]
        for key in ("dice", "iou", "object_f1"):
            vals = [r[key] for r in whole_rows if r.get(key) is not None]
            summary[f"mean_{key}"] = sum(vals) / len(vals) if vals else None
        if method == "otsu":
            summary["threshold"] = None
    best = report.best
    if best is not None:
        summary["threshold"] = best.threshold
        summary["best_threshold"] = best.threshold
        summary["best_dice"] = best.score
        for row in rows:
            if row.get("threshold") is not None:
                row["best_dice"] = best.score if len(loaded) == 1 else None
    summary["threshold_method"] = method
    report.summary = summary
    return report
