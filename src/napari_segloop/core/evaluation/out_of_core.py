"""``segloop evaluate`` of an OME-Zarr (or large TIFF) map against its ground truth, block by block.

The file counterpart of the Threshold and Confusion docks on a map larger
than memory: one pass over the blocks builds the step histogram
(:func:`~napari_segloop.core.evaluation.histograms.binned_curve`) when the
threshold needs it (``best``, ``otsu``). ``best`` is the exact optimum, as
in memory: the histogram's best step, refined between steps by one more pass
that keeps only the pixels of the bins that may beat it
(:func:`~napari_segloop.core.evaluation.refine.exact_best_threshold`), which
also gives its counts. Other thresholds are counted from the histogram (a
slider step) or by one more pass
(:func:`~napari_segloop.core.evaluation.histograms.count_pixels`). Memory
stays bounded by a block whatever the map's size. The result is a
:class:`~napari_segloop.core.evaluation.batch.BatchReport` of one pair, so
the command prints, writes JSON and CSV exactly as for files in memory.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.batch import BatchReport, _policy, pair_key
from napari_segloop.core.evaluation.histograms import BLOCK_NOTE, binned_curve, count_pixels
from napari_segloop.core.evaluation.refine import exact_best_threshold
from napari_segloop.core.evaluation.results import Evaluation
from napari_segloop.core.events import Event, Notice, Progress

__all__ = ["evaluate_out_of_core"]


def _open(path: Path, what: str) -> Any:
    from napari_segloop.core.io.lazy import open_lazy

    try:
        return open_lazy(path)
    except InputError as exc:
        raise InputError(f"{what}: {exc}") from None


def _name(path: Path) -> str:
    """``slide`` for ``slide.ome.zarr``, ``slide_probability.zarr`` or ``slide.ome.tif``."""
    name = path.name.rstrip("/")
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return pair_key(Path(name[: -len(suffix)] + ".x"))
    return pair_key(path)


def evaluate_out_of_core(prediction: str | Path, truth: str | Path, *, threshold: float | str | None = None,
                         model: str = "default") -> Generator[Event, None, BatchReport]:
    """Pixel metrics of one probability map against its ground truth, read block by block.

    Parameters
    ----------
    prediction, truth : path
        ``.zarr`` / OME-Zarr folders or TIFF files (read region by region).
    threshold : float, "best", "otsu", "auto" or None
        Foreground where probability > T; ``best``: the best-Dice step of
        the 1001 steps over [0, 1] (from the histogram, not the exact
        optimum); ``otsu``: Otsu's threshold of the histogram; ``auto``: the
        threshold stored in ``model`` (its post-processing is not applied);
        None: 0.5.
    model : str
        The bundle ``auto`` reads.

    Yields
    ------
    Progress, Notice
        After each block; what is left out.

    Returns
    -------
    BatchReport
        One row (pixel metrics; object metrics None), ``best`` for ``best``.

    Raises
    ------
    InputError
        Unreadable inputs, a prediction that is not a probability map, shapes that differ.
    """
    method, value, pp = _policy(threshold, model)
    prob = _open(Path(prediction), "the prediction")
    gt = _open(Path(truth), "the ground truth")
    try:
        if prob.dtype.kind != "f":
            raise InputError(f"{prediction}: a mask or label map ({prob.dtype}) is scored block by block "
                             "only as a probability map; give the probability map (float32).")
        if pp is not None and pp.steps():
            yield Notice(f"The model's post-processing ({', '.join(pp.steps())}) is not applied: "
                         "a map read block by block is scored raw.", "warning")
        curve = None
        best = None
        if method in ("best", "otsu"):
            curve = yield from binned_curve(prob, gt if method == "best" else None)
            if method == "best":
                best = yield from exact_best_threshold(prob, gt, curve, "dice")
                curve.remember(best.metrics)
                value = best.threshold
            else:
                value = curve.otsu()
        assert value is not None
        if curve is not None and method == "best" and curve.known(value):
            pixels = curve.metrics(value)
        else:
            pixels = yield from count_pixels(prob, gt, value)
        yield Progress(1, 1, "done")
    finally:
        prob.close()
        gt.close()
    evaluation = Evaluation(pixels, None, (BLOCK_NOTE,))
    row = {"name": _name(Path(prediction)), "prediction": str(prediction), "truth": str(truth),
           **evaluation.to_dict(), "threshold_method": method, "notes": BLOCK_NOTE}
    summary = {"name": "summary", "pairs": 1, "failed": 0, "threshold_method": method,
               **pixels.to_dict()}
    if best is not None:
        summary.update(best_threshold=best.threshold, best_dice=best.score)
    return BatchReport(rows=[row], summary=summary, best=best, single=True, method=method, n_loaded=1)
