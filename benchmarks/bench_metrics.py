"""Benchmark: pixel metrics for a new threshold from cached counts, against a bare ``np.greater``.

Prints progress lines, then as the last line one JSON object with:

``metrics_ms``
    Median time to get all pixel metrics (TP, FP, FN, TN, Dice, IoU, precision,
    recall, accuracy, as a dict) for a new slider value on an N x N
    probability map whose :class:`~napari_segloop.core.evaluation.ThresholdCurve`
    is built, over ``--repeats`` random slider values ``k / (steps - 1)``.
    Goal: under 1 ms at 4096 x 4096.
``exact_metrics_ms``
    The same for arbitrary thresholds (not slider steps): ``np.searchsorted``
    in the sorted probabilities, once they are sorted.
``best_threshold_ms``
    Median time of the exact best-Dice search over every distinct
    probability value, including the sort, from a freshly built curve.
``build_ms``
    Median time to build the curve (copy + one O(n) histogram pass).
``baseline_greater_ms``
    Median time of a bare ``np.greater(prob, t, out=buf)`` on the same map
    (what thresholding alone costs, before any counting).
``ratio``
    ``metrics_ms / baseline_greater_ms``.

Timings are medians after a warm-up (the first touch of large fresh buffers
costs page faults on some machines). Every count is also checked once
against ``np.count_nonzero``.

Run::

    python benchmarks/bench_metrics.py                 # 4096 x 4096, 200 thresholds
    python benchmarks/bench_metrics.py --size 2048 --repeats 500
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np


def _make_case(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random field: ground truth where it is high, noisy sigmoid probabilities of it."""
    from scipy import ndimage as ndi

    r = np.random.default_rng(seed)
    field = ndi.gaussian_filter(r.standard_normal((size, size), dtype=np.float32), 6.0)
    field /= field.std()
    truth = (field > 0.7).astype(np.uint8)  # about a quarter of the pixels
    logits = 4.0 * (field - 0.7) + r.standard_normal((size, size), dtype=np.float32)
    prob = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return prob, truth


def _median_ms(samples_ns: list[int]) -> float:
    return statistics.median(samples_ns) / 1e6


def main() -> None:
    """Run the benchmark and print the JSON summary as the last line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=200, help="thresholds per timing")
    parser.add_argument("--steps", type=int, default=1001, help="slider positions over [0, 1]")
    parser.add_argument("--best-repeats", type=int, default=3, help="runs of the best-threshold search")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from napari_segloop.core.evaluation.curve import ThresholdCurve

    print(f"making a {args.size} x {args.size} probability map and ground truth ...", flush=True)
    prob, truth = _make_case(args.size, args.seed)
    r = np.random.default_rng(args.seed + 1)

    # warm-up: touch every code path and large buffer once
    ThresholdCurve(prob, truth, steps=args.steps).best_threshold()

    build = []
    for _ in range(3):
        t0 = time.perf_counter_ns()
        curve = ThresholdCurve(prob, truth, steps=args.steps)
        build.append(time.perf_counter_ns() - t0)
    print(f"build: {_median_ms(build):.1f} ms", flush=True)

    steps = r.integers(0, args.steps, args.repeats)
    slider_values = [int(k) / (args.steps - 1) for k in steps]
    fast = []
    for t in slider_values:
        t0 = time.perf_counter_ns()
        curve.metrics(t).to_dict()
        fast.append(time.perf_counter_ns() - t0)
    assert not curve.exact_ready, "slider values must not need the sorted path"
    print(f"metrics at slider values: {_median_ms(fast) * 1000:.1f} us", flush=True)

    t0 = time.perf_counter_ns()
    curve.prepare_exact()
    sort_ms = (time.perf_counter_ns() - t0) / 1e6
    arbitrary = [float(v) for v in r.random(args.repeats)]
    exact = []
    for t in arbitrary:
        t0 = time.perf_counter_ns()
        curve.metrics(t).to_dict()
        exact.append(time.perf_counter_ns() - t0)
    print(f"sort: {sort_ms:.0f} ms; metrics at arbitrary thresholds: {_median_ms(exact) * 1000:.1f} us",
          flush=True)

    best_runs = []
    best = None
    for _ in range(args.best_repeats):
        fresh = ThresholdCurve(prob, truth, steps=args.steps)
        t0 = time.perf_counter_ns()
        best = fresh.best_threshold()
        best_runs.append(time.perf_counter_ns() - t0)
        del fresh
    assert best is not None
    print(f"best threshold {best.threshold!r} (Dice {best.score:.4f}): {_median_ms(best_runs):.0f} ms",
          flush=True)

    buf = np.empty(prob.shape, dtype=bool)
    greater = []
    for t in slider_values[: min(len(slider_values), 50)]:
        t0 = time.perf_counter_ns()
        np.greater(prob, t, out=buf)
        greater.append(time.perf_counter_ns() - t0)
    print(f"bare np.greater: {_median_ms(greater):.2f} ms", flush=True)

    # correctness, once: the cached counts equal brute force
    fg = truth.astype(bool)
    for t in (slider_values[0], arbitrary[0], best.threshold):
        np.greater(prob, t, out=buf)
        tp = int(np.count_nonzero(buf & fg))
        fp = int(np.count_nonzero(buf)) - tp
        assert curve.counts(t)[:2] == (tp, fp), t
    print("verified against np.count_nonzero", flush=True)

    metrics_ms = _median_ms(fast)
    baseline = _median_ms(greater)
    result = {
        "size": args.size,
        "steps": args.steps,
        "repeats": args.repeats,
        "metrics_ms": round(metrics_ms, 5),
        "exact_metrics_ms": round(_median_ms(exact), 5),
        "best_threshold_ms": round(_median_ms(best_runs), 1),
        "sort_ms": round(sort_ms, 1),
        "build_ms": round(_median_ms(build), 1),
        "baseline_greater_ms": round(baseline, 3),
        "ratio": round(metrics_ms / baseline, 5) if baseline else None,
        "best_threshold": best.threshold,
        "best_dice": best.score,
        "numpy": np.__version__,
        "machine": platform.machine(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
