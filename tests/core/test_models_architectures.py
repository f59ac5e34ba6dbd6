"""The architectures users know (core.models): build, tile, save/load, train in every transfer mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle.folder import load_bundle, save_bundle
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.events import Notice, run_to_end
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.models.batchnorm import single_value_batchnorm_guard
from napari_segloop.core.models.blocks import AttentionGate
from napari_segloop.core.models.registry import architectures, create_model, get_spec
from napari_segloop.core.models.unet3plus import UNet3Plus
from napari_segloop.core.models.unets import ClassicUNet
from napari_segloop.core.synthetic import make_nuclei
from napari_segloop.core.training import TrainConfig, TrainingPair, train

#: (architecture, encoder, settings, input multiple): small widths where the user may set them.
CASES = [
    ("ClassicUNet", None, {"base_channels": 4}, 16),
    ("AttentionUNet", "plain", {"base_channels": 4}, 16),
    ("AttentionUNet", "vgg16", {}, 32),
    ("UNet3Plus", "vgg16", {"cat_channels": 8}, 16),
    ("UNet3Plus", "vgg16", {"cat_channels": 8, "attention": True, "deep_supervision": True}, 16),
    ("DeepLabV3Plus", "tu-xception65", {}, 16),
    ("DeepLabV3Plus", "resnet101", {}, 16),
    ("Unet", "vgg19", {}, 32),
]
IDS = [f"{a}-{e}-{'-'.join(k)}" for a, e, k, _ in CASES]


def _create(arch, encoder, kwargs, seed=0):
    torch.manual_seed(seed)
    return create_model(arch, encoder, in_channels=1, classes=1, **kwargs)


@pytest.mark.parametrize(("arch", "encoder", "kwargs", "multiple"), CASES, ids=IDS)
def test_each_architecture_tiles_odd_sizes_and_reloads_identically(tmp_path, arch, encoder, kwargs,
                                                                    multiple):
    bundle = _create(arch, encoder, kwargs)
    assert bundle.input_multiple == multiple
    info = bundle.describe()
    assert info["architecture"] == arch and info["input multiple"] == f"{multiple} px"
    image = np.random.default_rng(0).random((45, 71)).astype(np.float32)
    options = PredictOptions(device="cpu", tile_size=64)
    prob = run_to_end(predict(bundle, image, options))
    assert prob.shape == image.shape and np.isfinite(prob).all()
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    folder = save_bundle(bundle, tmp_path / "m")
    again = load_bundle(folder)
    assert again.architecture == arch
    assert type(again.model) is type(bundle.model)
    x = torch.rand(1, 1, 2 * multiple, 3 * multiple)
    with torch.no_grad():
        assert torch.equal(bundle.model(x), again.model(x))
    np.testing.assert_array_equal(run_to_end(predict(again, image, options)), prob)


@pytest.mark.parametrize(("arch", "encoder", "kwargs"), [c[:3] for c in CASES], ids=IDS)
def test_a_few_optimiser_steps_lower_the_loss(arch, encoder, kwargs):
    model = _create(arch, encoder, kwargs).model.train()
    img, lab = make_nuclei((64, 64), seed=3)
    x = torch.from_numpy(np.stack([img, img[::-1].copy()])[:, None].astype(np.float32))
    y = torch.from_numpy(np.stack([lab > 0, (lab > 0)[::-1].copy()])[:, None].astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


@pytest.fixture(scope="module")
def nuclei():
    img, lab = make_nuclei((96, 96), seed=5)
    return img, (lab > 0).astype(np.uint8)


FAST = {"crop": 64, "val_every": 2, "device": "cpu", "threads": 1, "mode": "dense",
        "preview_seconds": 0.0, "refresh_seconds": 0.0, "max_steps": 2}


@pytest.mark.parametrize("transfer", ["full", "frozen", "frozen_then_unfrozen"])
@pytest.mark.parametrize(("arch", "encoder", "kwargs"), [
    ("AttentionUNet", "plain", {"base_channels": 4}),
    ("UNet3Plus", "vgg16", {"cat_channels": 8, "attention": True, "deep_supervision": True}),
    ("DeepLabV3Plus", "tu-xception41", {}),
], ids=["attention-unet", "attention-vgg-unet3plus", "deeplabv3plus-xception41"])
def test_the_trainer_runs_every_transfer_mode_even_with_batches_of_one(nuclei, arch, encoder,
                                                                       kwargs, transfer):
    img, lab = nuclei
    start = _create(arch, encoder, kwargs)
    enc_before = {k: v.clone() for k, v in start.model.encoder.state_dict().items()}
    events = []
    # Batch size 1: DeepLabV3+'s image pooling sees one value per channel (the guard handles it).
    result = run_to_end(train(start, [TrainingPair(img, lab)],
                              TrainConfig(**FAST, batch_size=1, transfer=transfer, ema=0.0)),
                        events.append)
    assert result.steps == 2
    enc_after = result.bundle.model.encoder.state_dict()
    params = dict(result.bundle.model.encoder.named_parameters())
    changed = any(not torch.equal(enc_before[k], enc_after[k]) for k in params)
    # frozen_then_unfrozen unfreezes after 30% of the budget: by the second of two steps.
    assert changed is (transfer != "frozen")
    assert ("encoder" in result.bundle.describe()["frozen"]) is (transfer != "full")
    if transfer != "full":
        assert any(isinstance(e, Notice) and "not pre-trained" in e.text for e in events)


def test_deep_supervision_trains_every_head_but_predicts_with_the_finest():
    model = UNet3Plus(encoder_name="plain", base_channels=4, cat_channels=4, encoder_depth=3,
                      deep_supervision=True).train()
    x = torch.rand(2, 1, 32, 40)
    out = model(x)
    assert out.shape == (2, 1, 32, 40)
    assert len(model.side_logits) == 2 and all(s.shape == out.shape for s in model.side_logits)
    model.eval()
    with torch.no_grad():
        model(x)
    assert model.side_logits == []
    # The side heads have gradients only through their own loss.
    model.train()
    sum(s.mean() for s in [model(x), *model.side_logits]).backward()
    assert all(p.grad is not None for p in model.side_heads.parameters())


def test_attention_gates_weight_the_skips_between_zero_and_one():
    gate = AttentionGate(8, 16).eval()
    x, g = torch.rand(1, 8, 20, 20), torch.rand(1, 16, 10, 10)
    out = gate(x, g)
    assert out.shape == x.shape
    alpha = gate.last_alpha
    assert alpha.shape == (1, 1, 20, 20) and float(alpha.min()) >= 0 and float(alpha.max()) <= 1
    torch.testing.assert_close(out, x * alpha)


def test_classic_unet_has_the_papers_shape():
    model = ClassicUNet()
    assert [int(c) for c in model.encoder.out_channels] == [64, 128, 256, 512, 1024]
    assert model.input_multiple == 16
    n = sum(p.numel() for p in model.parameters())
    assert 30e6 < n < 32e6  # 31 M parameters, as in the paper (with batch norm)
    ups = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 4


def test_the_batchnorm_guard_only_acts_on_single_values():
    bn = torch.nn.BatchNorm1d(3)
    net = torch.nn.Sequential(bn).train()
    with pytest.raises(ValueError, match="more than 1 value"):
        net(torch.rand(1, 3))
    with single_value_batchnorm_guard(net) as n:
        assert n == 1
        before = bn.running_mean.clone()
        net(torch.rand(1, 3))  # running statistics used, not updated
        assert torch.equal(bn.running_mean, before) and bn.training
        net(torch.rand(4, 3))  # several values: trains as usual
        assert not torch.equal(bn.running_mean, before)
    with pytest.raises(ValueError, match="more than 1 value"):
        net(torch.rand(1, 3))  # the hooks are gone


def test_the_registry_lists_the_new_architectures_with_their_default_encoders():
    names = architectures()
    for name in ("ClassicUNet", "AttentionUNet", "UNet3Plus", "DeepLabV3Plus", "Unet"):
        assert name in names
    assert get_spec("classicunet").default_encoder == "plain"
    assert get_spec("UNet3Plus").default_encoder == "vgg16"
    assert "tu-xception65" in get_spec("DeepLabV3Plus").encoders
    assert create_model("ClassicUNet", None, base_channels=4).encoder == "plain"


@pytest.mark.parametrize(("arch", "encoder", "kwargs", "match"), [
    ("ClassicUNet", "vgg16", {}, "own plain encoder"),
    ("ClassicUNet", None, {"base_channels": 4096}, "base_channels"),
    ("UNet3Plus", "vgg16", {"attention": "yes"}, "attention"),
    ("Unet", "plain", {}, "plain"),
])
def test_bad_settings_of_the_new_architectures_get_one_clear_line(arch, encoder, kwargs, match):
    with pytest.raises(ModelLoadError, match=f"(?i){match}"):
        create_model(arch, encoder, **kwargs)
