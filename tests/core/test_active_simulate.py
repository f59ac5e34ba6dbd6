"""The active-learning simulation (rounds, fractions, which regions each strategy picks) and its report."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from napari_segloop.core.active import simulate as sim
from napari_segloop.core.active.regions import rank_regions
from napari_segloop.core.active.report import curves, plot_rows, summary_lines, write_csv
from napari_segloop.core.active.simulate import STRATEGIES, SimulationConfig, SimulationRow, simulate
from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Progress, run_to_end
from napari_segloop.core.training.trainer import TrainConfig

SIDE = 32
#: 96 x 128 images, regions of 32: the right quarter (columns 96-128) is held out for the test, the next
#: region-wide band (64-96) is the fixed validation set, and the pool is the left 64 columns, 3 x 2 regions.
POOL = [(y, x, y + SIDE, x + SIDE) for y in (0, 32, 64) for x in (0, 32)]
PNG = b"\x89PNG\r\n\x1a\n"


def _config(**kwargs) -> SimulationConfig:
    values = {"region": SIDE, "initial": 1, "per_round": 1, "rounds": 1, "steps": 2, "seeds": (0,),
              "train": TrainConfig(patience=0, threads=1, batch_size=2, crop=32, device="cpu",
                                   val_every=1000, augment=False)}
    return SimulationConfig(**{**values, **kwargs})


@pytest.fixture
def data(make_blobs):
    image = make_blobs((96, 128), seed=7, n=16)
    return image, image > 0.6


def _annotated(labels: np.ndarray) -> set[tuple[int, int, int, int]]:
    return {bbox for bbox in POOL if labels[bbox[0]:bbox[2], bbox[1]:bbox[3]].any()}


def _fully_annotated(labels: np.ndarray, truth: np.ndarray, bbox) -> bool:
    y0, x0, y1, x1 = bbox
    return bool(np.array_equal(labels[y0:y1, x0:x1], np.where(truth[y0:y1, x0:x1], 1, 2)))


def test_a_tiny_simulation(make_bundle, data, monkeypatch):
    """Real training (2 steps); the trainer is only watched to see the labels it gets, and the uncertainty
    map is replaced by a known one, hottest on the annotated region, so the picks can be checked."""
    image, truth = data
    start = make_bundle(depth=3, seed=0)
    weights = {k: v.clone() for k, v in start.model.state_dict().items()}
    seen: list[np.ndarray] = []
    real_train, real_uncertainty = sim.train, sim.uncertainty

    def watched_train(model, pairs, cfg):
        assert cfg.max_steps == 2 and cfg.mode == "scribbles" and cfg.max_seconds is None
        training = [p for p in pairs if not p.validation]
        validation = [p for p in pairs if p.validation]
        assert len(training) == 1 and len(validation) == 1
        band = np.asarray(validation[0].labels)
        assert _fully_annotated(band, truth, (0, 64, 96, 96)), "the validation band is fully labelled"
        assert not band[:, :64].any() and not band[:, 96:].any()
        seen.append(np.asarray(training[0].labels).copy())
        return (yield from real_train(model, pairs, cfg))

    # Pool regions graded 0.1 .. 0.6 in this order (most uncertain: (64, 32)); annotated ones 1.0.
    order = [(64, 32, 96, 64), (0, 32, 32, 64), (32, 0, 64, 32), (0, 0, 32, 32), (64, 0, 96, 32),
             (32, 32, 64, 64)]

    def known_uncertainty(bundle, img, options, method, passes, seed=0, **kwargs):
        result = yield from real_uncertainty(bundle, img, options, method, passes, seed=seed, **kwargs)
        u = np.zeros(result.uncertainty.shape, np.float32)
        for k, (y0, x0, y1, x1) in enumerate(order):
            u[y0:y1, x0:x1] = 0.6 - 0.1 * k
        for y0, x0, y1, x1 in _annotated(seen[-1]):
            u[y0:y1, x0:x1] = 1.0
        result.uncertainty = u
        return result

    monkeypatch.setattr(sim, "train", watched_train)
    monkeypatch.setattr(sim, "uncertainty", known_uncertainty)
    events: list = []
    rows = run_to_end(simulate(start, [image], [truth], _config(), ["blobs"]), events.append)

    assert len(rows) == 2 + 2 * 1
    assert all(isinstance(r, SimulationRow) for r in rows)
    assert [(r.strategy, r.round, r.regions) for r in rows] == [
        ("uncertainty", 0, 1), ("random", 0, 1), ("uncertainty", 1, 2), ("random", 1, 2)]
    assert rows[0].dice == rows[1].dice and rows[0].seconds == pytest.approx(rows[1].seconds, abs=0.01)
    assert rows[0].top_error_ratio == rows[1].top_error_ratio or math.isnan(rows[0].top_error_ratio)
    assert [r.fraction for r in rows] == pytest.approx([1 / 6, 1 / 6, 2 / 6, 2 / 6])
    for r in rows:
        assert r.seed == 0 and 0 <= r.dice <= 1 and r.seconds >= 0
        assert math.isnan(r.spearman) or -1 <= r.spearman <= 1

    # Three trainings: round 0, then round 1 of each strategy.
    assert len(seen) == 3
    first = _annotated(seen[0])
    assert len(first) == 1
    (initial,) = first
    assert _fully_annotated(seen[0], truth, initial), "a region's whole ground truth, as scribbles"
    assert not seen[0][:, 64:].any(), "the held-out part is never annotated"
    # Uncertainty: the annotated region (hottest) is skipped, the most uncertain of the rest is added.
    expected = next(b for b in order if b != initial)
    assert _annotated(seen[1]) == {initial, expected}
    assert all(_fully_annotated(seen[1], truth, b) for b in (initial, expected))
    # Random: one new region, not the initial one again.
    assert len(_annotated(seen[2])) == 2 and initial in _annotated(seen[2])

    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 3
    assert torch.equal(start.model.state_dict()["segmentation_head.0.weight"],
                       weights["segmentation_head.0.weight"]), "the starting model is not changed"
    assert all(torch.equal(v, weights[k]) for k, v in start.model.state_dict().items())


def test_rounds_grow_the_fraction_and_a_factory_gives_a_fresh_model(make_bundle, data, monkeypatch):
    """Several rounds with the real uncertainty; training stubbed out (the model starts fresh each round)."""
    image, truth = data
    made: list = []

    def factory():
        made.append(make_bundle(depth=3, seed=len(made)))
        return made[-1]

    class Result:
        def __init__(self, bundle):
            self.bundle = bundle

    chosen: list[set] = []
    maps: list[np.ndarray] = []
    real_uncertainty = sim.uncertainty

    def fake_train(model, pairs, cfg):
        chosen.append(_annotated(np.asarray(next(p for p in pairs if not p.validation).labels)))
        return Result(model)
        yield  # a generator

    def recorded(*args, **kwargs):
        result = yield from real_uncertainty(*args, **kwargs)
        assert result.uncertainty.shape == (96, 128)
        maps.append(result.uncertainty[:, :64].copy())
        return result

    monkeypatch.setattr(sim, "train", fake_train)
    monkeypatch.setattr(sim, "uncertainty", recorded)
    rows = run_to_end(simulate(factory, [image], [truth], _config(rounds=2, per_round=2, initial=1)))
    assert len(made) == 1 + 2 * 2
    assert len(rows) == 2 + 2 * 2
    for strategy in STRATEGIES:
        mine = [r for r in rows if r.strategy == strategy]
        assert [r.round for r in mine] == [0, 1, 2]
        assert [r.regions for r in mine] == [1, 3, 5]
        assert [r.fraction for r in mine] == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    # The uncertainty strategy's round 1 adds the two most uncertain unannotated regions of round 0's map.
    labels = np.zeros((96, 64), np.uint8)
    for y0, x0, y1, x1 in chosen[0]:
        labels[y0:y1, x0:x1] = 1
    top = {r.bbox for r in rank_regions(maps[0], SIDE, labels=labels)[:2]}
    assert chosen[1] == chosen[0] | top
    assert len(chosen[2]) == 5 and chosen[1] < chosen[2]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"initial": 6}, "pool has only 6"),
    ({"initial": 5, "per_round": 2}, "pool has only 6"),
    ({"region": 7}, "at least 8"),
    ({"steps": 0}, "steps"),
    ({"rounds": 0}, "rounds"),
    ({"seeds": ()}, "seed"),
    ({"method": "ensemble"}, "entropy, tta or mc-dropout"),
    ({"test_fraction": 0.9}, "test-fraction"),
    ({"val_fraction": 0.0}, "val-fraction"),
    ({"val_fraction": 0.6}, "val-fraction"),
    ({"region": 96}, "too few"),
])
def test_bad_configs_are_refused(make_bundle, data, kwargs, match):
    image, truth = data
    with pytest.raises(InputError, match=match):
        run_to_end(simulate(make_bundle(depth=3), [image], [truth], _config(**kwargs)))


def test_bad_images_are_refused(make_bundle, data):
    image, truth = data
    start = make_bundle(depth=3)
    with pytest.raises(InputError, match="as many"):
        run_to_end(simulate(start, [image, image], [truth], _config()))
    with pytest.raises(InputError, match="no objects"):
        run_to_end(simulate(start, [image], [np.zeros_like(truth)], _config()))
    with pytest.raises(InputError, match="2-D"):
        run_to_end(simulate(start, [image], [truth[None]], _config()))
    with pytest.raises(InputError, match="shape"):
        run_to_end(simulate(start, [image], [truth[:64]], _config()))


# ---------------------------------------------------------------- report


def _rows() -> list[SimulationRow]:
    rows = []
    for seed in (0, 1):
        for strategy in STRATEGIES:
            rows.append(SimulationRow(seed, strategy, 0, 2, 0.1, 0.5 + 0.01 * seed, 0.2, 1.1, 1.5))
        for strategy, gain in (("uncertainty", 0.2), ("random", 0.1)):
            for k in (1, 2):
                rows.append(SimulationRow(seed, strategy, k, 2 + 2 * k, 0.1 + 0.1 * k,
                                          0.5 + gain * k + 0.01 * seed, float("nan"), 1.3, 2.0))
    return rows


def test_write_csv_writes_a_header_and_one_line_per_row(tmp_path):
    rows = _rows()
    path = write_csv(rows, tmp_path / "a.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 + len(rows)
    assert lines[0] == "seed,strategy,round,regions,fraction,dice,spearman,top_error_ratio,seconds"
    read = list(csv.DictReader(path.open(encoding="utf-8")))
    assert read[0]["strategy"] == "uncertainty" and read[0]["round"] == "0"
    assert float(read[-1]["dice"]) == pytest.approx(rows[-1].dice)
    assert read[-1]["spearman"] == "nan"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"], "no temporary file left"


#: A round whose rank correlations are all NaN must not print a numpy warning on the terminal.
_ALL_NAN = pytest.mark.filterwarnings("error::RuntimeWarning")


@_ALL_NAN
def test_plot_rows_writes_a_png(tmp_path):
    path = plot_rows(_rows(), tmp_path / "plot.png", title="a title")
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


@_ALL_NAN
def test_curves_and_summary_lines():
    rows = _rows()
    table = curves(rows)
    assert list(table) == list(STRATEGIES)
    np.testing.assert_array_equal(table["uncertainty"]["round"], [0, 1, 2])
    np.testing.assert_allclose(table["uncertainty"]["mean"], [0.505, 0.705, 0.905])
    np.testing.assert_allclose(table["random"]["std"], [0.005] * 3)
    np.testing.assert_allclose(table["random"]["fraction"], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(table["random"]["regions"], [2, 4, 6])
    assert table["random"]["spearman"][0] == pytest.approx(0.2) and np.isnan(table["random"]["spearman"][1])
    lines = summary_lines(rows)
    assert "2 seed(s)" in lines[0] and "uncertainty" in lines[1] and "random" in lines[1]
    assert len(lines) == 2 + 3, "a title, a header and one line per round"
    assert lines[2].split()[:2] == ["0", "10.0%"]
    assert "0.905 +- 0.005" in lines[4] and "0.705 +- 0.005" in lines[4]
    assert summary_lines([]) == []
