"""Uncertainty maps: where the model is unsure, tile by tile, through the one tiler.

Four methods, each a generator with progress and cancellation like
:func:`~napari_segloop.core.inference.predict.predict` (it *is* that tiler,
with another :data:`~napari_segloop.core.inference.predict.TileHead`):

``entropy`` (1 forward pass)
    The binary entropy of the predicted probability, ``H(p) / log 2``: 1 where
    ``p = 0.5``, 0 where the model is certain. Cheapest; blind to confident
    mistakes.
``tta`` (one pass per augmentation, 2 to 8; default 4)
    Test-time augmentation: each tile is also predicted flipped and rotated by
    multiples of 90 degrees (the dihedral group), the outputs are turned back
    and compared.
``mc-dropout`` (one pass per sample; default 8)
    Monte-Carlo dropout: the model's dropout layers stay on and each pass
    draws another mask (refused for models without dropout).
``ensemble`` (one prediction per model)
    Several bundles of the same task; each runs its own prediction (its own
    tile size, input multiple and normalisation).

For the last three the map is the **disagreement** between the passes: twice
the standard deviation of their probabilities (0 when all agree, 1 when half
say 0 and half say 1), and the returned probability is their mean. The choice
of the standard deviation over the mutual information (BALD) or the entropy
of the mean is measured in ``docs/active_learning.md``.

All maps are float32 in ``[0, 1]`` with the shape of the probability map.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Event
from napari_segloop.core.inference.ensemble import predict_ensemble
from napari_segloop.core.inference.predict import (
    PredictOptions,
    TileHead,
    predict,
    predict_channels,
)
from napari_segloop.core.models.registry import probabilities

__all__ = [
    "METHODS",
    "UncertaintyMap",
    "binary_entropy",
    "dropout_layers",
    "uncertainty",
]

#: The methods, in the order the dock and ``segloop suggest --method`` list them.
METHODS: tuple[str, ...] = ("entropy", "tta", "mc-dropout", "ensemble")
#: Default number of passes (augmentations for tta, samples for mc-dropout).
DEFAULT_PASSES = {"tta": 4, "mc-dropout": 8}
#: The dihedral transforms ``(quarter turns, flip left-right first)``, most different first:
#: the first four are identity, left-right flip, up-down flip and a quarter turn.
DIHEDRAL: tuple[tuple[int, bool], ...] = (
    (0, False), (0, True), (2, True), (1, False), (2, False), (3, False), (1, True), (3, True),
)
_EPS = 1e-6
_LOG2 = math.log(2.0)


@dataclass
class UncertaintyMap:
    """The result of :func:`uncertainty`.

    Attributes
    ----------
    uncertainty : np.ndarray
        float32 in ``[0, 1]``, shaped like the probability map.
    probability : np.ndarray
        The probability the uncertainty is about (the mean of the passes).
    method : str
        One of :data:`METHODS`.
    passes : int
        Forward passes per tile (or models, for an ensemble).
    """

    uncertainty: np.ndarray
    probability: np.ndarray
    method: str
    passes: int

    @property
    def description(self) -> str:
        """What the map measures, in words (for a layer name's tooltip or a report)."""
        if self.method == "entropy":
            return "entropy of the probability (1 = p is 0.5)"
        what = {"tta": "augmentations", "mc-dropout": "dropout samples", "ensemble": "models"}
        return f"disagreement of {self.passes} {what[self.method]} (2 x standard deviation)"


def binary_entropy(p: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``H(p) / log 2`` elementwise, float32 in ``[0, 1]``, computed plane by plane.

    Parameters
    ----------
    p : np.ndarray
        Probabilities in ``[0, 1]``.
    out : np.ndarray, optional
        float32 array of ``p``'s shape to write into (may be ``p`` itself).
    """
    p = np.asarray(p, dtype=np.float32)
    out = np.empty_like(p) if out is None else out
    flat_p = p.reshape(-1, p.shape[-1]) if p.ndim else p.reshape(1, 1)
    flat_o = out.reshape(flat_p.shape)
    rows = max(1, 1_048_576 // max(1, flat_p.shape[1]))
    for r in range(0, flat_p.shape[0], rows):
        q = np.clip(flat_p[r:r + rows], _EPS, 1.0 - _EPS)
        h = q * np.log(q)
        h += (1.0 - q) * np.log1p(-q)
        np.multiply(h, -1.0 / _LOG2, out=flat_o[r:r + rows])
    np.clip(out, 0.0, 1.0, out=out)
    return out


def _disagreement(variance: np.ndarray) -> np.ndarray:
    """Twice the standard deviation, from the variance of the passes, in place."""
    np.maximum(variance, 0.0, out=variance)
    np.sqrt(variance, out=variance)
    variance *= 2.0
    np.clip(variance, 0.0, 1.0, out=variance)
    return variance


class _Moments:
    """Streaming mean and variance of the passes of one batch, shifted by the first pass.

    Sums of ``p - p_first`` (not of ``p``) keep the variance exact where the passes agree:
    ``E[p^2] - E[p]^2`` in float32 left about 1e-3 of "disagreement" there.
    """

    def __init__(self) -> None:
        self.first: torch.Tensor | None = None
        self.n = 0

    def add(self, p: torch.Tensor) -> None:
        self.n += 1
        if self.first is None:
            self.first, self.sum, self.square = p, torch.zeros_like(p), torch.zeros_like(p)
            return
        d = p - self.first
        self.sum.add_(d)
        self.square.addcmul_(d, d)

    def result(self) -> torch.Tensor:
        """``(B, 2, h, w)``: the mean and the variance of the passes' probabilities."""
        shift = self.sum / self.n
        variance = self.square / self.n - shift * shift
        return torch.cat([self.first + shift, variance], dim=1)


def dropout_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's dropout-like layers with a non-zero rate (torch dropout, timm DropPath/DropBlock)."""
    found = []
    for module in model.modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            rate = float(module.p)
        elif type(module).__name__ in ("DropPath", "DropBlock2d"):
            rate = float(getattr(module, "drop_prob", 0.0) or 0.0)
        else:
            continue
        if rate > 0:
            found.append(module)
    return found


def _tta_head(passes: int) -> TileHead:
    transforms = DIHEDRAL[:passes]

    def head(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        moments = _Moments()
        for turns, flip in transforms:
            x = torch.flip(batch, dims=(-1,)) if flip else batch
            x = torch.rot90(x, turns, dims=(-2, -1)) if turns else x
            p = probabilities(model(x))[:, :1]
            p = torch.rot90(p, -turns, dims=(-2, -1)) if turns else p
            moments.add(torch.flip(p, dims=(-1,)) if flip else p)
        return moments.result()

    return head


def _dropout_head(passes: int, layers: list[torch.nn.Module]) -> TileHead:
    def head(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
        # The tiler puts the model in eval mode; only the dropout layers are switched on,
        # for this batch only (batch norm keeps its running statistics).
        for layer in layers:
            layer.train()
        moments = _Moments()
        try:
            for _ in range(passes):
                moments.add(probabilities(model(batch))[:, :1])
        finally:
            for layer in layers:
                layer.eval()
        return moments.result()

    return head


def _check_passes(method: str, passes: int | None) -> int:
    if method == "entropy":
        return 1
    n = DEFAULT_PASSES[method] if passes is None else int(passes)
    top = len(DIHEDRAL) if method == "tta" else 64
    if not 2 <= n <= top:
        raise InputError(f"{method} needs between 2 and {top} passes; got {n}.")
    return n


def uncertainty(
    bundle: ModelBundle,
    image: Any,
    options: PredictOptions | None = None,
    method: str = "entropy",
    passes: int | None = None,
    slice_index: tuple[int, ...] | None = None,
    members: Sequence[ModelBundle] = (),
    seed: int = 0,
) -> Generator[Event, None, UncertaintyMap]:
    """Compute an uncertainty map of ``image`` for ``bundle``, tile by tile.

    Parameters
    ----------
    bundle : ModelBundle
        The model (the first member, for an ensemble).
    image : array-like
        As for :func:`~napari_segloop.core.inference.predict.predict`.
    options : PredictOptions, optional
        Device, tiling, scale and channel options (the same as a prediction).
    method : {"entropy", "tta", "mc-dropout", "ensemble"}
        See the module's docstring.
    passes : int, optional
        Augmentations (tta, 2-8) or dropout samples (mc-dropout, 2-64).
    slice_index : tuple of int, optional
        Only this stack position (the result is then one plane).
    members : sequence of ModelBundle
        The other models of an ensemble (method ``ensemble``; at least one).
    seed : int
        Seed of the dropout masks (mc-dropout), so that a map can be recomputed.

    Yields
    ------
    Progress or Notice
        As the prediction does.

    Returns
    -------
    UncertaintyMap
        The map and the probability it is about.

    Raises
    ------
    InputError
        For an unknown method, a bad number of passes, a model without
        dropout (mc-dropout) or an ensemble of one.
    """
    if method not in METHODS:
        raise InputError(f"Unknown uncertainty method {method!r}; choose one of {', '.join(METHODS)}.")
    if method == "ensemble":
        return (yield from _ensemble([bundle, *members], image, options, slice_index))
    if members:
        raise InputError("Several models were given: choose the method 'ensemble' to compare them.")
    n = _check_passes(method, passes)
    if bundle.classes != 1:
        raise InputError(f"This model has {bundle.classes} output classes; uncertainty maps need a "
                         "binary model (one output channel) for now.")
    if method == "entropy":
        probability = yield from predict(bundle, image, options, slice_index)
        return UncertaintyMap(binary_entropy(probability), probability, method, 1)
    if method == "tta":
        head = _tta_head(n)
    else:
        layers = dropout_layers(bundle.model)
        if not layers:
            raise InputError(
                f"The model ({bundle.architecture}, {bundle.encoder}) has no dropout layers, so "
                "Monte-Carlo dropout cannot sample it; choose tta or entropy.")
        head = _dropout_head(n, layers)
    with torch.random.fork_rng(devices=[]):  # the dropout masks are seeded; the caller's RNG is kept
        torch.manual_seed(seed)
        moments = yield from predict_channels(bundle, image, options, slice_index, head, channels=2)
    probability, variance = moments[0], moments[1]
    return UncertaintyMap(_disagreement(variance), probability, method, n)


def _ensemble(
    bundles: list[ModelBundle],
    image: Any,
    options: PredictOptions | None,
    slice_index: tuple[int, ...] | None,
) -> Generator[Event, None, UncertaintyMap]:
    result = yield from predict_ensemble(bundles, image, options, slice_index)
    return UncertaintyMap(result.disagreement, result.probability, "ensemble", result.members)
