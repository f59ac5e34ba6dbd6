"""The training generator (core.training.trainer): learning, control, faults, never worse."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Notice, Preview, Progress, Snapshot, TrainStep, Validation, run_to_end
from napari_segloop.core.synthetic import make_nuclei
from napari_segloop.core.training import PreviewRequest, TrainConfig, TrainControl, TrainingPair, train
from napari_segloop.core.training import trainer as trainer_mod
from tests.core.tiny_models import tiny_bundle

FAST = {"batch_size": 4, "crop": 64, "val_every": 5, "device": "cpu", "threads": 1,
        "preview_seconds": 0.0, "refresh_seconds": 0.0}


@pytest.fixture(scope="module")
def nuclei():
    img, lab = make_nuclei((128, 128), seed=11)
    return img, (lab > 0).astype(np.uint8)


@pytest.fixture(scope="module")
def good(nuclei):
    """A tiny model trained on the dense labels to Dice > 0.9: a good starting model (do not modify it)."""
    img, lab = nuclei
    first, _ = _run(tiny_bundle(), [TrainingPair(img, lab)], mode="dense", max_steps=150, lr=3e-3,
                    patience=0, val_every=50)
    assert first.best["dice"] > 0.9
    assert first.bundle.source == "trained"
    return first.bundle


def _scribbles(lab, seed=0, p=0.08):
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    out = np.zeros(lab.shape, np.uint8)
    out[ndi.binary_erosion(lab > 0, iterations=1) & (rng.random(lab.shape) < p)] = 1
    out[ndi.binary_erosion(lab == 0, iterations=2) & (rng.random(lab.shape) < p / 3)] = 2
    return out


def _run(start, pairs, control=None, **cfg):
    events = []
    result = run_to_end(train(start, pairs, TrainConfig(**{**FAST, **cfg}), control), events.append)
    return result, events


def _state_equal(a, b):
    return all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def test_training_from_scratch_lowers_the_loss_and_reports_typed_events(nuclei):
    img, lab = nuclei
    start = tiny_bundle()
    result, events = _run(start, [TrainingPair(img, lab)], mode="dense", max_steps=60, lr=3e-3)
    steps = [e for e in events if isinstance(e, TrainStep)]
    vals = [e for e in events if isinstance(e, Validation)]
    assert len(steps) == 60 and steps[-1].step == 60
    assert all(s.samples_per_second > 0 and s.elapsed >= 0 for s in steps)
    assert np.mean([s.loss for s in steps[-10:]]) < np.mean([s.loss for s in steps[:10]])
    assert vals and vals[0].step == 5  # from scratch: no baseline at step 0
    assert result.baseline is None and result.stop_reason == "steps"
    assert result.bundle.source == "trained"
    prov = result.bundle.settings.provenance["training"]
    assert prov["steps"] == 60 and prov["config"]["mode"] == "dense"
    assert len(prov["labels_sha256"]) == 64
    assert any(isinstance(e, Snapshot) and e.reason == "best" for e in events)


def test_the_starting_model_and_the_users_labels_are_never_modified(nuclei):
    img, lab = nuclei
    start = tiny_bundle(seed=1)
    start.source = "start"
    before = {k: v.clone() for k, v in start.model.state_dict().items()}
    scr = _scribbles(lab)
    scr_before, img_before = scr.copy(), img.copy()
    _run(start, [TrainingPair(img, scr)], max_steps=10, lr=1e-2)
    assert _state_equal(before, start.model.state_dict())
    np.testing.assert_array_equal(scr, scr_before)
    np.testing.assert_array_equal(img, img_before)


def test_fine_tuning_starts_from_a_validated_baseline_and_never_returns_worse_weights(nuclei, good):
    img, lab = nuclei
    start = good
    # A learning rate this high wrecks the network: every validation is worse than the good start.
    # (An untrained start is no test of this: its Dice may be below that of a wrecked network.)
    result, events = _run(start, [TrainingPair(img, lab)], mode="dense", max_steps=20, lr=0.9,
                          keep_weight=0.0, patience=0)
    vals = [e for e in events if isinstance(e, Validation)]
    assert vals[0].step == 0 and vals[0].best
    assert result.baseline is not None
    assert result.best_step == 0
    assert _state_equal(start.model.state_dict(), result.bundle.model.state_dict())
    assert any("did not improve" in w for w in result.warnings)
    assert result.best["dice"] == result.baseline["dice"]


def test_stop_midway_returns_the_best_weights_so_far(nuclei):
    img, lab = nuclei
    control = TrainControl()
    best_states = []

    def on_event(e):
        if isinstance(e, Snapshot) and e.reason == "best":
            best_states.append((e.step, e.state_dict))
        if isinstance(e, TrainStep) and e.step == 12:
            control.stop()

    result = run_to_end(train(tiny_bundle(), [TrainingPair(img, lab)],
                              TrainConfig(**{**FAST, "mode": "dense", "max_steps": 500}), control), on_event)
    assert result.stop_reason == "stopped" and result.steps == 12
    step, state = best_states[-1]
    assert result.best_step == step
    assert _state_equal(state, result.bundle.model.state_dict())


def test_pause_holds_the_run_and_resume_continues_it(nuclei):
    img, lab = nuclei
    control = TrainControl()
    seen = {"paused": 0}

    def on_event(e):
        if isinstance(e, TrainStep) and e.step == 3 and not seen.get("did"):
            seen["did"] = True
            control.pause()
            threading.Timer(0.5, control.resume).start()
        if isinstance(e, Progress) and e.message == "paused":
            seen["paused"] += 1

    result = run_to_end(train(tiny_bundle(), [TrainingPair(img, lab)],
                              TrainConfig(**{**FAST, "mode": "dense", "max_steps": 8}), control), on_event)
    assert seen["paused"] >= 1
    assert result.steps == 8 and result.stop_reason == "steps"


def test_labels_painted_during_training_are_picked_up_at_the_next_refresh(nuclei):
    img, lab = nuclei
    first = _scribbles(lab, p=0.01)
    layer = first.copy()  # what the user paints on (the trainer gets copies only)
    control = TrainControl(read_labels=lambda: [layer])

    def on_event(e):
        if isinstance(e, TrainStep) and e.step == 4:
            layer[...] = _scribbles(lab, seed=5, p=0.08)  # the user paints more
            control.labels_changed()

    events = []

    def record(e):
        events.append(e)
        on_event(e)

    start = tiny_bundle(seed=3)
    start.source = "start"
    result = run_to_end(train(start, [TrainingPair(img, first)],
                              TrainConfig(**{**FAST, "max_steps": 12}), control), record)
    picked = [e for e in events if isinstance(e, Notice) and "New labels picked up" in e.text]
    assert len(picked) == 1
    np.testing.assert_array_equal(result.labels[0], layer)
    assert result.labels[0] is not layer  # a copy, never the user's array
    assert result.bundle.settings.provenance["training"]["foreground_pixels"] == int((layer == 1).sum())


def test_labels_erased_during_training_keep_the_run_going(nuclei):
    img, lab = nuclei
    layer = _scribbles(lab)
    control = TrainControl(read_labels=lambda: [layer])
    events = []

    def record(e):
        events.append(e)
        if isinstance(e, TrainStep) and e.step == 2:
            layer[...] = 0
            control.labels_changed()

    result = run_to_end(train(tiny_bundle(), [TrainingPair(img, _scribbles(lab))],
                              TrainConfig(**{**FAST, "max_steps": 6}), control), record)
    assert any(isinstance(e, Notice) and "were not used" in e.text for e in events)
    assert result.steps == 6


def test_nan_loss_stops_and_keeps_the_last_good_weights(nuclei, monkeypatch):
    img, lab = nuclei
    real = trainer_mod.training_loss
    calls = {"n": 0}

    def flaky(*a, **k):
        loss, terms = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 9 and loss is not None:
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(trainer_mod, "training_loss", flaky)
    events = []
    result = run_to_end(train(tiny_bundle(), [TrainingPair(img, lab)],
                              TrainConfig(**{**FAST, "mode": "dense", "max_steps": 50})), events.append)
    assert result.stop_reason == "nan"
    assert any(isinstance(e, Notice) and e.level == "error" and "NaN" in e.text for e in events)
    assert all(torch.isfinite(v).all() for v in result.bundle.model.state_dict().values()
               if v.is_floating_point())


def test_same_seed_same_model(nuclei):
    img, lab = nuclei
    a, _ = _run(tiny_bundle(), [TrainingPair(img, lab)], mode="dense", max_steps=6, seed=4)
    b, _ = _run(tiny_bundle(), [TrainingPair(img, lab)], mode="dense", max_steps=6, seed=4)
    c, _ = _run(tiny_bundle(), [TrainingPair(img, lab)], mode="dense", max_steps=6, seed=5)
    assert _state_equal(a.bundle.model.state_dict(), b.bundle.model.state_dict())
    assert not _state_equal(a.bundle.model.state_dict(), c.bundle.model.state_dict())


def test_frozen_encoder_trains_only_the_decoder(nuclei):
    img, lab = nuclei
    start = tiny_bundle()
    result, _ = _run(start, [TrainingPair(img, lab)], mode="dense", max_steps=6, transfer="frozen",
                     patience=0, val_every=6)
    enc0 = start.model.encoder.state_dict()
    enc1 = result.bundle.model.encoder.state_dict()
    assert _state_equal(enc0, enc1)
    dec0, dec1 = start.model.decoder.state_dict(), result.bundle.model.decoder.state_dict()
    assert not _state_equal(dec0, dec1)


def test_frozen_then_unfrozen_trains_the_encoder_later(nuclei):
    img, lab = nuclei
    start = tiny_bundle()
    result, events = _run(start, [TrainingPair(img, lab)], mode="dense", max_steps=10,
                          transfer="frozen_then_unfrozen", patience=0, val_every=10)
    assert any(isinstance(e, Notice) and "unfrozen at step 3" in e.text for e in events)
    assert not _state_equal(start.model.encoder.state_dict(), result.bundle.model.encoder.state_dict())


def test_live_preview_predicts_the_requested_plane(nuclei):
    img, lab = nuclei
    stack = np.stack([img, img[::-1]])
    labels = np.zeros(stack.shape, np.uint8)
    labels[1] = lab[::-1]
    control = TrainControl()
    control.request_preview(PreviewRequest("layer-1", stack, (0,)))
    _, events = _run(tiny_bundle(), [TrainingPair(stack, labels)], control, mode="dense", max_steps=3)
    previews = [e for e in events if isinstance(e, Preview)]
    assert previews and all(p.key == "layer-1" for p in previews)
    assert previews[0].probabilities.shape == img.shape
    assert 0 <= previews[0].probabilities.min() and previews[0].probabilities.max() <= 1


def test_a_model_that_predicts_nothing_is_flagged(nuclei):
    img, lab = nuclei
    start = tiny_bundle()
    with torch.no_grad():
        start.model.segmentation_head[0].bias.fill_(-50.0)
    result, _ = _run(start, [TrainingPair(img, lab)], mode="dense", max_steps=1, lr=1e-8)
    assert any("almost nothing" in w for w in result.warnings)


@pytest.mark.parametrize("cfg, match", [
    ({"mode": "paint"}, "annotation mode"), ({"loss": "focal"}, "Unknown loss"),
    ({"transfer": "half"}, "transfer mode"), ({"max_steps": 0}, "step budget"),
    ({"max_seconds": -1.0}, "time budget"), ({"lr": 2.0}, "learning rate"),
])
def test_bad_settings_are_refused_before_any_work(nuclei, cfg, match):
    img, lab = nuclei
    with pytest.raises(InputError, match=match):
        run_to_end(train(tiny_bundle(), [TrainingPair(img, lab)], TrainConfig(**{**FAST, **cfg})))


def test_without_a_budget_the_run_gets_two_minutes():
    assert TrainConfig().checked().max_seconds == 120.0
    assert TrainConfig(max_steps=5).checked().max_seconds is None


def test_precision_plan_on_cuda_uses_autocast_and_channels_last(monkeypatch):
    assert trainer_mod.precision_plan(torch.device("cpu"), True) == (None, False, False)
    monkeypatch.setattr(trainer_mod, "autocast_dtype", lambda d: torch.float16)
    assert trainer_mod.precision_plan(torch.device("cuda"), True) == (torch.float16, True, True)
    monkeypatch.setattr(trainer_mod, "autocast_dtype", lambda d: torch.bfloat16)
    assert trainer_mod.precision_plan(torch.device("cuda"), True) == (torch.bfloat16, False, True)
    assert trainer_mod.precision_plan(torch.device("cuda"), False) == (None, False, True)


def test_trust_in_the_starting_model_follows_its_held_out_dice():
    assert trainer_mod.starting_trust(None) == 0.0
    assert trainer_mod.starting_trust({"dice": 0.3}) == 0.0
    assert trainer_mod.starting_trust({"dice": 0.7}) == pytest.approx(0.5)
    assert trainer_mod.starting_trust({"dice": 0.95}) == 1.0


def test_a_poor_starting_model_is_not_kept_and_learns_faster(nuclei):
    img, lab = nuclei
    start = tiny_bundle(seed=3)
    start.source = "start"
    with torch.no_grad():
        start.model.segmentation_head[0].bias.fill_(-20.0)  # predicts nothing: held-out Dice 0
    result, events = _run(start, [TrainingPair(img, lab)], mode="dense", max_steps=2)
    assert any(isinstance(e, Notice) and "kept no longer" in e.text for e in events)
    training = result.bundle.settings.provenance["training"]
    assert training["keep_weight"] == 0.0
    assert training["learning_rate"] == pytest.approx(trainer_mod.LR_POOR)


def test_a_good_starting_model_keeps_its_prediction_where_nothing_is_painted(nuclei, good):
    img, lab = nuclei
    scr = _scribbles(lab)
    result, events = _run(good, [TrainingPair(img, scr)], max_steps=2)
    training = result.bundle.settings.provenance["training"]
    assert training["keep_weight"] == pytest.approx(1.0)
    assert training["learning_rate"] == pytest.approx(trainer_mod.LR_GOOD)
    assert not any(isinstance(e, Notice) and "held-out labels: what it" in e.text for e in events)


def test_the_weight_average_warms_up_then_follows_the_decay():
    model = torch.nn.Linear(2, 1)
    avg = trainer_mod._averaged(model, decay=0.5)
    first = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update_parameters(model)  # n = 0: a copy
    torch.testing.assert_close(avg.module.weight, first + 1.0)
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update_parameters(model)  # n = 1: decay min(0.5, 2 / 11)
    d = 2 / 11
    torch.testing.assert_close(avg.module.weight, d * (first + 1.0) + (1 - d) * (first + 2.0))
    for _ in range(30):
        avg.update_parameters(model)
    torch.testing.assert_close(avg.module.weight, first + 2.0, atol=1e-5, rtol=0)
    assert not avg.module.training and not any(p.requires_grad for p in avg.module.parameters())


def test_the_returned_weights_are_the_validated_average(nuclei):
    """With averaging, the model saved is the one validated, not the last raw step."""
    img, lab = nuclei
    snaps = []
    result = run_to_end(train(tiny_bundle(), [TrainingPair(img, lab)],
                              TrainConfig(**{**FAST, "mode": "dense", "max_steps": 10, "ema": 0.9})),
                        lambda e: snaps.append(e) if isinstance(e, Snapshot) else None)
    assert _state_equal(snaps[-1].state_dict, result.bundle.model.state_dict())
    raw = run_to_end(train(tiny_bundle(), [TrainingPair(img, lab)],
                           TrainConfig(**{**FAST, "mode": "dense", "max_steps": 10, "ema": 0.0})))
    assert not _state_equal(raw.bundle.model.state_dict(), result.bundle.model.state_dict())


@pytest.mark.parametrize(("mode", "has_edge"), [("scribbles", True), ("dense", False)])
def test_the_edge_term_applies_to_scribbles_only_by_default(nuclei, mode, has_edge):
    img, lab = nuclei
    labels = _scribbles(lab) if mode == "scribbles" else lab
    _, events = _run(tiny_bundle(), [TrainingPair(img, labels)], mode=mode, max_steps=3)
    steps = [e for e in events if isinstance(e, TrainStep)]
    assert steps and all(("edge" in s.losses) == has_edge for s in steps)
    _, events = _run(tiny_bundle(), [TrainingPair(img, labels)], mode=mode, max_steps=3, edge_weight=0.5)
    assert all("edge" in e.losses for e in events if isinstance(e, TrainStep))


def test_closing_the_run_midway_stops_the_batch_thread(nuclei):
    """napari's worker.quit() closes the generator: no sampling thread may outlive the run."""
    img, lab = nuclei
    gen = train(tiny_bundle(), [TrainingPair(img, lab)], TrainConfig(**{**FAST, "mode": "dense",
                                                                          "max_steps": 50}))
    for event in gen:
        if isinstance(event, TrainStep) and event.step == 3:
            break
    assert any(t.name.startswith("segloop-batches") for t in threading.enumerate())
    gen.close()
    assert not any(t.name.startswith("segloop-batches") for t in threading.enumerate())
