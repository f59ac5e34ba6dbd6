"""The one training loop of the product: a generator over painted labels.

:func:`train` fine-tunes a loaded model (or trains a new one) on
:class:`~napari_segloop.core.training.data.TrainingPair` objects. It yields
typed events (:class:`~napari_segloop.core.events.TrainStep`,
:class:`~napari_segloop.core.events.Validation`,
:class:`~napari_segloop.core.events.Snapshot`,
:class:`~napari_segloop.core.events.Preview`,
:class:`~napari_segloop.core.events.Progress`,
:class:`~napari_segloop.core.events.Notice`) and returns a
:class:`TrainResult` holding the new bundle. The CLI (``segloop train``), the
Fine-tune dock, the benchmark and ``scripts/train_default_model.py`` all run it.

A good model is never made worse
    * The starting model is validated first (step 0) on the held-out
      annotations, and its weights are the best so far: new weights replace
      them only when they validate better; at the end the best weights are
      returned, so a run that only made things worse returns the starting
      weights (and says so).
    * The *keep* term pulls the prediction on unannotated pixels towards the
      starting model's (scribbles carry no boundary information).
    * Fine-tuning keeps BatchNorm statistics fixed (a few small patches would
      otherwise replace statistics learnt on far more data) and starts from a
      lower learning rate than training from scratch.

Steadier with few labels
    The weights validated, previewed and returned are a moving average of the
    optimiser's (``TrainConfig.ema``); with scribbles, a contrast-sensitive
    smoothness term puts the boundaries on image edges
    (:func:`~napari_segloop.core.training.losses.edge_term`). Patches are
    drawn one step ahead in a background thread
    (:class:`~napari_segloop.core.training.data.BatchPrefetcher`).

Control
    A :class:`TrainControl` (thread-safe) pauses, resumes and stops a run,
    tells it that the labels changed (they are re-read at the next refresh,
    never mid-step), and asks for live previews. Closing the generator (napari's
    ``worker.quit()``) also stops it at the next step; the last ``Snapshot``
    with ``reason="best"`` is then the model to keep.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.multiclass import per_class_scores
from napari_segloop.core.events import (
    Event,
    Notice,
    Preview,
    Progress,
    Snapshot,
    TrainStep,
    Validation,
    run_to_end,
)
from napari_segloop.core.inference.devices import autocast_dtype, empty_cache, resolve_device
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.inference.threads import apply_threads
from napari_segloop.core.models.batchnorm import single_value_batchnorm_guard
from napari_segloop.core.training.annotations import check_mode, label_classes, labels_digest
from napari_segloop.core.training.data import BatchPrefetcher, TrainingData, TrainingPair
from napari_segloop.core.training.losses import (
    LOSSES,
    ClassWeights,
    class_weights,
    edge_term,
    multiclass_weights,
    training_loss,
)

__all__ = [
    "TRANSFER_MODES",
    "PreviewRequest",
    "TrainConfig",
    "TrainControl",
    "TrainResult",
    "train",
]

Transfer = Literal["full", "frozen", "frozen_then_unfrozen"]
#: Transfer-learning modes: fine-tune everything, freeze the encoder, or first frozen then all.
TRANSFER_MODES: tuple[str, ...] = ("full", "frozen", "frozen_then_unfrozen")
#: Fraction of the budget spent frozen in ``frozen_then_unfrozen``.
UNFREEZE_AT = 0.3
#: Peak learning rates: from scratch, fine-tuning a model that already scores well on the
#: held-out labels, and fine-tuning one that does not (interpolated between the two by
#: :func:`starting_trust`). Measured on scribbles in benchmarks/bench_training.py.
LR_SCRATCH, LR_GOOD, LR_POOR = 3e-3, 3e-4, 1.5e-3
#: The starting model is fully trusted from this held-out Dice up, not at all below TRUST_LOW.
TRUST_LOW, TRUST_HIGH = 0.5, 0.9
#: Weight of the edge term in mode ``scribbles`` (see :func:`~.losses.edge_term`).
EDGE_WEIGHT = 0.3
#: Learning-rate factor of the encoder once unfrozen.
ENCODER_LR_FACTOR = 0.1
#: A prediction covering less than this share of the training planes is "nothing" (more than
#: ``1 -`` it: "everything").
DEGENERATE = 0.001


@dataclass
class TrainConfig:
    """Settings of a training run (plain data: saved with the new bundle).

    Attributes
    ----------
    mode : {"scribbles", "dense", "correction"}
        How the labels are read.
    loss : {"bce", "wbce", "dice", "bce+dice"}
        Supervised loss on the annotated pixels.
    pos_weight : float, optional
        Foreground weight of ``wbce`` (default: from the label frequencies).
    transfer : {"full", "frozen", "frozen_then_unfrozen"}
        Fine-tune everything, freeze the encoder (feature extraction), or
        freeze it for the first 30 % of the budget, then fine-tune all of it
        with a 10x lower encoder learning rate.
    max_steps : int, optional
        Step budget.
    max_seconds : float, optional
        Time budget (pauses do not count). Without either budget: 120 s.
    lr : float, optional
        Peak learning rate. Default: 3e-3 from scratch; when fine-tuning, 3e-4
        for a starting model that already scores well on the held-out labels,
        up to 1.5e-3 for one that does not (see :func:`starting_trust`).
    batch_size, crop : int
        Patches per step and their edge in pixels (rounded up to the model's
        input multiple).
    val_fraction : float
        Share of the annotated blocks held out for validation (unless some
        pairs are marked ``validation``).
    max_val_blocks : int
        At most this many 64-px validation blocks are scored.
    val_every : int
        Validate every this many steps.
    patience : int
        Stop after this many validations without improvement (0: never).
    keep_weight : float
        Weight of the keep term on unannotated pixels (fine-tuning only),
        scaled by :func:`starting_trust`: a starting model that scores badly
        on the held-out labels is not kept.
    edge_weight : float, optional
        Weight of :func:`~napari_segloop.core.training.losses.edge_term` (boundaries
        on image edges where nothing is painted). Default: EDGE_WEIGHT in
        mode ``scribbles``, 0 otherwise (dense labels and corrections carry
        their boundaries).
    ema : float
        Decay of the exponential moving average of the weights that is
        validated, previewed and returned (0: the raw weights). Few labels
        make consecutive steps jump between quite different models; the
        average is steadier (decay warmed up as ``(1 + n) / (10 + n)``).
    changed_weight : float
        Weight of the pixels a correction changed.
    seed : int
        Seed of sampling, augmentation and the validation split.
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    amp : bool
        Mixed precision on CUDA.
    threads : int or "auto"
        torch CPU threads (see :mod:`napari_segloop.core.inference.threads`).
    augment : bool
        Flips, rotations, small scale and intensity changes.
    zoom_range, gamma_range : (float, float)
        Ranges of the random rescaling and gamma of the augmentation.
    refresh_seconds : float
        Re-read changed labels at most this often.
    preview_seconds : float
        Live preview at most this often.
    channel_axis, convert, channel :
        Input options, as for prediction.
    """

    mode: str = "scribbles"
    loss: str = "bce+dice"
    pos_weight: float | None = None
    transfer: str = "full"
    max_steps: int | None = None
    max_seconds: float | None = None
    lr: float | None = None
    batch_size: int = 8
    crop: int = 128
    val_fraction: float = 0.2
    max_val_blocks: int = 96
    val_every: int = 20
    patience: int = 12
    keep_weight: float = 1.0
    edge_weight: float | None = None
    ema: float = 0.98
    changed_weight: float = 5.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    threads: int | str = "auto"
    augment: bool = True
    zoom_range: tuple[float, float] = (0.8, 1.25)
    gamma_range: tuple[float, float] = (0.7, 1.4)
    refresh_seconds: float = 2.0
    preview_seconds: float = 4.0
    channel_axis: int | str | None = "auto"
    convert: str = "none"
    channel: int | None = None

    def checked(self) -> TrainConfig:
        """Return a copy with the budget filled in; raise :class:`InputError` for bad values."""
        check_mode(self.mode)
        if self.loss not in LOSSES:
            raise InputError(f"Unknown loss {self.loss!r}; use one of {', '.join(LOSSES)}.")
        if self.transfer not in TRANSFER_MODES:
            raise InputError(f"Unknown transfer mode {self.transfer!r}; use one of "
                             f"{', '.join(TRANSFER_MODES)}.")
        if self.max_steps is not None and self.max_steps < 1:
            raise InputError(f"The step budget must be at least 1; got {self.max_steps}.")
        if self.max_seconds is not None and not (self.max_seconds > 0 and math.isfinite(self.max_seconds)):
            raise InputError(f"The time budget must be a positive number of seconds; got {self.max_seconds}.")
        if self.lr is not None and not (0 < self.lr < 1):
            raise InputError(f"The learning rate must be between 0 and 1; got {self.lr}.")
        if self.batch_size < 1 or self.crop < 16:
            raise InputError("The batch must hold at least 1 patch of at least 16 pixels.")
        if not 0 <= self.val_fraction < 1:
            raise InputError(f"The validation share must be in [0, 1); got {self.val_fraction}.")
        for name, (lo, hi) in (("zoom", self.zoom_range), ("gamma", self.gamma_range)):
            if not 0 < lo <= hi:
                raise InputError(f"The {name} range must be two positive numbers, low to high; "
                                 f"got {lo}, {hi}.")
        if not 0 <= self.ema < 1:
            raise InputError(f"The weight-averaging decay must be in [0, 1); got {self.ema}.")
        if self.pos_weight is not None and not self.pos_weight > 0:
            raise InputError(f"The foreground weight must be positive; got {self.pos_weight}.")
        out = copy.copy(self)
        if out.max_steps is None and out.max_seconds is None:
            out.max_seconds = 120.0
        out.val_every = max(1, int(out.val_every))
        return out


@dataclass(frozen=True)
class PreviewRequest:
    """What the live preview should show: one plane of one image.

    Attributes
    ----------
    key : object
        Returned with the :class:`~napari_segloop.core.events.Preview` (e.g. the layer's id).
    image : array-like
        The image (read in the training thread).
    slice_index : tuple of int, optional
        The plane of a stack (None for a 2-D image).
    rgb : bool, optional
        napari's ``layer.rgb``.
    channel_axis : int, "auto" or None
        The channel axis of ``image``.
    """

    key: Any
    image: Any
    slice_index: tuple[int, ...] | None = None
    rgb: bool | None = None
    channel_axis: int | str | None = "auto"


class TrainControl:
    """Pause, resume, stop, new labels and previews of a running :func:`train` (thread-safe).

    Parameters
    ----------
    read_labels : callable, optional
        Returns fresh copies of the labels arrays, one per pair, in the order
        of the pairs. Called in the training thread after :meth:`labels_changed`.
    """

    def __init__(self, read_labels: Callable[[], list[np.ndarray]] | None = None) -> None:
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._dirty = threading.Event()
        self._lock = threading.Lock()
        self._preview: PreviewRequest | None = None
        self.read_labels = read_labels

    def stop(self) -> None:
        """Finish at the next step and return the best model."""
        self._stop.set()
        self._running.set()

    def pause(self) -> None:
        """Hold the run after the current step (time budget paused too)."""
        self._running.clear()

    def resume(self) -> None:
        """Continue a paused run."""
        self._running.set()

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called."""
        return self._stop.is_set()

    @property
    def paused(self) -> bool:
        """True while paused."""
        return not self._running.is_set()

    def labels_changed(self) -> None:
        """The user painted: re-read the labels at the next refresh."""
        self._dirty.set()

    def take_labels_changed(self) -> bool:
        """True once after :meth:`labels_changed` (the trainer calls this)."""
        if self._dirty.is_set():
            self._dirty.clear()
            return True
        return False

    def request_preview(self, request: PreviewRequest | None) -> None:
        """Show this plane with the latest weights (None turns the preview off)."""
        with self._lock:
            self._preview = request

    @property
    def preview(self) -> PreviewRequest | None:
        """The current preview request."""
        with self._lock:
            return self._preview

    def wait_while_paused(self, timeout: float) -> None:
        """Block up to ``timeout`` seconds while paused."""
        self._running.wait(timeout)


@dataclass
class TrainResult:
    """What a training run returns.

    Attributes
    ----------
    bundle : ModelBundle
        The new model (best weights, on the CPU, eval mode), source ``"trained"``.
    history : list of dict
        One entry per validation (step, losses, Dice, seconds, learning rate).
    stop_reason : str
        ``steps``, ``time``, ``early stopping``, ``stopped`` or ``nan``.
    steps : int
        Steps done.
    best_step : int
        Step of the returned weights (0: the starting model's).
    baseline : dict or None
        Validation of the starting model (None from scratch).
    best : dict
        Validation of the returned weights.
    warnings : list of str
        What the user must know (degenerate prediction, no improvement, ...).
    labels : list of numpy.ndarray
        The labels the run used last (saved with the bundle).
    """

    bundle: ModelBundle
    history: list[dict[str, Any]]
    stop_reason: str
    steps: int
    best_step: int
    baseline: dict[str, float] | None
    best: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    @property
    def improved(self) -> bool:
        """True when the returned weights are not the starting model's."""
        return self.best_step > 0


def starting_trust(baseline: dict[str, float] | None) -> float:
    """How much the starting model is worth keeping, from its held-out Dice, in [0, 1].

    A model that already scores well (Dice >= 0.9) is kept where nothing is
    painted (full keep term, low learning rate); one that scores 0.5 or less
    knows nothing worth keeping about these images (no keep term, the higher
    learning rate). None (training from scratch) gives 0.
    """
    if baseline is None:
        return 0.0
    return float(np.clip((baseline["dice"] - TRUST_LOW) / (TRUST_HIGH - TRUST_LOW), 0.0, 1.0))


def _encoder(model: torch.nn.Module) -> torch.nn.Module | None:
    enc = getattr(model, "encoder", None)
    return enc if isinstance(enc, torch.nn.Module) else None


def _set_modes(model: torch.nn.Module, frozen_encoder: bool, freeze_bn: bool) -> None:
    """``model.train()``, then encoder and BatchNorm layers back to eval where they are fixed."""
    model.train()
    enc = _encoder(model)
    if frozen_encoder and enc is not None:
        enc.eval()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()


def _freeze_encoder(model: torch.nn.Module, frozen: bool) -> None:
    enc = _encoder(model)
    if enc is not None:
        for p in enc.parameters():
            p.requires_grad_(not frozen)


def precision_plan(device: torch.device, amp: bool) -> tuple[torch.dtype | None, bool, bool]:
    """Mixed precision and memory layout of training on ``device``.

    Returns
    -------
    autocast : torch.dtype or None
        The autocast dtype (bfloat16 or float16 on CUDA when ``amp``), else None.
    scaler : bool
        True when a gradient scaler is needed (float16).
    channels_last : bool
        True on CUDA, where convolutions run faster in NHWC.
    """
    if device.type != "cuda":
        return None, False, False
    dtype = autocast_dtype(device) if amp else None
    return dtype, dtype == torch.float16, True


def _averaged(model: torch.nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An exponential moving average of ``model``'s weights (torch's AveragedModel), in eval mode.

    The decay is warmed up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
    updates, so the first steps are not averaged with the random start.
    BatchNorm statistics are copied from the model, not averaged.
    """
    def ema_update(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        d = min(decay, (1.0 + float(n)) / (10.0 + float(n)))
        torch._foreach_lerp_(averaged, current, 1.0 - d)  # what torch's get_ema_multi_avg_fn does

    avg = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_update, use_buffers=False)
    avg.module.eval()
    for p in avg.module.parameters():
        p.requires_grad_(False)
    return avg


def _state_copy(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _finite_state(state: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point())


def _better(val: dict[str, float], best: dict[str, float] | None) -> bool:
    if best is None:
        return True
    if val["dice"] > best["dice"] + 1e-4:
        return True
    return val["dice"] >= best["dice"] - 1e-4 and val["loss"] < best["loss"] * (1 - 1e-3)


def _validate(model: torch.nn.Module, data: TrainingData, cfg: TrainConfig, device: torch.device,
              autocast: torch.dtype | None, channels_last: bool, threshold: float,
              classes: Any, multiple: int) -> dict[str, float]:
    """Loss, Dice and IoU on the held-out annotations (pooled over the windows).

    With K classes "dice" and "iou" are the means over the object classes of the
    per-class values (pixels pooled over the windows; the arg-max is the
    prediction) and "miou" the mean IoU over all K classes with background.
    """
    tp = fp = fn = 0.0
    confusion: np.ndarray | None = None
    loss_sum = 0.0
    n_pix = 0.0
    was_training = model.training
    model.eval()
    try:
        wins = data.windows
        for start in range(0, len(wins), 16):
            chunk = wins[start:start + 16]
            arrays = [data.window_arrays(w) for w in chunk]
            x = torch.from_numpy(np.stack([a[0] for a in arrays])).to(device)
            size = x.shape[-1]
            pad = (-size) % multiple
            if pad:
                x = torch.nn.functional.pad(x, (0, pad, 0, pad), mode="reflect")
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode(), torch.autocast(
                device_type=device.type, dtype=autocast or torch.float32, enabled=autocast is not None
            ):
                logits = model(x)
            k = logits.shape[1]
            logits = logits.float()[:, :k if k > 1 else 1, :size, :size].cpu()
            tgt = torch.from_numpy(np.stack([a[1] for a in arrays]))[:, None]
            mask = torch.from_numpy(np.stack([a[2] for a in arrays]))[:, None].float()
            loss, _ = training_loss(logits, tgt, mask, cfg.loss, classes)
            m = float(mask.sum())
            if loss is not None:
                loss_sum += float(loss) * m
                n_pix += m
            if k > 1:
                sel = mask[:, 0] > 0
                pred_c = logits.argmax(dim=1)[sel].numpy()
                true_c = tgt[:, 0][sel].round().long().clamp(0, k - 1).numpy()
                part = np.bincount(true_c * k + pred_c, minlength=k * k).reshape(k, k)
                confusion = part if confusion is None else confusion + part
                continue
            pred = (torch.sigmoid(logits) > threshold).float()
            tp += float((pred * tgt * mask).sum())
            fp += float((pred * (1 - tgt) * mask).sum())
            fn += float(((1 - pred) * tgt * mask).sum())
    finally:
        if was_training:
            model.train()
    if confusion is not None:
        scores = per_class_scores(confusion)
        return {"loss": loss_sum / n_pix if n_pix else 0.0, "dice": scores["mean_dice"],
                "iou": scores["mean_iou"], "miou": scores["miou"]}
    denom = 2 * tp + fp + fn
    dice = 2 * tp / denom if denom > 0 else 1.0
    iou = tp / (tp + fp + fn) if denom > 0 else 1.0
    return {"loss": loss_sum / n_pix if n_pix else 0.0, "dice": dice, "iou": iou}


def _weights(data: TrainingData, cfg: TrainConfig) -> ClassWeights:
    """Class weights of the weighted loss: foreground/background, or one per class with K classes."""
    if data.classes > 2:
        return multiclass_weights(data.class_counts)
    return class_weights(data.n_foreground, data.n_background, cfg.pos_weight)


def _lr_factor(progress: float, step: int, warmup: int = 10) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5 % over the budget."""
    warm = min(1.0, step / warmup)
    cos = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return warm * (0.05 + 0.95 * cos)


def _fractions(bundle: ModelBundle, data: TrainingData, options: PredictOptions,
               threshold: float) -> float:
    """Share of the annotated planes' pixels the model marks as foreground (up to 8 planes)."""
    total = fg = 0
    for plane in data.planes[:8]:
        pair = data.pairs[plane.pair]
        opts = copy.copy(options)
        opts.rgb = pair.rgb
        prob = run_to_end(predict(bundle, pair.image, opts, slice_index=plane.index))
        if prob.ndim == 3:  # K classes: the arg-max is not background
            fg += int((prob.argmax(axis=0) > 0).sum())
            total += prob[0].size
            continue
        fg += int((prob > threshold).sum())
        total += prob.size
    return fg / total if total else 0.0


def train(
    start: ModelBundle,
    pairs: list[TrainingPair],
    config: TrainConfig | None = None,
    control: TrainControl | None = None,
) -> Generator[Event, None, TrainResult]:
    """Train ``start`` on painted labels; yields events, returns a :class:`TrainResult`.

    Parameters
    ----------
    start : ModelBundle
        The model to fine-tune; a bundle with ``source == "new"`` (from
        :func:`~napari_segloop.core.models.registry.create_model`) is trained
        from scratch (no keep term, no baseline). It is never modified: the
        run trains a copy.
    pairs : list of TrainingPair
        Images and their labels.
    config : TrainConfig, optional
        Settings.
    control : TrainControl, optional
        Pause/resume/stop, label refreshes and previews.

    Raises
    ------
    InputError
        Bad settings, labels of the wrong shape, no labels, one class only.
    """
    cfg = (config or TrainConfig()).checked()
    control = control or TrainControl()
    from napari_segloop.core.models.registry import trainable_reason

    reason = trainable_reason(start.model)
    if reason:
        raise InputError(reason)
    threads = apply_threads(cfg.threads)
    choice = resolve_device(cfg.device)
    device = choice.device
    for text in choice.notices:
        yield Notice(text, "warning")
    fine_tune = start.source != "new"
    settings = start.settings
    threshold = float(settings.threshold)
    scale = float(settings.scale_factor)
    multiple = start.input_multiple
    crop = int(math.ceil(cfg.crop / multiple) * multiple)
    predict_opts = PredictOptions(device=str(device), amp=cfg.amp, channel_axis=cfg.channel_axis,
                                  convert=cfg.convert, channel=cfg.channel)
    seed = int(cfg.seed)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)

    teacher_bundle: ModelBundle | None = None
    if fine_tune:
        teacher_bundle = ModelBundle(model=copy.deepcopy(start.model).eval(), settings=settings,
                                     source=start.source)

        def teacher(pair: int, index: tuple[int, ...]) -> np.ndarray:
            opts = copy.copy(predict_opts)
            opts.rgb = pairs[pair].rgb
            return run_to_end(predict(teacher_bundle, pairs[pair].image, opts, slice_index=index))
    data = TrainingData(
        pairs, cfg.mode, start.in_channels, settings.normalization,
        teacher=teacher if fine_tune else None, threshold=threshold, scale=scale,
        val_fraction=cfg.val_fraction, seed=seed,
        input_options={"channel_axis": cfg.channel_axis, "convert": cfg.convert, "channel": cfg.channel},
        changed_weight=cfg.changed_weight, max_val_blocks=cfg.max_val_blocks,
        classes=label_classes(start.classes),
    )
    for note in data.notes:
        yield Notice(note)
    labels = [np.array(p.labels, copy=True) for p in pairs]
    pending = data.pending_planes(labels)
    for k, (i, idx) in enumerate(pending):
        yield Progress(k, len(pending), "preparing the annotated planes")
        data.prepare_plane(i, idx)
    yield Progress(len(pending), len(pending), "preparing the annotated planes")
    data.build(labels)
    for text in data.split_warnings:
        yield Notice(text, "warning")
    if not data.held_out:
        yield Notice("Too few annotations to hold any out: validation uses the training "
                     "annotations, so it cannot detect over-fitting. Paint in more places.", "warning")
    classes = _weights(data, cfg)

    model = copy.deepcopy(start.model).to(device)
    autocast, use_scaler, channels_last = precision_plan(device, cfg.amp)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    freeze_bn = fine_tune
    frozen = cfg.transfer in ("frozen", "frozen_then_unfrozen")
    if frozen and _encoder(model) is None:
        yield Notice("This architecture has no separate encoder; all of it is trained.", "warning")
        frozen = False
    if frozen and not fine_tune and (settings.provenance or {}).get("encoder_weights", "none") == "none":
        yield Notice("The encoder of this new model is not pre-trained: freezing it keeps its random "
                     "features. Feature extraction needs pre-trained (imagenet) encoder weights.",
                     "warning")
    _freeze_encoder(model, frozen)
    _set_modes(model, frozen, freeze_bn)
    bn_guard = single_value_batchnorm_guard(model)
    bn_guard.__enter__()
    enc = _encoder(model)
    enc_ids = {id(p) for p in enc.parameters()} if enc is not None else set()
    groups = [{"params": [p for p in model.parameters() if id(p) not in enc_ids], "lr_factor": 1.0}]
    if enc_ids:
        groups.append({"params": list(enc.parameters()), "lr_factor": 1.0})
    opt = torch.optim.AdamW(groups, lr=cfg.lr or LR_SCRATCH, weight_decay=1e-4)
    ema = _averaged(model, cfg.ema) if cfg.ema > 0 else None
    #: The weights that are validated, previewed and returned.
    averaged = ema.module if ema is not None else model
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler) if use_scaler else None
    norm = settings.normalization
    clip = (norm.clip_min, norm.clip_max) if norm.kind == "percentile" and norm.clip else None

    history: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    paused_for = 0.0

    def active() -> float:
        return time.perf_counter() - t_start - paused_for

    baseline: dict[str, float] | None = None
    best: dict[str, float] | None = None
    best_step = 0
    best_state = _state_copy(model)
    if fine_tune:
        baseline = _validate(model, data, cfg, device, autocast, channels_last, threshold, classes, multiple)
        _set_modes(model, frozen, freeze_bn)
        best = dict(baseline)
        history.append({"step": 0, "val_loss": round(baseline["loss"], 5),
                        "val_dice": round(baseline["dice"], 5), "seconds": 0.0})
        yield Validation(0, baseline["loss"], baseline["dice"], best=True,
                         metrics={"iou": baseline["iou"], "start_dice": baseline["dice"]})
        yield Snapshot(0, best_state, "best")
    trust = starting_trust(baseline)
    keep_weight = cfg.keep_weight * trust
    edge_weight = cfg.edge_weight if cfg.edge_weight is not None else (
        EDGE_WEIGHT if cfg.mode == "scribbles" else 0.0)
    base_lr = cfg.lr or (LR_SCRATCH if not fine_tune else LR_GOOD + (LR_POOR - LR_GOOD) * (1 - trust))
    if fine_tune and trust < 1:
        yield Notice(
            f"The starting model scores Dice {baseline['dice']:.2f} on the held-out labels: what it "
            f"predicts where nothing is painted is kept {'less' if trust > 0 else 'no longer'}"
            f" (keep weight {keep_weight:.2g}) and it learns faster (learning rate {base_lr:.2g}).")

    step = 0
    stop_reason = "steps"
    since_best = 0
    running: list[float] = []
    speed_t, speed_n = time.perf_counter(), 0
    last_refresh = last_preview = time.perf_counter()
    warned_empty = False
    n_skipped = 0
    prefetch = BatchPrefetcher(lambda: data.sample(rng, cfg.batch_size, crop, cfg.augment, clip,
                                                 tuple(cfg.zoom_range), tuple(cfg.gamma_range)))
    try:
        while True:
            if control.stopping:
                stop_reason = "stopped"
                break
            if control.paused:
                t0 = time.perf_counter()
                yield Progress(step, cfg.max_steps or 0, "paused")
                control.wait_while_paused(0.2)
                paused_for += time.perf_counter() - t0
                continue
            progress = max(step / cfg.max_steps if cfg.max_steps else 0.0,
                           active() / cfg.max_seconds if cfg.max_seconds else 0.0)
            if progress >= 1.0:
                stop_reason = "steps" if cfg.max_steps and step >= cfg.max_steps else "time"
                break
            now = time.perf_counter()
            if control.read_labels is not None and now - last_refresh >= cfg.refresh_seconds \
                    and control.take_labels_changed():
                last_refresh = now
                try:
                    fresh = [np.array(a, copy=True) for a in control.read_labels()]
                    for i, idx in data.pending_planes(fresh):
                        data.prepare_plane(i, idx)
                    before = (data.n_foreground, data.n_background)
                    prefetch.discard()  # drawn from the old labels; never read mid-build
                    data.build(fresh)
                    labels = fresh
                    classes = _weights(data, cfg)
                    yield Notice(f"New labels picked up at step {step} ({data.n_foreground} foreground, "
                                 f"{data.n_background} background pixels; before {before[0]}, {before[1]}).")
                    if baseline is not None and teacher_bundle is not None:
                        # The held-out set changed: score the starting model and the best weights on it again.
                        teacher_bundle.model.to(device)
                        baseline = _validate(teacher_bundle.model, data, cfg, device, autocast, False,
                                             threshold, classes, multiple)
                        current = _state_copy(model)
                        model.load_state_dict(best_state)
                        best = _validate(model, data, cfg, device, autocast, channels_last, threshold,
                                         classes, multiple)
                        model.load_state_dict(current)
                        _set_modes(model, frozen, freeze_bn)
                        trust = starting_trust(baseline)
                        keep_weight = cfg.keep_weight * trust
                except InputError as exc:
                    yield Notice(f"The new labels were not used: {exc}", "warning")
            request = control.preview
            if request is not None and now - last_preview >= cfg.preview_seconds:
                last_preview = now
                yield _preview(averaged, settings, request, predict_opts, step)
                _set_modes(model, frozen, freeze_bn)
            if cfg.transfer == "frozen_then_unfrozen" and frozen and progress >= UNFREEZE_AT:
                frozen = False
                _freeze_encoder(model, False)
                _set_modes(model, False, freeze_bn)
                if len(opt.param_groups) > 1:
                    opt.param_groups[1]["lr_factor"] = ENCODER_LR_FACTOR
                yield Notice(f"Encoder unfrozen at step {step}, with a {1 / ENCODER_LR_FACTOR:g}x lower "
                             "learning rate.")

            lr = base_lr * _lr_factor(progress, step + 1)
            for g in opt.param_groups:
                g["lr"] = lr * g.get("lr_factor", 1.0)
            batch = prefetch.get()
            x = torch.from_numpy(batch.image).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(batch.target).to(device)
            w = torch.from_numpy(batch.weight).to(device)
            t = torch.from_numpy(batch.teacher).to(device) if batch.teacher is not None else None
            k = torch.from_numpy(batch.keep).to(device) if batch.keep is not None else None
            with torch.autocast(device_type=device.type, dtype=autocast or torch.float32,
                                enabled=autocast is not None):
                logits = model(x)
            loss, terms = training_loss(logits, y, w, cfg.loss, classes, t, k,
                                        keep_weight)
            side = list(getattr(model, "side_logits", None) or [])
            if loss is not None and side:
                # Deep supervision (UNet 3+): every head is trained, the loss is their mean.
                extra = [training_loss(s_, y, w, cfg.loss, classes, t, k, keep_weight)[0] for s_ in side]
                loss = (loss + sum(e for e in extra if e is not None)) / (1 + len(extra))
                terms["deep_supervision_heads"] = float(len(extra))
            if loss is not None and edge_weight > 0:
                edge = edge_term(logits, x)
                loss = loss + edge_weight * edge
                terms["edge"] = float(edge.detach())
            step += 1
            if loss is None:
                n_skipped += 1
                if not warned_empty:
                    warned_empty = True
                    yield Notice("A batch had no annotated pixel and was skipped.")
                continue
            if not bool(torch.isfinite(loss)):
                model.load_state_dict(best_state)
                stop_reason = "nan"
                yield Notice(f"The loss became NaN/Inf at step {step}; training stopped and the best "
                             f"weights so far (step {best_step}) are kept.", "error")
                break
            opt.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if ema is not None:
                ema.update_parameters(model)
            value = float(loss.detach())
            running.append(value)
            speed_n += cfg.batch_size
            elapsed_speed = time.perf_counter() - speed_t
            sps = speed_n / elapsed_speed if elapsed_speed > 0 else 0.0
            if speed_n >= 20 * cfg.batch_size:
                speed_t, speed_n = time.perf_counter(), 0
            yield TrainStep(step, cfg.max_steps or 0, value, lr, active(), sps, terms)

            last = cfg.max_steps is not None and step >= cfg.max_steps
            if step % cfg.val_every == 0 or last:
                val = _validate(averaged, data, cfg, device, autocast, channels_last, threshold, classes,
                                multiple)
                _set_modes(model, frozen, freeze_bn)
                entry = {"step": step, "train_loss": round(float(np.mean(running)), 5),
                         "val_loss": round(val["loss"], 5), "val_dice": round(val["dice"], 5),
                         "lr": lr, "seconds": round(active(), 2)}
                running = []
                history.append(entry)
                if not math.isfinite(val["loss"]):
                    model.load_state_dict(best_state)
                    stop_reason = "nan"
                    yield Notice(f"Validation became NaN at step {step}; training stopped and the best "
                                 f"weights so far (step {best_step}) are kept.", "error")
                    break
                is_best = _better(val, best)
                metrics = {"iou": val["iou"]}
                if baseline is not None:
                    metrics["start_dice"] = baseline["dice"]
                yield Validation(step, val["loss"], val["dice"], best=is_best, metrics=metrics)
                if is_best:
                    best, best_step, since_best = dict(val), step, 0
                    best_state = _state_copy(averaged)
                    yield Snapshot(step, best_state, "best")
                else:
                    since_best += 1
                    if cfg.patience and since_best >= cfg.patience:
                        stop_reason = "early stopping"
                        yield Notice(f"Validation has not improved for {since_best} checks; stopping "
                                     f"early (best at step {best_step}).")
                        break
    finally:
        prefetch.close()
        bn_guard.__exit__(None, None, None)

    if step == 0 and best is None:
        best = _validate(averaged, data, cfg, device, autocast, channels_last, threshold, classes,
                         multiple)
    if best is None or (not fine_tune and best_step == 0 and step > 0):
        # From scratch, stopped before the first validation: the current weights are all there is.
        val = _validate(averaged, data, cfg, device, autocast, channels_last, threshold, classes,
                        multiple)
        best, best_step, best_state = dict(val), step, _state_copy(averaged)
    model.load_state_dict(best_state)
    model.eval()
    request = control.preview
    if request is not None:
        # The last preview shows the weights the run returns (the best), not the last step's.
        yield _preview(model, settings, request, predict_opts, best_step)
    model = model.to("cpu").to(memory_format=torch.contiguous_format)
    del opt, ema, averaged
    if teacher_bundle is not None:
        teacher_bundle.model.to("cpu")  # the copy predict() moved to the device
    empty_cache(device)
    yield Progress(0, 1, "checking the new model")
    new_settings = copy.deepcopy(settings)
    bundle = ModelBundle(model=model, settings=new_settings, source="trained")
    warnings: list[str] = []
    if fine_tune and best_step == 0:
        warnings.append("Training did not improve on the starting model on the held-out "
                        "annotations; the new model keeps the starting weights. Paint more or "
                        "in other places, or train longer.")
    elif baseline is not None and best["dice"] < baseline["dice"]:
        warnings.append(f"The new model scores lower than the starting model on the held-out "
                        f"annotations (Dice {best['dice']:.3f} < {baseline['dice']:.3f}).")
    share = _fractions(bundle, data, PredictOptions(device="cpu", channel_axis=cfg.channel_axis,
                                                    convert=cfg.convert, channel=cfg.channel), threshold)
    rule = f"at threshold {threshold:g}" if start.classes == 1 else "in any class but background"
    if share < DEGENERATE:
        warnings.append(f"The new model marks almost nothing as foreground on the training images "
                        f"({share:.2%} of the pixels {rule}).")
    elif share > 1 - DEGENERATE:
        warnings.append(f"The new model marks almost everything as foreground on the training images "
                        f"({share:.2%} of the pixels {rule}).")
    for text in warnings:
        yield Notice(text, "warning")
    elapsed = active()
    record = {k: v for k, v in asdict(cfg).items()}
    new_settings.provenance = {
        "note": ("Fine-tuned" if fine_tune else "Trained from scratch") + f" by segloop on {cfg.mode} "
                f"labels of {len(pairs)} image(s), {len(data.planes)} annotated plane(s).",
        "parent": start.source if fine_tune else None,
        "encoder_weights": (settings.provenance or {}).get("encoder_weights", "not recorded"),
        "parent_note": (settings.provenance or {}).get("note") if fine_tune else None,
        "training": {
            "config": record,
            "device": str(device),
            "threads": threads,
            "images": [{"name": p.name, "shape": list(np.shape(p.labels))} for p in pairs],
            "labels_sha256": labels_digest(labels),
            "annotated_planes": len(data.planes),
            "foreground_pixels": int(data.n_foreground),
            "background_pixels": int(data.n_background),
            "held_out": bool(data.held_out),
            "steps": step,
            "skipped_steps": n_skipped,
            "seconds": round(elapsed, 1),
            "stop_reason": stop_reason,
            "best_step": best_step,
            "start_val_dice": None if baseline is None else round(baseline["dice"], 5),
            "keep_weight": keep_weight,
            "learning_rate": base_lr,
            "best_val_dice": round(best["dice"], 5),
            "foreground_share": round(share, 5),
            "warnings": warnings,
        },
        "history": history,
    }
    return TrainResult(bundle, history, stop_reason, step, best_step, baseline, best, warnings, labels)


def _preview(model: torch.nn.Module, settings: Any, request: PreviewRequest,
             options: PredictOptions, step: int) -> Preview:
    opts = copy.copy(options)
    opts.rgb = request.rgb
    opts.channel_axis = request.channel_axis
    bundle = ModelBundle(model=model, settings=settings, source="training")
    prob = run_to_end(predict(bundle, request.image, opts, slice_index=request.slice_index or None))
    return Preview(step, request.key, prob)
