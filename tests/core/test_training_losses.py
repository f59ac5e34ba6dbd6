"""Masked losses and the keep term (core.training.losses)."""

from __future__ import annotations

import pytest
import torch

from napari_segloop.core.training.losses import LOSSES, class_weights, edge_term, training_loss


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 1, 8, 8, generator=g)
    target = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    weight = torch.zeros(2, 1, 8, 8)
    weight[:, :, :4] = 1
    return logits, target, weight


@pytest.mark.parametrize("kind", LOSSES)
def test_unannotated_pixels_do_not_change_the_loss(kind):
    logits, target, weight = _batch()
    base, _ = training_loss(logits, target, weight, kind)
    other = logits.clone()
    other[:, :, 4:] = 50.0  # wildly wrong where nothing is painted
    changed, _ = training_loss(other, target, weight, kind)
    assert torch.isclose(base, changed)


@pytest.mark.parametrize("kind", LOSSES)
def test_a_batch_without_annotations_contributes_nothing(kind):
    logits, target, _ = _batch()
    loss, terms = training_loss(logits, target, torch.zeros_like(target), kind)
    assert loss is None and terms == {}


def test_the_keep_term_is_zero_at_the_teacher_and_grows_away_from_it():
    logits, target, _ = _batch()
    teacher = torch.sigmoid(logits)
    keep = torch.ones_like(target)
    none = torch.zeros_like(target)
    _, terms = training_loss(logits, target, none, "bce", teacher=teacher, keep=keep, keep_weight=1.0)
    assert terms["keep"] == pytest.approx(0.0, abs=1e-5)
    _, terms = training_loss(logits + 2.0, target, none, "bce", teacher=teacher, keep=keep,
                                keep_weight=1.0)
    assert terms["keep"] > 0.05
    logits = logits.clone().requires_grad_(True)
    loss, _ = training_loss(logits, target, none, "bce", teacher=teacher, keep=keep, keep_weight=1.0)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_wbce_frequency_weights_give_each_class_half_the_loss():
    w = class_weights(10, 90)
    assert w.foreground * 10 == pytest.approx(w.background * 90)
    assert w.foreground * 10 + w.background * 90 == pytest.approx(100)
    assert class_weights(10, 90, foreground=3.0).foreground == 3.0
    # A rare foreground pixel that is wrong costs more with wbce than with bce.
    logits = torch.full((1, 1, 1, 10), -3.0)
    target = torch.zeros(1, 1, 1, 10)
    target[..., 0] = 1
    weight = torch.ones_like(target)
    bce, _ = training_loss(logits, target, weight, "bce")
    wbce, _ = training_loss(logits, target, weight, "wbce", class_weights(1, 9))
    assert wbce > bce


def test_dice_is_perfect_for_a_confident_correct_prediction():
    target = torch.zeros(1, 1, 4, 4)
    target[..., :2, :] = 1
    logits = (target * 2 - 1) * 30
    loss, _ = training_loss(logits, target, torch.ones_like(target), "dice")
    assert float(loss) == pytest.approx(0.0, abs=1e-3)


def test_unknown_loss_is_refused():
    logits, target, weight = _batch()
    with pytest.raises(ValueError, match="unknown loss"):
        training_loss(logits, target, weight, "focal")


def _step_image(edge_at: int, size: int = 32) -> torch.Tensor:
    img = torch.zeros(1, 1, size, size)
    img[..., edge_at:] = 1.0
    return img + 0.02 * torch.randn(1, 1, size, size, generator=torch.Generator().manual_seed(0))


def test_the_edge_term_is_lowest_when_the_boundary_sits_on_the_image_edge():
    image = _step_image(16)
    costs = {}
    for at in (8, 12, 16, 20, 24):
        logits = torch.full((1, 1, 32, 32), -8.0)
        logits[..., at:] = 8.0
        costs[at] = float(edge_term(logits, image))
    assert min(costs, key=costs.get) == 16
    assert costs[16] < 0.2 * costs[8]
    # A prediction with no boundary at all costs nothing.
    assert float(edge_term(torch.zeros(1, 1, 32, 32), image)) == pytest.approx(0.0)


def test_the_edge_term_has_gradients_and_handles_several_channels():
    image = torch.cat([_step_image(10), _step_image(10)], dim=1)
    logits = torch.zeros(2, 1, 32, 32, requires_grad=True)
    term = edge_term(logits + torch.randn(2, 1, 32, 32), image.expand(2, -1, -1, -1))
    term.backward()
    assert torch.isfinite(term) and logits.grad is not None and logits.grad.abs().sum() > 0
