"""Ensembles: the mean probability of several models of one task, and how much they disagree.

The members may differ in architecture, encoder, input multiple, normalisation
and scale: each one predicts the image through the usual tiler with its own
settings (:func:`napari_segloop.core.inference.predict.predict`), and the maps
are averaged. The spread of the members (twice their standard deviation,
clipped to [0, 1], from Welford's streaming update so that it is exactly 0
where they agree) is the ensemble's uncertainty map, the one the
Uncertainty dock and ``segloop suggest --model A --model B`` rank regions by.

An :class:`Ensemble` stands in for a :class:`ModelBundle` wherever a
prediction is written (``segloop predict --model A --model B``, the Predict
dock): its settings (threshold, post-processing) are the first member's.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Event, part_of
from napari_segloop.core.inference.predict import PredictOptions, predict

__all__ = ["Ensemble", "EnsemblePrediction", "predict_any", "predict_ensemble"]


@dataclass
class Ensemble:
    """Several models of the same task, predicted together.

    Parameters
    ----------
    members : list of ModelBundle
        At least two; the same input channels and classes.

    Raises
    ------
    InputError
        Fewer than two members, or members that do not read or predict alike.
    """

    members: list[ModelBundle]

    def __post_init__(self) -> None:
        if len(self.members) < 2:
            raise InputError("An ensemble needs at least two models.")
        first = self.members[0]
        for k, m in enumerate(self.members[1:], start=2):
            if m.in_channels != first.in_channels:
                raise InputError(f"Model {k} of the ensemble takes {m.in_channels} input channel(s), "
                                 f"model 1 {first.in_channels}: they are not models of one task.")
            if m.classes != first.classes:
                raise InputError(f"Model {k} of the ensemble predicts {m.classes} class(es), "
                                 f"model 1 {first.classes}: they are not models of one task.")

    @property
    def settings(self) -> Any:
        """The first member's settings (its threshold and post-processing make the mask)."""
        return self.members[0].settings

    @property
    def in_channels(self) -> int:
        """Input channels (the same for every member)."""
        return self.members[0].in_channels

    @property
    def classes(self) -> int:
        """Output classes (the same for every member)."""
        return self.members[0].classes

    @property
    def source(self) -> str:
        """The members' sources, joined with ``+``."""
        return " + ".join(str(m.source) for m in self.members)

    @property
    def architecture(self) -> str:
        """``ensemble of N (Unet, UNet3Plus, ...)``."""
        return f"ensemble of {len(self.members)} ({', '.join(m.architecture for m in self.members)})"


@dataclass
class EnsemblePrediction:
    """The result of :func:`predict_ensemble`.

    Attributes
    ----------
    probability : np.ndarray
        The members' mean probability, float32 (``(K, ...)`` for K classes).
    disagreement : np.ndarray
        Twice the members' standard deviation, clipped to [0, 1], float32
        (with K classes, the largest over the classes).
    members : int
        How many models were averaged.
    """

    probability: np.ndarray
    disagreement: np.ndarray
    members: int


def predict_ensemble(
    ensemble: Ensemble | list[ModelBundle],
    image: Any,
    options: PredictOptions | None = None,
    slice_index: tuple[int, ...] | None = None,
) -> Generator[Event, None, EnsemblePrediction]:
    """Predict ``image`` with every member; return their mean and their disagreement.

    Progress runs over all members (member ``k`` of ``n`` fills its share);
    closing the generator cancels the member that is running. Memory: two
    float32 maps besides the member's own.

    Raises
    ------
    InputError
        Members that give maps of different shapes (they read the image
        differently, e.g. one sees channels where another sees a stack).
    """
    members = ensemble.members if isinstance(ensemble, Ensemble) else Ensemble(list(ensemble)).members
    mean = m2 = None
    n = len(members)
    for k, member in enumerate(members):
        p = yield from part_of(predict(member, image, options, slice_index), k, n,
                               f"model {k + 1} of {n}")
        if mean is not None and p.shape != mean.shape:
            raise InputError(f"Model {k + 1} of the ensemble predicts a map of shape {p.shape}, "
                             f"model 1 {mean.shape}: they do not read the image alike.")
        if mean is None:
            mean, m2 = p, np.zeros_like(p)
            continue
        # Welford's update: accurate in float32, and exactly 0 where the models agree.
        delta = p - mean
        mean += delta / (k + 1)
        p -= mean
        delta *= p
        m2 += delta
        del p, delta
    m2 /= n
    np.maximum(m2, 0.0, out=m2)
    np.sqrt(m2, out=m2)
    m2 *= 2.0
    np.clip(m2, 0.0, 1.0, out=m2)
    if members[0].classes > 1:
        m2 = m2.max(axis=0)  # K classes: the class the members disagree on most
    return EnsemblePrediction(mean, m2, n)


def predict_any(
    model: ModelBundle | Ensemble,
    image: Any,
    options: PredictOptions | None = None,
    slice_index: tuple[int, ...] | None = None,
) -> Generator[Event, None, np.ndarray]:
    """The probability map of one model, or the mean of an ensemble's."""
    if isinstance(model, Ensemble):
        return (yield from predict_ensemble(model, image, options, slice_index)).probability
    return (yield from predict(model, image, options, slice_index))
