"""Evaluate a segmentation model against ground-truth labels, next to a global Otsu threshold.

For each image/labels pair the model's probability map is computed with the
product's own tiled inference (:func:`napari_segloop.core.inference.predict`
when available, otherwise a plain padded forward pass), thresholded at the
bundle's threshold and post-processed with the bundle's post-processing
(min size, fill holes). Objects are the 4-connected components of the
binary mask, as with the product's "instances" post-processing.

Printed as JSON, per image and pooled over all images:

* ``pixel_dice``: Dice of foreground pixels against ``labels > 0``;
* ``object_f1``: F1 of objects matched one-to-one at IoU > 0.5, plus
  ``precision``, ``recall``, ``n_pred`` and ``n_true``;

for the model and for a global Otsu threshold
(:func:`skimage.filters.threshold_otsu`), plain and with the same
post-processing.

Example (the StarDist sample image, a crop of the DSB 2018 data)::

    python scripts/evaluate_default_model.py img2d.tif mask2d.tif
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def read_image(path: str | Path) -> np.ndarray:
    """Read a 2-D image (TIFF via tifffile, anything else via scikit-image).

    Parameters
    ----------
    path : str or Path
        Image file.

    Returns
    -------
    numpy.ndarray
        The image, squeezed to 2-D.
    """
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        data = tifffile.imread(path)
    else:
        from skimage import io

        data = io.imread(path)
    data = np.squeeze(np.asarray(data))
    if data.ndim != 2:
        raise SystemExit(f"{path}: expected a 2-D image, got shape {data.shape}")
    return data


def pixel_dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice coefficient of two binary masks (1.0 when both are empty).

    Parameters
    ----------
    pred, true : numpy.ndarray
        Masks of the same shape (non-zero is foreground).

    Returns
    -------
    float
    """
    p = pred > 0
    t = true > 0
    denom = int(p.sum()) + int(t.sum())
    return 1.0 if denom == 0 else 2.0 * int((p & t).sum()) / denom


def match_objects(pred: np.ndarray, true: np.ndarray, iou: float = 0.5) -> dict[str, float]:
    """Match instance labels one-to-one at IoU > ``iou``.

    For ``iou >= 0.5`` an object can overlap at most one other object by more
    than that, so the matching is unique without an assignment step.

    Parameters
    ----------
    pred, true : numpy.ndarray
        Integer instance labels of the same shape (0 is background).
    iou : float
        Minimum intersection over union for a match.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``n_pred``, ``n_true``, ``precision``,
        ``recall`` and ``object_f1``.
    """
    from skimage.segmentation import relabel_sequential

    p = relabel_sequential(pred.astype(np.int64))[0].ravel()
    t = relabel_sequential(true.astype(np.int64))[0].ravel()
    n_p, n_t = int(p.max()), int(t.max())
    overlap = np.bincount(t * (n_p + 1) + p, minlength=(n_t + 1) * (n_p + 1))
    overlap = overlap.reshape(n_t + 1, n_p + 1)
    area_t = overlap.sum(axis=1)
    area_p = overlap.sum(axis=0)
    inter = overlap[1:, 1:].astype(float)
    union = area_t[1:, None] + area_p[None, 1:] - inter
    ious = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    tp = int((ious > iou).sum()) if ious.size else 0
    fp, fn = n_p - tp, n_t - tp
    precision = tp / n_p if n_p else 1.0
    recall = tp / n_t if n_t else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    return {
        "object_f1": f1,
        "precision": precision,
        "recall": recall,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_pred": n_p,
        "n_true": n_t,
    }


def score(binary: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Pixel Dice and object matching of a binary mask against instance labels.

    Parameters
    ----------
    binary : numpy.ndarray
        Predicted foreground mask.
    labels : numpy.ndarray
        Ground-truth instance labels.

    Returns
    -------
    dict
        ``pixel_dice`` plus the entries of :func:`match_objects`.
    """
    from skimage.measure import label

    instances = label(binary > 0, connectivity=1)
    return {"pixel_dice": pixel_dice(binary, labels), **match_objects(instances, labels)}


def _postprocess(mask: np.ndarray, min_size: int, fill_holes: bool) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.measure import label

    binary = mask > 0
    if fill_holes:
        binary = ndi.binary_fill_holes(binary)
    if min_size > 0:
        lab = label(binary, connectivity=1)
        sizes = np.bincount(lab.ravel())
        small = sizes < min_size
        small[0] = False
        binary = binary & ~small[lab]
    return binary.astype(np.uint8)


def _fallback_predict(bundle: Any, image: np.ndarray, scale: float) -> np.ndarray:
    """Whole-image forward pass with percentile normalisation and padding."""
    import torch

    norm = bundle.settings.normalization
    img = image.astype(np.float32)
    lo, hi = np.percentile(img, [norm.low, norm.high])
    x = (img - lo) / max(float(hi - lo), 1e-6)
    if norm.clip:
        x = np.clip(x, norm.clip_min, norm.clip_max)
    t = torch.from_numpy(x)[None, None]
    h, w = x.shape
    if scale != 1:
        t = torch.nn.functional.interpolate(
            t, scale_factor=scale, mode="bilinear", align_corners=False
        )
    sh, sw = t.shape[-2:]
    ph, pw = (-sh) % 32, (-sw) % 32
    t = torch.nn.functional.pad(t, (0, pw, 0, ph), mode="reflect")
    with torch.inference_mode():
        prob = torch.sigmoid(bundle.model(t))[:, :, :sh, :sw]
    if scale != 1:
        prob = torch.nn.functional.interpolate(
            prob, size=(h, w), mode="bilinear", align_corners=False
        )
    return prob[0, 0].numpy()


def predict_probabilities(
    bundle: Any, image: np.ndarray, object_size: float | None, scale: float | None
) -> np.ndarray:
    """Probability map of ``bundle`` for a 2-D ``image`` on the CPU.

    Parameters
    ----------
    bundle : ModelBundle
        The loaded model.
    image : numpy.ndarray
        2-D image.
    object_size : float, optional
        Typical object diameter in this image (sets the resize factor).
    scale : float, optional
        Explicit resize factor (overrides ``object_size``).

    Returns
    -------
    numpy.ndarray
        float32 probabilities, shaped like ``image``.
    """
    try:
        from napari_segloop.core.inference.predict import predict_array
    except ImportError:
        predict_array = None
    if predict_array is not None:
        return predict_array(
            bundle, image, device="cpu", object_size=object_size, scale=scale, amp=False,
            channel_axis=None,
        )
    factor = 1.0
    if scale is not None:
        factor = float(scale)
    elif object_size and bundle.settings.object_size:
        factor = float(bundle.settings.object_size) / float(object_size)
    return _fallback_predict(bundle, image, factor)


def _pool(rows: list[dict[str, float]]) -> dict[str, float]:
    """Pool per-image results (object counts summed; Dice from summed pixel counts)."""
    tp = sum(r["tp"] for r in rows)
    fp = sum(r["fp"] for r in rows)
    fn = sum(r["fn"] for r in rows)
    inter = sum(r["_inter"] for r in rows)
    total = sum(r["_total"] for r in rows)
    return {
        "pixel_dice": 2 * inter / total if total else 1.0,
        "object_f1": 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def _with_counts(binary: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    result = score(binary, labels)
    p, t = binary > 0, labels > 0
    result["_inter"] = int((p & t).sum())
    result["_total"] = int(p.sum()) + int(t.sum())
    return result


def _public(result: dict[str, float]) -> dict[str, float]:
    return {
        k: (round(v, 4) if isinstance(v, float) else v)
        for k, v in result.items()
        if not k.startswith("_")
    }


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; prints the evaluation as JSON.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pairs", nargs="+", help="IMAGE LABELS [IMAGE LABELS ...]")
    parser.add_argument("--model", default="default",
                        help="'default' (the built-in model) or a bundle folder")
    parser.add_argument("--threshold", type=float, default=None,
                        help="probability threshold (default: the bundle's)")
    parser.add_argument("--min-size", type=int, default=None,
                        help="remove objects smaller than this (default: the bundle's)")
    parser.add_argument("--no-fill-holes", action="store_true", help="do not fill holes")
    parser.add_argument("--object-size", type=float, default=None,
                        help="typical object diameter in the images, px (default: no resize)")
    parser.add_argument("--scale", type=float, default=None, help="explicit resize factor")
    parser.add_argument("--sweep", action="store_true",
                        help="also report the model at thresholds 0.3 ... 0.7 (for information)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if len(args.pairs) % 2:
        parser.error("give image and labels paths in pairs")

    import torch
    from skimage.filters import threshold_otsu

    from napari_segloop.core.bundle import load_bundle, load_model

    torch.set_num_threads(args.threads)
    bundle = load_model("default") if args.model == "default" else load_bundle(args.model)
    settings = bundle.settings
    threshold = settings.threshold if args.threshold is None else args.threshold
    min_size = settings.postprocess.min_size if args.min_size is None else args.min_size
    fill = settings.postprocess.fill_holes and not args.no_fill_holes
    sweep = [0.3, 0.4, 0.5, 0.6, 0.7] if args.sweep else []

    per_image = []
    pooled: dict[str, list[dict[str, float]]] = {}
    for image_path, labels_path in zip(args.pairs[::2], args.pairs[1::2], strict=True):
        image = read_image(image_path)
        labels = read_image(labels_path).astype(np.int64)
        if image.shape != labels.shape:
            raise SystemExit(f"{image_path} {image.shape} and {labels_path} {labels.shape} differ")
        start = time.perf_counter()
        prob = predict_probabilities(bundle, image, args.object_size, args.scale)
        seconds = time.perf_counter() - start
        otsu = image > threshold_otsu(image)
        results = {
            "model": _with_counts(_postprocess(prob > threshold, min_size, fill), labels),
            "otsu": _with_counts(otsu, labels),
            "otsu_postprocessed": _with_counts(_postprocess(otsu, min_size, fill), labels),
        }
        for t in sweep:
            results[f"model@{t:g}"] = _with_counts(_postprocess(prob > t, min_size, fill), labels)
        for key, value in results.items():
            pooled.setdefault(key, []).append(value)
        per_image.append({
            "image": str(image_path),
            "labels": str(labels_path),
            "shape": list(image.shape),
            "dtype": str(image.dtype),
            "inference_seconds": round(seconds, 3),
            **{k: _public(v) for k, v in results.items()},
        })

    report = {
        "model": str(bundle.source),
        "encoder": bundle.encoder,
        "threshold": threshold,
        "postprocess": {"min_size": min_size, "fill_holes": fill},
        "object_size": args.object_size,
        "scale": args.scale,
        "iou_match": 0.5,
        "images": per_image,
        "pooled": {k: _public(_pool(v)) for k, v in pooled.items()},
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
