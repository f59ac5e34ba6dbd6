"""Losses masked to the annotated pixels, plus a term that keeps what the starting model knew.

All losses take logits ``(N, 1, H, W)``, a target in {0, 1} and a per-pixel
weight (0 = not annotated). Unannotated pixels never reach the supervised
terms; a batch without any annotated pixel contributes exactly nothing (no
NaN from an empty mean).

``bce``
    Binary cross-entropy averaged over annotated pixels (weighted by the
    pixel weights, so corrected pixels count more).
``wbce``
    Weighted BCE, ``-(w_pos y log p + w_neg (1 - y) log(1 - p))``: the class
    weights come from the label frequencies (each class then carries half of
    the loss) unless the user sets the foreground weight.
``dice``
    Soft Dice over the annotated pixels of the whole batch.
``bce+dice``
    Their sum.

The *keep* term (distillation) is a BCE between the model's prediction and the
starting model's probabilities on the pixels nobody annotated: scribbles say
nothing about boundaries, and without it a few interior strokes move every
boundary of a model that was already good.

With K classes (logits ``(N, K, H, W)``, K >= 2 softmax channels, the target
holding the class index) the same names mean: ``bce`` the cross-entropy,
``wbce`` the cross-entropy with class weights ``N / (K N_class)``, ``dice`` the
soft Dice averaged over the K classes, and the keep term the cross-entropy to
the starting model's class probabilities minus their entropy (a KL divergence).

torch's ``binary_cross_entropy_with_logits`` and ``cross_entropy`` do the numerics (with a per-pixel
weight); smp's losses take an ``ignore_index`` but no weight map, so they cannot
express corrected pixels or class weights per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["LOSSES", "ClassWeights", "LossKind", "class_weights", "edge_term", "multiclass_weights",
           "training_loss"]

LossKind = Literal["bce", "wbce", "dice", "bce+dice"]
#: The losses the user can choose.
LOSSES: tuple[str, ...] = ("bce", "wbce", "dice", "bce+dice")
_EPS = 1.0


@dataclass(frozen=True)
class ClassWeights:
    """Weights of foreground and background pixels in the weighted BCE."""

    foreground: float = 1.0
    background: float = 1.0
    #: With K classes: the weight of each class index (0 = background).
    per_class: tuple[float, ...] | None = None


def class_weights(n_foreground: int, n_background: int, foreground: float | None = None) -> ClassWeights:
    """Class weights for ``wbce``.

    Parameters
    ----------
    n_foreground, n_background : int
        Annotated pixels of each class.
    foreground : float, optional
        A foreground weight set by the user (background then weighs 1).

    Returns
    -------
    ClassWeights
        From the frequencies, ``N / (2 N_class)``: both classes carry half of
        the loss, whatever their proportions.
    """
    if foreground is not None:
        return ClassWeights(float(foreground), 1.0)
    n = n_foreground + n_background
    if n_foreground <= 0 or n_background <= 0:
        return ClassWeights()
    return ClassWeights(n / (2.0 * n_foreground), n / (2.0 * n_background))


def _summed(parts: list[torch.Tensor]) -> torch.Tensor | None:
    """The sum of the loss terms, or None when there is none (the batch is skipped)."""
    return sum(parts[1:], parts[0]) if parts else None


def multiclass_weights(counts: np.ndarray | list[int]) -> ClassWeights:
    """Class weights ``N / (K N_c)`` for the K-class ``wbce``: every class carries 1/K of the loss."""
    c = np.asarray(counts, dtype=np.float64)
    n, k = float(c.sum()), len(c)
    if n <= 0:
        return ClassWeights(per_class=tuple(1.0 for _ in range(k)))
    return ClassWeights(per_class=tuple(float(n / (k * v)) if v > 0 else 0.0 for v in c))


def _multiclass_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, kind: str,
                     classes: ClassWeights | None, teacher: torch.Tensor | None,
                     keep: torch.Tensor | None, keep_weight: float,
                     ) -> tuple[torch.Tensor | None, dict[str, float]]:
    """:func:`training_loss` for softmax logits ``(N, K, H, W)`` and class-index targets."""
    parts: list[torch.Tensor] = []
    terms: dict[str, float] = {}
    k = logits.shape[1]
    idx = target[:, 0].round().long().clamp(0, k - 1)
    w = weight[:, 0]
    if float(w.sum()) > 0:
        if kind in ("bce", "bce+dice", "wbce"):
            ce = F.cross_entropy(logits, idx, reduction="none")
            pw = w
            if kind == "wbce" and classes is not None and classes.per_class is not None:
                table = torch.tensor(classes.per_class, dtype=logits.dtype, device=logits.device)
                pw = w * table[idx]
            ce = (ce * pw).sum() / pw.sum().clamp_min(1e-12)
            parts.append(ce)
            terms["wbce" if kind == "wbce" else "bce"] = float(ce.detach())
        if kind in ("dice", "bce+dice"):
            prob = torch.softmax(logits, dim=1)
            one_hot = F.one_hot(idx, k).permute(0, 3, 1, 2).to(prob.dtype)
            m = (w > 0).to(prob.dtype)[:, None]
            inter = (m * prob * one_hot).sum(dim=(0, 2, 3))
            total = (m * prob).sum(dim=(0, 2, 3)) + (m * one_hot).sum(dim=(0, 2, 3))
            dice = 1.0 - ((2.0 * inter + _EPS) / (total + _EPS)).mean()
            parts.append(dice)
            terms["dice"] = float(dice.detach())
    if teacher is not None and keep is not None and keep_weight > 0 and teacher.shape[1] == k:
        kw = keep[:, 0]
        k_sum = kw.sum()
        if float(k_sum) > 0:
            t = teacher.clamp_min(1e-6)
            t = t / t.sum(dim=1, keepdim=True)
            kl = (t * (t.log() - torch.log_softmax(logits, dim=1))).sum(dim=1)
            kl = (kl * kw).sum() / k_sum
            parts.append(keep_weight * kl)
            terms["keep"] = float(kl.detach())
    return _summed(parts), terms


def _masked_dice(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    prob = torch.sigmoid(logits)
    w = (weight > 0).to(prob.dtype)
    inter = (w * prob * target).sum()
    total = (w * prob).sum() + (w * target).sum()
    return 1.0 - (2.0 * inter + _EPS) / (total + _EPS)


def training_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    kind: str = "bce+dice",
    classes: ClassWeights | None = None,
    teacher: torch.Tensor | None = None,
    keep: torch.Tensor | None = None,
    keep_weight: float = 0.0,
) -> tuple[torch.Tensor | None, dict[str, float]]:
    """The training loss of one batch.

    Parameters
    ----------
    logits, target, weight : torch.Tensor
        ``(N, 1, H, W)``; ``weight`` is 0 on unannotated pixels. With K
        classes the logits are ``(N, K, H, W)`` and the target holds the
        class index.
    kind : {"bce", "wbce", "dice", "bce+dice"}
        The supervised loss.
    classes : ClassWeights, optional
        Class weights for ``wbce``.
    teacher : torch.Tensor, optional
        The starting model's probabilities, ``(N, 1, H, W)``.
    keep : torch.Tensor, optional
        1 where the keep term applies (unannotated pixels), else 0.
    keep_weight : float
        Factor of the keep term (0 turns it off).

    Returns
    -------
    loss : torch.Tensor or None
        The scalar loss, or None when the batch has nothing to learn from
        (no annotated pixel and no keep term): skip the step.
    terms : dict of str to float
        Each term's value (for the curves).
    """
    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; use one of {', '.join(LOSSES)}")
    logits = logits.float()
    if logits.shape[1] > 1:
        return _multiclass_loss(logits, target, weight, kind, classes, teacher, keep, keep_weight)
    parts: list[torch.Tensor] = []
    terms: dict[str, float] = {}
    w_sum = weight.sum()
    if float(w_sum) > 0:
        if kind in ("bce", "bce+dice", "wbce"):
            w = weight
            if kind == "wbce":
                cw = classes or ClassWeights()
                w = weight * (target * cw.foreground + (1 - target) * cw.background)
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=w, reduction="sum")
            bce = bce / w.sum().clamp_min(1e-12)
            parts.append(bce)
            terms["wbce" if kind == "wbce" else "bce"] = float(bce.detach())
        if kind in ("dice", "bce+dice"):
            dice = _masked_dice(logits, target, weight)
            parts.append(dice)
            terms["dice"] = float(dice.detach())
    if teacher is not None and keep is not None and keep_weight > 0:
        k_sum = keep.sum()
        if float(k_sum) > 0:
            kl = F.binary_cross_entropy_with_logits(logits, teacher, weight=keep, reduction="sum")
            # The teacher's own entropy is the floor of this BCE: subtract it, so the term reads 0
            # when the prediction equals the starting model's.
            t = teacher.clamp(1e-6, 1 - 1e-6)
            floor = -(keep * (t * t.log() + (1 - t) * (1 - t).log())).sum()
            kl = (kl - floor) / k_sum
            parts.append(keep_weight * kl)
            terms["keep"] = float(kl.detach())
    return _summed(parts), terms


def edge_term(logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Contrast-sensitive smoothness of the prediction: boundaries belong on image edges.

    Scribbles leave the boundaries of objects unannotated; without this term a
    model trained on them places its boundaries anywhere between the strokes.
    This is the grid CRF (Potts) loss of weakly supervised segmentation (Tang
    et al., "On Regularized Losses for Weakly-supervised CNN Segmentation",
    ECCV 2018), with the contrast weights of interactive graph cuts (Boykov and
    Jolly, ICCV 2001): for every pair of 4-neighbours ``i, j``,
    ``exp(-beta |I_i - I_j|^2) |p_i - p_j|``, averaged, with ``beta`` set per
    patch to ``1 / (2 mean |I_i - I_j|^2)``. A change of prediction costs
    little where the image changes a lot and much in flat regions.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, 1, H, W)``.
    image : torch.Tensor
        The network input, ``(N, C, H, W)``.

    Returns
    -------
    torch.Tensor
        The scalar term.
    """
    logits = logits.float()
    # K classes: the change of the class probabilities, half their L1 distance.
    prob = torch.sigmoid(logits[:, :1]) if logits.shape[1] == 1 else torch.softmax(logits, 1)
    x = image.float()
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).pow(2).sum(1, keepdim=True)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).pow(2).sum(1, keepdim=True)
    mean = (dy.mean(dim=(1, 2, 3)) + dx.mean(dim=(1, 2, 3))) / 2
    beta = (1.0 / (2.0 * mean.clamp_min(1e-8))).view(-1, 1, 1, 1)
    half = 1.0 if prob.shape[1] == 1 else 0.5
    ty = torch.exp(-beta * dy) * half * (prob[:, :, 1:, :] - prob[:, :, :-1, :]).abs().sum(1, keepdim=True)
    tx = torch.exp(-beta * dx) * half * (prob[:, :, :, 1:] - prob[:, :, :, :-1]).abs().sum(1, keepdim=True)
    return (ty.mean() + tx.mean()) / 2

