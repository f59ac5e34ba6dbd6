"""The users' active-learning study, simulated: uncertainty-driven against random annotation.

On fully labelled images, as in Di Scandalea et al. 2019: start from a few
labelled regions, then in each round add regions chosen either by the
model's uncertainty (the most uncertain not yet annotated, as the Uncertainty
dock suggests them) or at random, retrain under a fixed budget with the
product's trainer, and score the model on a held-out part. The curve of Dice
against the fraction annotated, for both strategies and several seeds, is what
``segloop simulate-active-learning`` writes.

Design
    * Each image is split once, by columns rounded to whole regions: the
      right-hand ``test_fraction`` is held out for scoring, the band of
      ``val_fraction`` just left of it is the fixed validation set (fully
      labelled, used by the trainer to pick its best weights, the same in
      every round and strategy, as the study's validation images were), and
      the rest is the pool of square regions. With the trainer's own split
      instead, a newly annotated region could be held out whole and never
      trained on, which would blur the comparison.
    * "Annotating" a region copies its ground truth as scribbles (1 = object,
      2 = background) into an otherwise unannotated labels image, so the
      trainer sees exactly what a user who painted that square fully would give.
    * Every round retrains **from the starting model** with the same step
      budget (not from the previous round's model), so that a round's score
      depends only on which regions are annotated.
    * Round 0 (the initial random regions) is shared by both strategies of a seed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from napari_segloop.core.active.quality import informativeness
from napari_segloop.core.active.regions import Region, rank_regions
from napari_segloop.core.active.uncertainty import METHODS, uncertainty
from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Event, Notice, Progress, relay
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.core.training.annotations import BACKGROUND, FOREGROUND
from napari_segloop.core.training.data import TrainingPair
from napari_segloop.core.training.trainer import TrainConfig, train

__all__ = ["STRATEGIES", "SimulationConfig", "SimulationRow", "simulate"]

#: The selection strategies compared.
STRATEGIES: tuple[str, ...] = ("uncertainty", "random")


@dataclass
class SimulationConfig:
    """Settings of a simulation.

    Attributes
    ----------
    region : int
        Side of the square regions in pixels.
    initial : int
        Regions annotated before the first round (chosen at random).
    per_round : int
        Regions added in each later round.
    rounds : int
        Rounds after the initial one.
    steps : int
        Training steps per round (a fixed budget; steps rather than seconds
        so that a run can be repeated on a busy machine).
    seeds : tuple of int
        One repetition per seed (initial regions, random choices, training).
    method : str
        Uncertainty method of the ``uncertainty`` strategy.
    passes : int, optional
        Passes of tta or mc-dropout.
    test_fraction : float
        Share of each image's columns held out for scoring.
    val_fraction : float
        Share of each image's columns used as the fixed validation set (at least one region wide).
    threshold : float, optional
        Threshold of the scored masks (None: each trained model's own).
    train : TrainConfig
        The trainer's settings (mode, budget and seed are set per round).
    """

    region: int = 64
    initial: int = 4
    per_round: int = 4
    rounds: int = 4
    steps: int = 120
    seeds: tuple[int, ...] = (0, 1, 2)
    method: str = "entropy"
    passes: int | None = None
    test_fraction: float = 0.25
    val_fraction: float = 0.125
    threshold: float | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(patience=0, threads=1))

    def checked(self) -> SimulationConfig:
        """Return self after checking the values (raises InputError with the bad one)."""
        if self.region < 8:
            raise InputError(f"The region side must be at least 8 pixels; got {self.region}.")
        for name in ("initial", "per_round", "steps"):
            if getattr(self, name) < 1:
                raise InputError(f"{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}.")
        if self.rounds < 1:
            raise InputError(f"rounds must be at least 1; got {self.rounds}.")
        if not self.seeds:
            raise InputError("Give at least one seed.")
        if self.method not in METHODS or self.method == "ensemble":
            raise InputError(f"The simulation's uncertainty method must be entropy, tta or mc-dropout; "
                             f"got {self.method!r}.")
        if not 0.05 <= self.test_fraction <= 0.8:
            raise InputError(f"test-fraction must be between 0.05 and 0.8; got {self.test_fraction}.")
        if not 0.0 < self.val_fraction <= 0.5:
            raise InputError(f"val-fraction must be in (0, 0.5]; got {self.val_fraction}.")
        return self


@dataclass(frozen=True)
class SimulationRow:
    """One trained model of the simulation (a line of the CSV).

    Attributes
    ----------
    seed, round : int
        Repetition and round (0 = the initial regions).
    strategy : str
        ``uncertainty`` or ``random`` (round 0 is reported under both).
    regions : int
        Regions annotated.
    fraction : float
        Share of the pool's pixels annotated.
    dice : float
        Pixel Dice on the held-out parts of all images together.
    spearman : float
        Rank correlation of region uncertainty with region error on the
        regions not yet annotated, for this round's model.
    top_error_ratio : float
        Error of the ``per_round`` most uncertain of those regions relative to their mean error.
    seconds : float
        Time of the round (training, uncertainty, scoring).
    """

    seed: int
    strategy: str
    round: int
    regions: int
    fraction: float
    dice: float
    spearman: float
    top_error_ratio: float
    seconds: float


@dataclass
class _Image:
    image: np.ndarray
    truth: np.ndarray  # bool (H, W)
    pool_end: int  # first validation column
    split: int  # first held-out (test) column
    name: str
    pool: list[Region]

    def validation_labels(self) -> np.ndarray:
        labels = np.zeros(self.truth.shape, np.uint8)
        band = self.truth[:, self.pool_end:self.split]
        labels[:, self.pool_end:self.split] = np.where(band, FOREGROUND, BACKGROUND)
        return labels


def _images(images: Sequence[Any], truths: Sequence[Any], names: Sequence[str], config: SimulationConfig,
            ) -> list[_Image]:
    out = []
    for image, truth, name in zip(images, truths, names, strict=True):
        image, truth = np.asarray(image), np.asarray(truth)
        if truth.ndim != 2:
            raise InputError(f"{name}: the simulation needs 2-D ground truth; got shape {truth.shape}.")
        if image.shape[:2] != truth.shape and image.shape[-2:] != truth.shape:
            raise InputError(f"{name}: the image has shape {image.shape}, its ground truth {truth.shape}.")
        h, w = truth.shape
        side = config.region
        split = round(w * (1.0 - config.test_fraction) / side) * side
        pool_end = split - max(1, round(w * config.val_fraction / side)) * side
        if pool_end < side or w - split < side // 2:
            raise InputError(f"{name}: {w} columns are too few for regions of {side} px, a validation "
                             f"band and a held-out {config.test_fraction:.0%}; choose a smaller region.")
        if not np.any(truth):
            raise InputError(f"{name}: the ground truth has no objects.")
        pool = rank_regions(np.zeros((h, pool_end), np.float32), side, image=name)
        out.append(_Image(image, truth != 0, pool_end, split, name, pool))
    return out


def _labels(item: _Image, chosen: list[Region]) -> np.ndarray:
    labels = np.zeros(item.truth.shape, np.uint8)
    for reg in chosen:
        if reg.image != item.name:
            continue
        y0, x0, y1, x1 = reg.bbox
        labels[y0:y1, x0:x1] = np.where(item.truth[y0:y1, x0:x1], FOREGROUND, BACKGROUND)
    return labels


def _train(start: ModelBundle | Callable[[], ModelBundle], items: list[_Image], chosen: list[Region],
           config: SimulationConfig, seed: int, notes: set[str]) -> Generator[Event, None, ModelBundle]:
    model = start() if callable(start) else start
    pairs = [TrainingPair(item.image, labels, item.name) for item in items
             if np.any(labels := _labels(item, chosen))]
    pairs += [TrainingPair(item.image, item.validation_labels(), f"{item.name} (validation)", validation=True)
              for item in items]
    cfg = replace(config.train, mode="scribbles", max_steps=config.steps, max_seconds=None, seed=seed)
    result = yield from _warnings_only(train(model, pairs, cfg), notes)
    return result.bundle


def _score(bundle: ModelBundle, items: list[_Image], chosen: list[Region], config: SimulationConfig,
           notes: set[str]) -> Generator[Event, None, tuple[float, float, float, dict[str, np.ndarray]]]:
    """Test Dice, informativeness on the unannotated pool, and the pool's uncertainty per image."""
    threshold = bundle.settings.threshold if config.threshold is None else config.threshold
    tp = fp_fn = 0
    maps: dict[str, np.ndarray] = {}
    rhos, ratios, weights = [], [], []
    options = PredictOptions(device=config.train.device)
    for item in items:
        result = yield from _warnings_only(uncertainty(bundle, item.image, options, config.method,
                                                       config.passes, seed=config.seeds[0]), notes)
        pred = result.probability[:, item.split:] > threshold
        truth = item.truth[:, item.split:]
        tp += int(np.count_nonzero(pred & truth))
        fp_fn += int(np.count_nonzero(pred ^ truth))
        end = item.pool_end
        pool_map = result.uncertainty[:, :end]
        maps[item.name] = pool_map
        quality = informativeness(pool_map, result.probability[:, :end], item.truth[:, :end],
                                  config.region, threshold, top=config.per_round,
                                  labels=_labels(item, chosen)[:, :end])
        if np.isfinite(quality.spearman):
            rhos.append(quality.spearman)
            ratios.append(quality.top_error_ratio)
            weights.append(quality.regions)
    dice = 2 * tp / (2 * tp + fp_fn) if (2 * tp + fp_fn) else 1.0
    rho = float(np.average(rhos, weights=weights)) if rhos else float("nan")
    ratio = float(np.nanmean(ratios)) if ratios and np.isfinite(ratios).any() else float("nan")
    return dice, rho, ratio, maps


def _warnings_only(gen: Generator[Event, None, Any], notes: set[str]) -> Generator[Event, None, Any]:
    """Run a core generator, forwarding only its warnings, each once (the simulation reports rounds)."""

    def warning_once(event: Event) -> Event | None:
        if isinstance(event, Notice) and event.level != "info" and event.text not in notes:
            notes.add(event.text)
            return event
        return None

    return (yield from relay(gen, warning_once))


def _choose(strategy: str, items: list[_Image], chosen: list[Region], maps: dict[str, np.ndarray],
            config: SimulationConfig, rng: np.random.Generator) -> list[Region]:
    taken = {(r.image, r.bbox) for r in chosen}
    if strategy == "random":
        free = [r for item in items for r in item.pool if (r.image, r.bbox) not in taken]
        picks = rng.choice(len(free), size=min(config.per_round, len(free)), replace=False)
        return [free[i] for i in sorted(picks)]
    ranked: list[Region] = []
    for item in items:
        labels = _labels(item, chosen)[:, :item.pool_end]
        ranked.extend(rank_regions(maps[item.name], config.region, labels=labels, image=item.name))
    ranked.sort(key=lambda r: -r.score)
    return ranked[:config.per_round]


def simulate(
    start: ModelBundle | Callable[[], ModelBundle],
    images: Sequence[Any],
    truths: Sequence[Any],
    config: SimulationConfig | None = None,
    names: Sequence[str] | None = None,
) -> Generator[Event, None, list[SimulationRow]]:
    """Run the simulation; yields a :class:`Progress` per trained model, returns the rows.

    Parameters
    ----------
    start : ModelBundle or callable
        The model every round starts from (fine-tuning), or a function that
        makes a new one (training from scratch).
    images, truths : sequence of array-like
        Fully labelled 2-D images (non-zero truth = object).
    config : SimulationConfig, optional
        Region size, rounds, budget, seeds.
    names : sequence of str, optional
        Names of the images (for messages).

    Returns
    -------
    list of SimulationRow
        For each seed: round 0 under both strategies, then one row per strategy and round.
    """
    config = (config or SimulationConfig()).checked()
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    if not images or len(images) != len(truths):
        raise InputError(f"Give as many ground-truth images as images; got {len(images)} and {len(truths)}.")
    items = _images(images, truths, names, config)
    pool_pixels = sum(item.truth.shape[0] * item.pool_end for item in items)
    n_pool = sum(len(item.pool) for item in items)
    needed = config.initial + config.per_round * config.rounds
    if needed > n_pool:
        raise InputError(f"{needed} regions would be annotated but the pool has only {n_pool}; use "
                         "fewer rounds or smaller regions.")
    total = len(config.seeds) * (1 + 2 * config.rounds)
    done = 0
    rows: list[SimulationRow] = []
    notes: set[str] = set()

    def fraction(chosen: list[Region]) -> float:
        return sum((r.bbox[2] - r.bbox[0]) * (r.bbox[3] - r.bbox[1]) for r in chosen) / pool_pixels

    for seed in config.seeds:
        rng = np.random.default_rng(seed)
        everything = [r for item in items for r in item.pool]
        first = [everything[i] for i in sorted(rng.choice(len(everything), config.initial, replace=False))]
        yield Progress(done, total, f"seed {seed}: round 0 ({len(first)} regions)")
        t0 = time.perf_counter()
        bundle = yield from _train(start, items, first, config, seed, notes)
        dice, rho, ratio, maps = yield from _score(bundle, items, first, config, notes)
        seconds = time.perf_counter() - t0
        for strategy in STRATEGIES:
            rows.append(SimulationRow(seed, strategy, 0, len(first), fraction(first), dice, rho, ratio,
                                      seconds))
        done += 1
        for strategy in STRATEGIES:
            chosen, current = list(first), maps
            pick_rng = np.random.default_rng([seed, 1])
            for round_ in range(1, config.rounds + 1):
                chosen += _choose(strategy, items, chosen, current, config, pick_rng)
                yield Progress(done, total,
                               f"seed {seed}: {strategy}, round {round_} ({len(chosen)} regions)")
                t0 = time.perf_counter()
                bundle = yield from _train(start, items, chosen, config, seed, notes)
                dice, rho, ratio, current = yield from _score(bundle, items, chosen, config, notes)
                rows.append(SimulationRow(seed, strategy, round_, len(chosen), fraction(chosen), dice, rho,
                                          ratio, time.perf_counter() - t0))
                done += 1
    yield Progress(done, total, "done")
    return rows
