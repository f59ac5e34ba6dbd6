"""Predicting one image file into one output file (what ``segloop predict`` does per input)."""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path

import numpy as np

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.events import Event
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.masks import apply_threshold, make_mask

__all__ = ["output_for", "predict_file"]


def output_for(bundle: ModelBundle, prob: np.ndarray, threshold: float | str | None) -> np.ndarray:
    """What a prediction writes: the probabilities, a raw mask, or (``auto``) the model's mask.

    Parameters
    ----------
    prob : ndarray of float32
        The probability map.
    threshold : float, "auto" or None
        None: the probabilities; a number: ``prob > threshold`` as uint8;
        ``auto``: the bundle's threshold and post-processing
        (:func:`napari_segloop.core.masks.make_mask`), as the Threshold dock shows.
    """
    if threshold is None:
        return prob
    if threshold == "auto":
        s = bundle.settings
        return make_mask(prob, s.threshold, s.postprocess)
    return apply_threshold(prob, float(threshold))


def predict_file(
    bundle: ModelBundle,
    src: str | Path,
    dst: str | Path,
    options: PredictOptions,
    threshold: float | str | None = None,
) -> Generator[Event, None, Path]:
    """Read ``src``, predict it, and write the result to ``dst`` (atomically).

    Yields the prediction's events; returns ``dst``. Raises
    :class:`~napari_segloop.core.errors.SegloopError` for a bad file.
    """
    from napari_segloop.core.io.images import read_image, write_image

    image = read_image(src)
    prob = yield from predict(bundle, image, options)
    write_image(dst, output_for(bundle, prob, threshold))
    return Path(dst)
