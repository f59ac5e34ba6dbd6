"""Benchmark: tiled inference against bare model calls, and its peak memory.

Prints progress lines, then as the last line one JSON object with:

``overhead_ratio``
    Median time of ``napari_segloop.core.inference.predict`` on an N x N image
    divided by the median time of bare ``model(batch)`` calls over exactly the
    same pre-built, pre-normalised tiles (same grid, batch size and device),
    after warm-up, both measured in this process. Goal: at most 1.10.
``peak_extra_memory_ratio``
    In a fresh subprocess: the resident-memory high-water mark added by one
    prediction, beyond the loaded model, the input image and the torch runtime
    (one warm-up tile), divided by the size of the float32 output. The peak is
    reset with ``/proc/self/clear_refs`` just before the prediction (Linux).
    Goal: at most 3.

Run::

    python benchmarks/bench_inference.py            # default model, 2048 x 2048, CPU
    python benchmarks/bench_inference.py --device cuda --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np


def _make_image(size: int) -> np.ndarray:
    try:
        from napari_segloop.core.synthetic import make_nuclei

        return make_nuclei((size, size), seed=7)[0]
    except ImportError:  # pragma: no cover - before the generator existed
        return np.random.default_rng(7).random((size, size), dtype=np.float32)


def _load(model: str):
    from napari_segloop.core.bundle import load_model

    return load_model(model)


def _bare_batches(bundle, image, tile, overlap, batch_size, device):
    """The exact tiles predict() feeds the model, pre-built as device tensors."""
    import torch

    from napari_segloop.core.inference.normalize import normalize_slice
    from napari_segloop.core.inference.tiling import TileGrid

    norm, _ = normalize_slice(image[None], bundle.settings.normalization)
    grid = TileGrid.build(norm.shape[1], norm.shape[2], tile, overlap)
    origins = list(grid.origins())
    batches = []
    for start in range(0, len(origins), batch_size):
        chunk = origins[start:start + batch_size]
        buf = np.empty((len(chunk), 1, grid.tile_h, grid.tile_w), dtype=np.float32)
        for k, (y, x) in enumerate(chunk):
            grid.extract(norm, y, x, buf[k])
        batches.append(torch.from_numpy(buf).to(device))
    return batches, len(origins)


def _time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def measure_overhead(args) -> dict:
    import torch

    from napari_segloop.core.inference.devices import autocast_dtype, resolve_device
    from napari_segloop.core.inference.predict import predict_array

    bundle = _load(args.model)
    device = resolve_device(args.device).device
    tile = args.tile or bundle.settings.tile_size
    overlap = bundle.settings.overlap if args.overlap is None else args.overlap
    image = _make_image(args.size)
    model = bundle.model.to(device).eval()
    batch_size = args.batch_size or (1 if device.type == "cpu" else 8)
    batches, n_tiles = _bare_batches(bundle, image, tile, overlap, batch_size, device)
    dtype = autocast_dtype(device)

    def bare():
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                     enabled=dtype is not None):
            for b in batches:
                model(b)
        if device.type == "cuda":
            torch.cuda.synchronize()

    def plugin():
        predict_array(bundle, image, device=str(device), tile_size=tile, overlap=overlap,
                      batch_size=batch_size)
        if device.type == "cuda":
            torch.cuda.synchronize()

    print(f"warm-up ({n_tiles} tiles of {tile} px, batch {batch_size}, {device})", flush=True)
    bare()
    plugin()
    bare_t, plugin_t = [], []
    for i in range(args.repeats):  # interleaved, so that machine noise hits both alike
        bare_t += _time(bare, 1)
        plugin_t += _time(plugin, 1)
        print(f"run {i + 1}: bare {bare_t[-1]:.3f} s, plugin {plugin_t[-1]:.3f} s", flush=True)
    bare_med, plugin_med = statistics.median(bare_t), statistics.median(plugin_t)
    return {
        "overhead_ratio": round(plugin_med / bare_med, 4),
        "plugin_median_s": round(plugin_med, 4),
        "bare_median_s": round(bare_med, 4),
        "tiles": n_tiles,
        "tile": tile,
        "overlap": overlap,
        "batch_size": batch_size,
        "device": str(device),
    }


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(args) -> None:
    """Run in a fresh process: print the peak extra resident memory of one prediction."""
    import ctypes
    import gc

    import torch

    from napari_segloop.core.inference.predict import predict_array

    bundle = _load(args.model)
    image = _make_image(args.size)
    tile = args.tile or bundle.settings.tile_size
    # Warm the torch runtime (thread pools, kernels) on one tile: not part of a prediction.
    predict_array(bundle, image[:tile, :tile], device=args.device, tile_size=tile,
                  batch_size=args.batch_size)
    gc.collect()
    # Give memory freed so far (e.g. temporaries of the image generator) back to the OS, so
    # that the prediction cannot hide its own allocations in it.
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
        fh.write("5")
    out = predict_array(bundle, image, device=args.device, tile_size=tile,
                        overlap=args.overlap, batch_size=args.batch_size)
    peak = _status_kb("VmHWM")
    extra = (peak - base) * 1024
    print(json.dumps({"extra_bytes": extra, "output_bytes": out.nbytes,
                      "torch_threads": torch.get_num_threads()}))


def measure_memory(args) -> dict:
    cmd = [sys.executable, __file__, "--memory-child", "--model", args.model, "--size", str(args.size),
           "--device", args.device]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    if args.overlap is not None:
        cmd += ["--overlap", str(args.overlap)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "peak_extra_memory_ratio": round(child["extra_bytes"] / child["output_bytes"], 3),
        "peak_extra_mb": round(child["extra_bytes"] / 2**20, 1),
        "output_mb": round(child["output_bytes"] / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tile", type=int, default=None)
    parser.add_argument("--overlap", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None,
                        help="default: the plugin's choice (1 on the CPU, 8 on a GPU)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_child:
        memory_child(args)
        return
    import torch

    result = measure_overhead(args)
    result.update(measure_memory(args))
    result.update({
        "size": args.size,
        "model": args.model,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
