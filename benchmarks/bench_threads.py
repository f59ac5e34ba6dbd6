"""Benchmark: CPU prediction time per torch thread count, on an idle and on a loaded machine.

Goal: the ``auto`` thread policy (``napari_segloop.core.inference.threads``) is within 10% of
the best configuration while another process holds a core (``auto_vs_best_loaded`` <= 1.10),
and never the slow one.

Method
------
One fresh worker process per thread setting (``1``, ``2``, ``auto``) applies the setting with
``apply_threads`` before any torch work, loads the model, makes the synthetic N x N nuclei
image (``make_nuclei``, seed 7) and warms up on one corner of it. (torch can change its intra-op
thread count within a process, but a fresh process per setting keeps each measurement free of
the thread pools a previous setting left behind.) The parent then asks the workers, in turn, for
one timed CPU prediction each (batch 1, the bundle's tile size and overlap), alternating between

* ``idle``: nothing else of ours runs, and
* ``loaded``: a competing ``multiprocessing.Process`` spins on pure-Python work (one core's
  worth; ``--pin-load`` pins it to the last core). It starts before the measurement (and is
  given 0.3 s to get going) and is stopped after it.

Runs are interleaved (repeat, setting, condition) so that machine noise hits every setting
alike; medians are reported. A prediction that passes ``--time-limit`` seconds is stopped after
its current batch and counted as the limit (a lower bound, marked ``censored``), so that one
pathological configuration cannot make the benchmark run for many minutes.

Prints progress, a table, and as the last line one JSON object with ``idle_s`` and ``loaded_s``
(medians per setting), ``loaded_slowdown_2_threads_vs_1``, ``auto_threads``,
``auto_vs_best_loaded``, ``cores`` and the raw times.

Run::

    python benchmarks/bench_threads.py                 # default model, 2048 x 2048, 3 repeats
    python benchmarks/bench_threads.py --size 1024 --repeats 5 --pin-load
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import time

SETTINGS = ("1", "2", "auto")


# --------------------------------------------------------------------------- worker process


def worker(args) -> None:
    """Run in a fresh process: apply one thread setting, then time predictions on request."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from napari_segloop.core.inference.threads import apply_threads

    threads = apply_threads(args.worker)  # before torch does any work
    import torch

    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.inference.predict import PredictOptions, predict
    from napari_segloop.core.synthetic import make_nuclei

    bundle = load_model(args.model)
    image = make_nuclei((args.size, args.size), seed=7)[0]
    tile = bundle.settings.tile_size

    def run(img, limit: float) -> tuple[float, bool]:
        gen = predict(bundle, img, PredictOptions(device="cpu", batch_size=1))
        t0 = time.perf_counter()
        try:
            while True:
                next(gen)
                if time.perf_counter() - t0 > limit:
                    gen.close()  # stops at the batch boundary; nothing is returned
                    return time.perf_counter() - t0, False
        except StopIteration:
            return time.perf_counter() - t0, True

    run(image[: 2 * tile, : 2 * tile], float("inf"))  # warm-up: thread pool, kernels, allocator
    print(json.dumps({"ready": True, "threads": threads, "torch_threads": torch.get_num_threads()}),
          flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        seconds, complete = run(image, args.time_limit)
        print(json.dumps({"s": seconds, "complete": complete,
                          "torch_threads": torch.get_num_threads()}), flush=True)


# --------------------------------------------------------------------------- competing load


def _spin(stop, pin: int | None) -> None:
    """Busy-loop on pure-Python work (one core's worth) until ``stop`` is set."""
    if pin is not None:
        os.sched_setaffinity(0, {pin})
    x = 0
    while not stop.is_set():
        for _ in range(20_000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF


class Load:
    """A competing CPU load on one core, started and stopped around a measurement."""

    def __init__(self, pin: int | None) -> None:
        self.pin = pin
        self.ctx = mp.get_context("spawn")
        self.proc = None
        self.stop = None

    def __enter__(self) -> Load:
        self.stop = self.ctx.Event()
        self.proc = self.ctx.Process(target=_spin, args=(self.stop, self.pin), daemon=True)
        self.proc.start()
        time.sleep(0.3)  # let it start spinning before the measurement begins
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join()


# --------------------------------------------------------------------------- parent


def _start_worker(setting: str, args) -> tuple[subprocess.Popen, dict]:
    cmd = [sys.executable, __file__, "--worker", setting, "--model", args.model,
           "--size", str(args.size), "--time-limit", str(args.time_limit)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    return proc, _read(proc)


def _read(proc: subprocess.Popen) -> dict:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {proc.args[3]} exited (rc {proc.wait()})")
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)


def _timed(proc: subprocess.Popen) -> dict:
    proc.stdin.write("run\n")
    proc.stdin.flush()
    return _read(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="stop a prediction after this many seconds and count it as this (censored)")
    parser.add_argument("--pin-load", action="store_true", help="pin the competing load to the last core")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker is not None:
        worker(args)
        return

    from napari_segloop.core.inference.threads import available_cores, resolve_threads

    cores = available_cores()
    pin = (cores - 1) if args.pin_load else None
    auto_threads = resolve_threads("auto")
    t_start = time.perf_counter()
    load_before = os.getloadavg()
    print(f"{cores} cores, auto -> {auto_threads} thread(s), {args.size}x{args.size}, "
          f"{args.repeats} repeats, load {'pinned to core ' + str(pin) if pin is not None else 'unpinned'}",
          flush=True)

    workers, info = {}, {}
    for setting in SETTINGS:
        workers[setting], info[setting] = _start_worker(setting, args)
        print(f"worker {setting}: ready, torch threads {info[setting]['torch_threads']}", flush=True)

    times = {s: {"idle": [], "loaded": []} for s in SETTINGS}
    censored = {s: {"idle": 0, "loaded": 0} for s in SETTINGS}
    try:
        for rep in range(args.repeats):
            for setting in SETTINGS:
                for cond in ("idle", "loaded"):
                    if cond == "loaded":
                        with Load(pin):
                            res = _timed(workers[setting])
                    else:
                        res = _timed(workers[setting])
                    times[setting][cond].append(round(res["s"], 3))
                    censored[setting][cond] += not res["complete"]
                    flag = "" if res["complete"] else f" (stopped at the {args.time_limit:g} s limit)"
                    print(f"run {rep + 1}: threads {setting:>4} {cond:>6}: {res['s']:7.2f} s{flag}",
                          flush=True)
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.stdin.write("quit\n")
                proc.stdin.flush()
                proc.wait(30)

    idle = {s: round(statistics.median(times[s]["idle"]), 3) for s in SETTINGS}
    loaded = {s: round(statistics.median(times[s]["loaded"]), 3) for s in SETTINGS}
    best_loaded = min(loaded.values())
    print()
    print(f"{'threads':>8} | {'idle s':>8} | {'loaded s':>8} | loaded runs")
    for s in SETTINGS:
        runs = ", ".join(f"{t:.1f}" for t in times[s]["loaded"])
        print(f"{s:>8} | {idle[s]:8.2f} | {loaded[s]:8.2f} | {runs}")
    print()
    result = {
        "idle_s": idle,
        "loaded_s": loaded,
        "loaded_slowdown_2_threads_vs_1": round(loaded["2"] / loaded["1"], 3),
        "idle_speedup_2_threads_vs_1": round(idle["1"] / idle["2"], 3),
        "auto_threads": auto_threads,
        "auto_vs_best_loaded": round(loaded["auto"] / best_loaded, 3),
        "auto_is_slowest_loaded": loaded["auto"] == max(loaded.values()) and len(set(loaded.values())) > 1,
        "runs_s": times,
        "censored_runs": censored,
        "time_limit_s": args.time_limit,
        "load": "pinned" if pin is not None else "unpinned",
        "repeats": args.repeats,
        "size": args.size,
        "model": args.model,
        "cores": cores,
        "cpu_count": os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "total_s": round(time.perf_counter() - t_start, 1),
        "torch_threads": {s: info[s]["torch_threads"] for s in SETTINGS},
        "python": platform.python_version(),
    }
    try:
        import torch

        result["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    print(json.dumps(result))


if __name__ == "__main__":
    main()
