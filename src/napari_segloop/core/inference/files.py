"""Predicting one image file into one output file (what ``segloop predict`` does per input)."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path

import numpy as np

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.events import Event
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.masks import apply_threshold, make_mask, resolve_object_diameter

__all__ = ["output_for", "predict_file"]


def output_for(
    bundle: ModelBundle,
    prob: np.ndarray,
    threshold: float | str | None,
    *,
    object_dims: int = 2,
    scale: float | None = None,
) -> np.ndarray:
    """What a prediction writes: the probabilities, a raw mask, or (``auto``) the model's mask.

    Parameters
    ----------
    bundle : ModelBundle
    prob : ndarray of float32
        The probability map.
    threshold : float, "auto" or None
        None: the probabilities; a number: ``prob > threshold`` as uint8;
        ``auto``: the bundle's threshold and post-processing
        (:func:`napari_segloop.core.masks.make_mask`), as the Threshold dock shows.
    object_dims : {2, 3}
        Post-processing of a stack with ``auto``: 2-D objects per slice, or
        3-D objects (minimum size in voxels, 3-D instances).
    scale : float, optional
        The resize factor applied before the model; with the bundle's
        ``object_size`` it gives the object diameter in this image for
        splitting touching objects (see
        :func:`napari_segloop.core.masks.resolve_object_diameter`).
    """
    if threshold is None:
        return prob
    if threshold == "auto":
        s = bundle.settings
        pp = s.postprocess
        if pp.split_touching:
            pp = dataclasses.replace(pp, object_diameter=resolve_object_diameter(pp, s, scale=scale))
        return make_mask(prob, s.threshold, pp, object_dims=object_dims)
    return apply_threshold(prob, float(threshold))


def predict_file(
    bundle: ModelBundle,
    src: str | Path,
    dst: str | Path,
    options: PredictOptions,
    threshold: float | str | None = None,
    *,
    object_dims: int | None = 2,
) -> Generator[Event, None, Path]:
    """Read ``src``, predict it, and write the result to ``dst`` (atomically).

    ``object_dims`` is the post-processing of stacks with ``threshold="auto"``
    (2-D or 3-D objects); None: 3-D for a stack unless the file's axes say
    time (:func:`napari_segloop.core.evaluation.planes.auto_object_dims`).
    Yields the prediction's events; returns ``dst``. Raises
    :class:`~napari_segloop.core.errors.SegloopError` for a bad file.
    """
    from napari_segloop.core.io.images import read_image, write_image

    image = read_image(src)
    prob = yield from predict(bundle, image, options)
    dims = object_dims
    if dims is None:
        from napari_segloop.core.evaluation.planes import auto_object_dims, file_axes

        dims = auto_object_dims(prob.shape, _spatial_axes(file_axes(Path(src)), image.ndim, prob.ndim))
    write_image(dst, output_for(bundle, prob, threshold, object_dims=dims,
                                scale=options.scale_factor(bundle)))
    return Path(dst)


def _spatial_axes(axes: str | None, image_ndim: int, prob_ndim: int) -> str | None:
    """The axes of the probability map: the file's, without its channel axes (``C``, ``S``)."""
    if not axes or len(axes) != image_ndim:
        return None
    spatial = "".join(a for a in axes if a not in "CS")
    return spatial if len(spatial) == prob_ndim else None
