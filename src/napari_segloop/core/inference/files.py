"""Predicting one image file into one output file (what ``segloop predict`` does per input)."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from pathlib import Path

import numpy as np

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.events import Event, Notice
from napari_segloop.core.inference.ensemble import Ensemble, predict_any
from napari_segloop.core.inference.normalize import detect_channel_axis
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.core.masks import apply_threshold, make_mask, resolve_object_diameter

__all__ = ["channel_axis_from_axes", "output_for", "predict_file"]


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
        A K-class model (``prob`` is ``(K, ...)``) writes its class map instead:
        the number is the minimum confidence, ``auto`` the model's with its
        post-processing per class (:func:`~napari_segloop.core.masks.postprocess_classes`).
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
    if getattr(bundle, "classes", 1) > 1:
        # K classes: the class map, with the minimum confidence (auto: the model's) and its
        # post-processing applied class by class.
        from napari_segloop.core.evaluation.multiclass import class_map
        from napari_segloop.core.masks import postprocess_classes

        s = bundle.settings
        auto = threshold == "auto"
        cmap = class_map(prob, float(s.threshold if auto else threshold))
        return postprocess_classes(cmap, bundle.classes, s.postprocess if auto else None,
                                   object_dims=object_dims)
    if threshold == "auto":
        s = bundle.settings
        pp = s.postprocess
        if pp.split_touching:
            pp = dataclasses.replace(pp, object_diameter=resolve_object_diameter(pp, s, scale=scale))
        return make_mask(prob, s.threshold, pp, object_dims=object_dims)
    return apply_threshold(prob, float(threshold))


def predict_file(
    bundle: ModelBundle | Ensemble,
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
    With ``options.channel_axis="auto"``, the axes an OME-TIFF or ImageJ file
    records choose the channel axis (:func:`channel_axis_from_axes`: ``C`` or
    ``S``; none for ``TYX``, ``ZYX``), so that channels never become a stack.
    Yields the prediction's events; returns ``dst``. Raises
    :class:`~napari_segloop.core.errors.SegloopError` for a bad file.
    """
    from napari_segloop.core.errors import InputError
    from napari_segloop.core.evaluation.planes import auto_object_dims, file_axes
    from napari_segloop.core.io.images import read_image, write_image

    image = read_image(src)
    axes = file_axes(Path(src))
    axis = channel_axis_from_axes(axes, image.shape, bundle.in_channels)
    use_axes = options.channel_axis == "auto" and axis != "unknown"
    if use_axes:
        options = dataclasses.replace(options, channel_axis=axis)
        if axis != detect_channel_axis(image.shape, bundle.in_channels):
            what = "no channel axis" if axis is None else f"channel axis {axis} ({axes[axis]})"
            yield Notice(f"The file's axes are {axes}: {what}.")
    try:
        prob = yield from predict_any(bundle, image, options)
    except InputError as exc:
        if not use_axes or "channel" not in str(exc):
            raise
        where = "no channel axis" if axis is None else f"axis {axis} the channels"
        raise InputError(f"{str(exc).rstrip('.')} (the file's axes {axes} give {where}; "
                         "--channel-axis overrides them).") from None
    dims = object_dims
    spatial = prob.shape[1:] if bundle.classes > 1 else prob.shape
    if dims is None:
        dims = auto_object_dims(spatial, _spatial_axes(axes, image.ndim, len(spatial)))
    write_image(dst, output_for(bundle, prob, threshold, object_dims=dims,
                                scale=options.scale_factor(bundle)))
    return Path(dst)


def channel_axis_from_axes(
    axes: str | None, shape: tuple[int, ...], model_channels: int
) -> int | str | None:
    """The channel axis a file's axes (``"CZYX"``, ``"ZCYX"``, ``"YXS"``, ``"TYX"``) name.

    Parameters
    ----------
    axes : str or None
        One letter per axis, as :func:`napari_segloop.core.evaluation.planes.file_axes`
        reads them from an OME-TIFF or ImageJ file.
    shape : tuple of int
        The array's shape.
    model_channels : int
        Channels the model expects (chooses between a ``C`` and an ``S`` axis).

    Returns
    -------
    int, None or "unknown"
        The ``C`` (channels) or ``S`` (samples, RGB) axis; None when every axis
        is named and none is a channel axis (``TYX``, ``ZYX``); ``"unknown"``
        when the axes do not say (no axes, another length, unknown letters
        ``Q``/``I``, or a last axis of size 1 or 2 left to the usual rules).
    """
    if not axes or len(axes) != len(shape):
        return "unknown"
    candidates = [i for i, a in enumerate(axes) if a in "CS"]
    if not candidates:
        if any(a not in "TZYX" for a in axes) or shape[-1] in (1, 2):
            return "unknown"
        return None
    if len(candidates) == 1:
        return candidates[0]
    matching = [i for i in candidates if shape[i] == model_channels]
    return matching[0] if matching else candidates[0]


def _spatial_axes(axes: str | None, image_ndim: int, prob_ndim: int) -> str | None:
    """The axes of the probability map: the file's, without its channel axes (``C``, ``S``)."""
    if not axes or len(axes) != image_ndim:
        return None
    spatial = "".join(a for a in axes if a not in "CS")
    return spatial if len(spatial) == prob_ndim else None
