"""Sample data for napari's File > Open Sample menu."""

from __future__ import annotations

from typing import Any

#: Seed of the sample image, so that it is the same for every user and test.
SAMPLE_SEED = 2024
SAMPLE_SHAPE = (512, 512)


def synthetic_nuclei() -> list[tuple[Any, dict[str, Any], str]]:
    """A deterministic synthetic nuclei image and its ground-truth instance labels.

    Returns
    -------
    list of napari layer data tuples
        ``nuclei`` (image) and ``nuclei ground truth`` (labels).
    """
    from napari_segloop.core.synthetic import make_nuclei

    image, labels = make_nuclei(SAMPLE_SHAPE, seed=SAMPLE_SEED)
    return [
        (image, {"name": "nuclei", "colormap": "gray"}, "image"),
        (labels, {"name": "nuclei ground truth", "opacity": 0.5, "visible": False}, "labels"),
    ]


def phase_contrast_cells() -> list[tuple[Any, dict[str, Any], str]]:
    """A phase-contrast-like image the default model gets wrong, with its ground truth.

    Dark, granular cells inside bright halos: the built-in model (trained on
    bright nuclei) marks the halos. It is the sample to fine-tune on.

    Returns
    -------
    list of napari layer data tuples
        ``phase contrast`` (image) and ``phase contrast ground truth`` (labels).
    """
    from napari_segloop.core.synthetic import make_phase_contrast

    image, labels = make_phase_contrast(SAMPLE_SHAPE, seed=SAMPLE_SEED)
    return [
        (image, {"name": "phase contrast", "colormap": "gray"}, "image"),
        (labels, {"name": "phase contrast ground truth", "opacity": 0.5, "visible": False}, "labels"),
    ]
