"""The sample an exported model is tested on: test input, test output and cover image.

The sample is, in this order: an image the caller gives (the CLI's
``--sample``, the Model dock's current image), the first training image
stored in the bundle (``training/pair_000.npz``), or the package's synthetic
nuclei image. A centred square crop of at most one tile is used, a multiple
of the network's input multiple, so that the test output is exactly one
forward pass of what ``segloop predict`` computes on that crop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import InputError

#: Largest side of the test crop (bioimage.io packages stay small).
MAX_SAMPLE_SIDE = 256


@dataclass
class ExportSample:
    """The raw test crop and where it came from.

    Attributes
    ----------
    raw : numpy.ndarray
        float32 ``(C, S, S)``: raw intensities after the channel conversion.
    origin : str
        "your image", "the bundle's training image" or "the synthetic nuclei sample".
    """

    raw: np.ndarray
    origin: str


def _stored_training_image(bundle: ModelBundle) -> np.ndarray | None:
    folder = Path(str(bundle.source))
    pair = folder / "training" / "pair_000.npz"
    if not folder.is_dir() or not pair.is_file():
        return None
    try:
        with np.load(pair, allow_pickle=False) as data:
            return np.asarray(data["image"]) if "image" in data.files else None
    except (OSError, ValueError):
        return None


def choose_sample(bundle: ModelBundle, side: int, multiple: int, image: Any = None,
                  **prepare: Any) -> ExportSample:
    """Pick the test image and crop it to a centred ``side`` x ``side`` square (or less).

    Parameters
    ----------
    bundle : ModelBundle
    side : int
        Wanted crop side (rounded down to ``multiple``; the image may make it smaller).
    multiple : int
        The network's input multiple.
    image : array-like, optional
        The user's image (any layout :func:`~napari_segloop.core.inference.normalize.prepare_input`
        reads; the first plane of a stack is used).
    **prepare
        ``channel_axis``, ``rgb``, ``convert``, ``channel`` for ``prepare_input``.

    Raises
    ------
    InputError
        If the given image is smaller than the smallest size the network accepts.
    """
    from napari_segloop.core.inference.normalize import prepare_input

    origin = "your image"
    if image is None:
        image = _stored_training_image(bundle)
        origin = "the bundle's training image"
    if image is None:
        from napari_segloop.core.synthetic import make_nuclei
        from napari_segloop.sample_data import SAMPLE_SEED, SAMPLE_SHAPE

        image = make_nuclei(SAMPLE_SHAPE, seed=SAMPLE_SEED)[0]
        if bundle.in_channels > 1:
            image = np.stack([image] * bundle.in_channels)
        origin = "the synthetic nuclei sample"
    prepared = prepare_input(np.asarray(image), bundle.in_channels, prepare.get("channel_axis", "auto"),
                             prepare.get("rgb"), prepare.get("convert", "none"), prepare.get("channel"))
    first = tuple(0 for _ in prepared.stack_shape)
    chw = np.asarray(prepared.slice_chw(first), dtype=np.float32)
    h, w = chw.shape[-2:]
    s = min(int(side), h - h % multiple, w - w % multiple)
    s -= s % multiple
    if s < int(side) and s < multiple * 2:
        raise InputError(f"The sample image ({h}x{w}) is smaller than the {side} px the exported "
                         "model is tested on; give a larger image.")
    top, left = (h - s) // 2, (w - s) // 2
    return ExportSample(np.ascontiguousarray(chw[:, top:top + s, left:left + s]), origin)


def sample_probability(bundle: ModelBundle, raw: np.ndarray) -> np.ndarray:
    """``(K, S, S)`` float32 probabilities of the crop: segloop's normalisation, one forward pass.

    The crop is one tile, so this is what the tiler computes for it.
    """
    import torch

    from napari_segloop.core.inference.normalize import compute_stats, normalized_copy
    from napari_segloop.core.models.registry import probabilities

    stats = compute_stats(raw, bundle.settings.normalization)
    x = torch.from_numpy(normalized_copy(raw, stats))[None]
    model = bundle.model
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            prob = probabilities(model(x.to(device))).cpu().numpy()[0]
    finally:
        model.train(was_training)
    return np.ascontiguousarray(prob, dtype=np.float32)


def normalized_input(bundle: ModelBundle, raw: np.ndarray) -> np.ndarray:
    """``(1, C, S, S)`` float32: the crop as the network sees it (for the weight parity checks)."""
    from napari_segloop.core.inference.normalize import compute_stats, normalized_copy

    return normalized_copy(raw, compute_stats(raw, bundle.settings.normalization))[None]


def cover_image(raw: np.ndarray, prob: np.ndarray, threshold: float) -> np.ndarray:
    """An RGB ``uint8`` picture: image, probability and mask side by side, on a 2:1 canvas.

    For K classes the probability panel shows the confidence of the arg-max and
    the mask panel the class map in colours.
    """
    image = raw.mean(axis=0)
    lo, hi = np.percentile(image, [1.0, 99.8])
    gray = np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1)
    if prob.shape[0] == 1:
        p = prob[0]
        mask_rgb = np.repeat((p > threshold)[..., None], 3, axis=2).astype(np.float32)
    else:
        p = prob.max(axis=0)
        classes = prob.argmax(axis=0)
        palette = np.array([[0, 0, 0], [1, 0.2, 0.2], [0.2, 0.8, 0.2], [0.3, 0.4, 1], [1, 0.8, 0.1],
                            [0.8, 0.3, 0.9], [0.1, 0.9, 0.9]], dtype=np.float32)
        mask_rgb = palette[classes % len(palette)]
    magma = np.stack([p, p ** 2, 0.4 + 0.2 * p - 0.4 * p ** 3], axis=-1).clip(0, 1)
    panels = [np.repeat(gray[..., None], 3, axis=2), magma, mask_rgb]
    s = gray.shape[0]
    gap = max(2, s // 64)
    width = 3 * s + 2 * gap
    height = max(s, width // 2)
    canvas = np.ones((height, 2 * height if 2 * height > width else width, 3), dtype=np.float32)
    top = (height - s) // 2
    left = (canvas.shape[1] - width) // 2
    for k, panel in enumerate(panels):
        x0 = left + k * (s + gap)
        canvas[top:top + s, x0:x0 + s] = panel
    return (canvas * 255).round().astype(np.uint8)
