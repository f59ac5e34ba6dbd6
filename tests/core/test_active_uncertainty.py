"""Uncertainty maps: entropy, test-time augmentation, Monte-Carlo dropout and ensembles, through the tiler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.active.uncertainty import (
    DIHEDRAL,
    METHODS,
    binary_entropy,
    dropout_layers,
    uncertainty,
)
from napari_segloop.core.bundle import BundleSettings, ModelBundle, Normalization
from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Progress, run_to_end
from napari_segloop.core.inference.predict import PredictOptions, predict_array
from napari_segloop.core.inference.tiling import TileGrid

CPU = {"device": "cpu", "batch_size": 1}
#: Identical passes give a disagreement of (nearly) exactly 0: the variance is computed from
#: deviations, not from two float32 moments; a wrong inverse transform gives values of order 0.1-1.
AGREE = 1e-5


def _opts(**kwargs) -> PredictOptions:
    return PredictOptions(**{**CPU, **kwargs})


def _image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _settings(**kwargs) -> BundleSettings:
    kwargs.setdefault("normalization", Normalization(kind="fixed", mean=[0.5], std=[0.25]))
    return BundleSettings(channel_names=["c0"], **kwargs)


class RampNet(torch.nn.Module):
    """Logits = normalised input + a left-to-right ramp: not equivariant to flips and rotations."""

    def __init__(self):
        super().__init__()
        self.config = {"in_channels": 1, "classes": 1, "encoder_name": "ramp"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ramp = torch.linspace(-3.0, 3.0, x.shape[-1], dtype=x.dtype, device=x.device)
        return x.mean(dim=1, keepdim=True) + ramp


class DropNet(torch.nn.Module):
    """Logits = dropout(normalised input) + 1: a model with a real dropout layer."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.config = {"in_channels": 1, "classes": 1, "encoder_name": "drop"}
        self.drop = torch.nn.Dropout(p)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.drop(x.mean(dim=1, keepdim=True)) + 1.0


class TwoClassNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = {"in_channels": 1, "classes": 2, "encoder_name": "two"}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1)


def _bundle(model: torch.nn.Module, **settings) -> ModelBundle:
    return ModelBundle(model=model, settings=_settings(**settings), source="test")


def _tiles(shape, tile, overlap=0.25, multiple=32) -> int:
    return len(TileGrid.build(shape[0], shape[1], tile, overlap, multiple))


# ---------------------------------------------------------------- binary entropy


def test_binary_entropy_values():
    p = np.array([0.0, 0.5, 1.0, 0.25, 0.75, 0.1], np.float32)
    h = binary_entropy(p)
    assert h.dtype == np.float32 and h.shape == p.shape
    expected = -(0.25 * np.log2(0.25) + 0.75 * np.log2(0.75))
    np.testing.assert_allclose(h[[1, 3, 4]], [1.0, expected, expected], atol=1e-6)
    assert h[0] < 1e-4 and h[2] < 1e-4, "certain pixels have (almost) no entropy"
    assert 0 < h[5] < h[3] < h[1]


def test_binary_entropy_in_place_and_on_stacks():
    p = _image((2, 3, 5))
    expected = binary_entropy(p.copy())
    out = binary_entropy(p, out=p)
    assert out is p
    np.testing.assert_array_equal(p, expected)
    assert p.min() >= 0 and p.max() <= 1


# ---------------------------------------------------------------- entropy


def test_entropy_is_the_entropy_of_the_plain_prediction(bundle, make_blobs):
    image = make_blobs((70, 90), seed=3)
    result = run_to_end(uncertainty(bundle, image, _opts(tile_size=64), "entropy"))
    prob = predict_array(bundle, image, tile_size=64, **CPU)
    np.testing.assert_array_equal(result.probability, prob)
    np.testing.assert_array_equal(result.uncertainty, binary_entropy(prob))
    assert result.uncertainty.dtype == np.float32 and result.uncertainty.shape == (70, 90)
    assert result.uncertainty.min() >= 0 and result.uncertainty.max() <= 1
    assert result.uncertainty.std() > 0, "a real map, not a constant"
    assert result.method == "entropy" and result.passes == 1
    assert "entropy" in result.description


def test_entropy_is_one_where_the_probability_is_one_half(make_identity):
    identity = make_identity()
    image = np.full((40, 50), 0.5, np.float32)  # the normalisation mean: logits 0, p = 0.5
    image[:, 25:] = 1.5  # logits 4: p = 0.982
    result = run_to_end(uncertainty(identity, image, _opts(), "entropy"))
    np.testing.assert_allclose(result.probability[:, :25], 0.5, atol=1e-6)
    np.testing.assert_allclose(result.uncertainty[:, :25], 1.0, atol=1e-5)
    assert result.uncertainty[:, 25:].max() < 0.15


def test_entropy_calls_the_model_once_per_tile(make_identity):
    identity = make_identity()
    run_to_end(uncertainty(identity, _image((70, 90)), _opts(tile_size=64), "entropy"))
    assert identity.model.calls == _tiles((70, 90), 64)


# ---------------------------------------------------------------- tta


@pytest.mark.parametrize(("shape", "tile"), [((70, 90), 64), ((40, 100), 256)])
@pytest.mark.parametrize("passes", [2, 4, 8])
def test_tta_of_an_equivariant_model_agrees_with_itself(make_identity, shape, tile, passes):
    """IdentityNet commutes with flips and rotations: a wrong inverse transform would show."""
    identity = make_identity()
    image = _image(shape, seed=passes)
    result = run_to_end(uncertainty(identity, image, _opts(tile_size=tile), "tta", passes))
    plain = predict_array(identity, image, tile_size=tile, **CPU)
    assert result.uncertainty.shape == shape and result.uncertainty.dtype == np.float32
    assert result.uncertainty.max() < AGREE
    np.testing.assert_allclose(result.probability, plain, atol=1e-5)
    assert result.method == "tta" and result.passes == passes
    assert result.description == f"disagreement of {passes} augmentations (2 x standard deviation)"


def test_tta_of_a_position_dependent_model_disagrees():
    model = _bundle(RampNet())
    image = np.full((64, 64), 0.5, np.float32)
    result = run_to_end(uncertainty(model, image, _opts(tile_size=64), "tta", 2))
    # Identity and left-right flip: logits r(x) and r(W-1-x) = -r(x), p = sigmoid(+-r).
    ramp = np.linspace(-3.0, 3.0, 64, dtype=np.float32)
    p1, p2 = 1 / (1 + np.exp(-ramp)), 1 / (1 + np.exp(ramp))
    np.testing.assert_allclose(result.uncertainty, np.broadcast_to(np.abs(p1 - p2), (64, 64)), atol=AGREE)
    np.testing.assert_allclose(result.probability, 0.5, atol=1e-5)
    assert result.uncertainty.max() > 0.9


def test_tta_of_a_random_unet_disagrees_somewhere(make_bundle, make_blobs):
    unet = make_bundle(depth=3, seed=2)
    result = run_to_end(uncertainty(unet, make_blobs((64, 64), seed=1), _opts(tile_size=64), "tta", 4))
    assert result.uncertainty.max() > 1e-3
    assert result.uncertainty.min() >= 0 and result.uncertainty.max() <= 1


def test_tta_default_passes_and_the_order_of_the_transforms(make_identity):
    identity = make_identity()
    result = run_to_end(uncertainty(identity, _image((40, 40)), _opts(), "tta"))
    assert result.passes == 4
    assert DIHEDRAL[:4] == ((0, False), (0, True), (2, True), (1, False))
    assert len(set(DIHEDRAL)) == 8, "the eight elements of the dihedral group"


@pytest.mark.parametrize("passes", [2, 5])
def test_tta_makes_passes_forward_calls_per_tile(make_identity, passes):
    identity = make_identity()
    run_to_end(uncertainty(identity, _image((70, 90)), _opts(tile_size=64), "tta", passes))
    assert identity.model.calls == passes * _tiles((70, 90), 64)


@pytest.mark.parametrize(("method", "passes"), [("tta", 1), ("tta", 9), ("tta", 0), ("mc-dropout", 1),
                                                ("mc-dropout", 65)])
def test_passes_out_of_range_are_refused(make_identity, method, passes):
    model = make_identity() if method == "tta" else _bundle(DropNet())
    with pytest.raises(InputError, match="passes"):
        run_to_end(uncertainty(model, _image((32, 32)), _opts(), method, passes))


def test_unknown_method_and_multiclass_models_are_refused(make_identity):
    with pytest.raises(InputError, match="entropy"):
        run_to_end(uncertainty(make_identity(), _image((32, 32)), _opts(), "bald"))
    for method in ("entropy", "tta"):
        with pytest.raises(InputError, match="binary"):
            run_to_end(uncertainty(_bundle(TwoClassNet()), _image((32, 32)), _opts(), method))
    assert METHODS == ("entropy", "tta", "mc-dropout", "ensemble")


# ---------------------------------------------------------------- mc-dropout


def test_dropout_layers_finds_only_active_dropout():
    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob):
            super().__init__()
            self.drop_prob = drop_prob

    active = [torch.nn.Dropout(0.3), torch.nn.Dropout2d(0.1), DropPath(0.2)]
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), *active, torch.nn.Dropout(0.0), DropPath(0.0))
    assert dropout_layers(net) == active
    assert dropout_layers(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1), torch.nn.Dropout(0.0))) == []


def test_mc_dropout_without_dropout_is_refused_naming_tta(make_identity, bundle):
    for model in (make_identity(), bundle, _bundle(DropNet(p=0.0))):
        with pytest.raises(InputError, match="tta"):
            run_to_end(uncertainty(model, _image((32, 32)), _opts(), "mc-dropout"))


def test_mc_dropout_samples_reproducibly_and_restores_the_model():
    model = _bundle(DropNet(0.5))
    image = _image((64, 64), seed=4)
    rng_before = torch.get_rng_state()
    first = run_to_end(uncertainty(model, image, _opts(), "mc-dropout", 8, seed=3))
    assert torch.equal(torch.get_rng_state(), rng_before), "the caller's torch RNG is left alone"
    assert not model.model.drop.training and not model.model.training, "dropout is off again"
    assert model.model.calls == 8 * _tiles((64, 64), 256)

    assert first.uncertainty.shape == (64, 64) and first.uncertainty.dtype == np.float32
    assert first.uncertainty.min() >= 0 and first.uncertainty.max() <= 1
    assert first.uncertainty.mean() > 0.05, "the dropout masks differ between passes"
    assert first.method == "mc-dropout" and first.passes == 8
    assert "8 dropout samples" in first.description

    again = run_to_end(uncertainty(model, image, _opts(), "mc-dropout", 8, seed=3))
    np.testing.assert_array_equal(again.uncertainty, first.uncertainty)
    np.testing.assert_array_equal(again.probability, first.probability)
    other = run_to_end(uncertainty(model, image, _opts(), "mc-dropout", 8, seed=4))
    assert not np.array_equal(other.uncertainty, first.uncertainty)

    # With dropout off the model is deterministic: the plain prediction is its eval-mode output.
    plain = predict_array(model, image, **CPU)
    np.testing.assert_allclose(plain, 1 / (1 + np.exp(-((image - 0.5) / 0.25 + 1))), atol=1e-5)


# ---------------------------------------------------------------- ensemble


def test_ensemble_of_two_is_their_absolute_difference_and_mean(make_identity):
    a = make_identity()
    b = make_identity(normalization=Normalization(kind="fixed", mean=[0.3], std=[0.2]))
    image = _image((70, 90), seed=5)
    p1 = predict_array(a, image, tile_size=64, **CPU)
    p2 = predict_array(b, image, tile_size=64, **CPU)
    result = run_to_end(uncertainty(a, image, _opts(tile_size=64), "ensemble", members=[b]))
    np.testing.assert_allclose(result.uncertainty, np.abs(p1 - p2), atol=AGREE)
    np.testing.assert_allclose(result.probability, (p1 + p2) / 2, atol=1e-6)
    assert np.abs(p1 - p2).max() > 0.2, "the two models really differ"
    assert result.method == "ensemble" and result.passes == 2
    assert "2 models" in result.description


def test_ensemble_of_unets_and_its_progress(make_bundle, make_blobs):
    members = [make_bundle(depth=3, seed=s) for s in (0, 1, 2)]
    image = make_blobs((64, 64), seed=2)
    probs = [predict_array(m, image, tile_size=64, **CPU) for m in members]
    events: list = []
    result = run_to_end(uncertainty(members[0], image, _opts(tile_size=64), "ensemble",
                                    members=members[1:]), events.append)
    mean = np.mean(probs, axis=0)
    np.testing.assert_allclose(result.probability, mean, atol=1e-5)
    np.testing.assert_allclose(result.uncertainty, np.clip(2 * np.std(probs, axis=0), 0, 1), atol=AGREE)
    progress = [e for e in events if isinstance(e, Progress)]
    assert all(p.total == progress[0].total for p in progress)
    dones = [p.done for p in progress]
    assert dones == sorted(dones) and dones[-1] == progress[0].total


def test_an_ensemble_of_one_is_refused(make_identity):
    with pytest.raises(InputError, match="two models"):
        run_to_end(uncertainty(make_identity(), _image((32, 32)), _opts(), "ensemble"))


@pytest.mark.parametrize("method", ["entropy", "tta", "mc-dropout"])
def test_members_need_the_ensemble_method(make_identity, method):
    with pytest.raises(InputError, match="ensemble"):
        run_to_end(uncertainty(make_identity(), _image((32, 32)), _opts(), method, members=[make_identity()]))


# ---------------------------------------------------------------- stacks


@pytest.mark.parametrize("method", ["entropy", "tta", "ensemble"])
def test_stacks_give_stacked_maps_and_slice_index_one_plane(make_identity, method):
    image = _image((3, 40, 50), seed=6)
    members = [make_identity(normalization=Normalization(kind="fixed", mean=[0.4], std=[0.3]))] \
        if method == "ensemble" else []
    full = run_to_end(uncertainty(make_identity(), image, _opts(), method, members=members))
    assert full.uncertainty.shape == full.probability.shape == (3, 40, 50)
    plain = predict_array(make_identity(), image, **CPU)
    if method != "ensemble":
        np.testing.assert_allclose(full.probability, plain, atol=1e-5)
    for z in range(3):
        one = run_to_end(uncertainty(make_identity(), image, _opts(), method, slice_index=(z,),
                                     members=members))
        assert one.uncertainty.shape == one.probability.shape == (40, 50)
        np.testing.assert_allclose(one.uncertainty, full.uncertainty[z], atol=1e-6)
        np.testing.assert_allclose(one.probability, full.probability[z], atol=1e-6)
    # Different planes give different maps: the slice really is the one asked for.
    assert not np.allclose(full.probability[0], full.probability[1])


def test_a_slice_outside_the_stack_is_refused(make_identity):
    with pytest.raises(InputError, match="does not exist"):
        run_to_end(uncertainty(make_identity(), _image((3, 40, 50)), _opts(), "tta", slice_index=(3,)))


# ---------------------------------------------------------------- cancellation


@pytest.mark.parametrize("method", ["entropy", "tta", "mc-dropout", "ensemble"])
def test_closing_the_generator_stops_it(make_identity, method):
    model = _bundle(DropNet()) if method == "mc-dropout" else make_identity()
    member = make_identity()
    members = [member] if method == "ensemble" else []
    gen = uncertainty(model, _image((200, 200)), _opts(tile_size=64), method, members=members)
    for event in gen:
        if isinstance(event, Progress) and event.done > 0:
            break
    calls = model.model.calls
    gen.close()  # what napari's worker.quit() does
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value is None, "no result after a cancel"
    assert model.model.calls == calls, "no forward pass after the cancel"
    assert calls < (4 if method == "tta" else 8 if method == "mc-dropout" else 1) * _tiles((200, 200), 64)
    if method == "ensemble":
        assert member.model.calls == 0, "the second model never runs"
    if method == "mc-dropout":
        assert not model.model.drop.training
