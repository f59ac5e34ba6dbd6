"""Benchmark: scoring a probability map larger than memory from histograms, against the exact path.

Makes a synthetic N x N float32 probability map (default 16,384²: 1.07 GB) and
its ground truth (uint8), both OME-Zarr with 1,024² chunks, then in one run,
each in a fresh subprocess with its own peak resident memory (``VmHWM``):

1. ``segloop evaluate -p prob.ome.zarr -t truth.ome.zarr --best-threshold``:
   the block-by-block path of this package (one histogram pass, then one pass
   that keeps the pixels of the bins that may hold a better threshold than the
   best step; the Threshold and Confusion docks use the same functions on a
   zarr-backed layer).
2. The in-memory baseline: both arrays read whole, then the exact
   :class:`~napari_segloop.core.evaluation.curve.ThresholdCurve` and its
   exact best threshold (what the docks do for a map that fits in memory).

Prints progress lines, then as the last line one JSON object: the peak memory
of each in GB, ``memory_ratio`` = (1)/(2), ``time_ratio`` = seconds of (1)/(2),
both best thresholds and Dice scores, and ``dice_gap`` = in-memory best Dice
minus the block-by-block one (0 when the refinement finds the exact optimum).

Run::

    python benchmarks/bench_large_eval.py                # 16,384²
    python benchmarks/bench_large_eval.py --size 8192    # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_large import PEAK_CODE, run_child  # the same child runner and peak memory

CHUNK = 1024

CLI_CHILD = PEAK_CODE + """
import contextlib, io, json, sys, time
from napari_segloop.cli import main
t = time.perf_counter()
out = io.StringIO()
with contextlib.redirect_stdout(out):
    rc = main(["evaluate", "-p", sys.argv[1], "-t", sys.argv[2], "--best-threshold", "--json"])
row = json.loads(out.getvalue())
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t, "peak_rss_bytes": PEAK(),
                  "threshold": row["threshold"], "dice": row["dice"]}))
"""

MEMORY_CHILD = PEAK_CODE + """
import json, sys, time
import zarr
from napari_segloop.core.evaluation.curve import ThresholdCurve
t = time.perf_counter()
prob = zarr.open_group(sys.argv[1], mode="r")["0"][:]
truth = zarr.open_group(sys.argv[2], mode="r")["0"][:]
best = ThresholdCurve(prob, truth).best_threshold("dice")
print(json.dumps({"rc": 0, "seconds": time.perf_counter() - t, "peak_rss_bytes": PEAK(),
                  "threshold": best.threshold, "dice": best.score}))
"""


def write_ome(path: Path, size: int, dtype: str, fill) -> None:
    """An OME-Zarr ``size``² image of ``dtype``, written tile by tile from ``fill(y, x, h, w)``."""
    import zarr

    group = zarr.open_group(str(path), mode="w")
    arr = group.create_array("0", shape=(size, size), dtype=dtype, chunks=(CHUNK, CHUNK))
    tile = 4096
    for y in range(0, size, tile):
        for x in range(0, size, tile):
            h, w = min(tile, size - y), min(tile, size - x)
            arr[y:y + h, x:x + w] = fill(y, x, h, w)
    group.attrs["multiscales"] = [{
        "version": "0.4", "axes": [{"name": "y", "type": "space"}, {"name": "x", "type": "space"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1.0, 1.0]}]}],
    }]


def truth_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
    """Discs of about 12 px radius on a grid, jittered (a deterministic function of the position)."""
    rng = np.random.default_rng(y * 100_003 + x)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((h, w), np.uint8)
    for cy in range(16, h, 40):
        for cx in range(16, w, 40):
            r = rng.uniform(6, 14)
            oy, ox = rng.integers(-6, 7, 2)
            y0, y1 = max(0, cy + oy - 15), min(h, cy + oy + 16)
            x0, x1 = max(0, cx + ox - 15), min(w, cx + ox + 16)
            sub = (yy[y0:y1, x0:x1] - cy - oy) ** 2 + (xx[y0:y1, x0:x1] - cx - ox) ** 2 <= r * r
            out[y0:y1, x0:x1] |= sub.astype(np.uint8)
    return out


def prob_tile(y: int, x: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(7 + y * 100_003 + x)
    truth = truth_tile(y, x, h, w)
    return np.clip(0.2 + 0.55 * truth + rng.normal(0, 0.18, (h, w)), 0, 1).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=16384, help="edge of the map in pixels")
    parser.add_argument("--keep", default=None, help="folder for the files (kept); default: a temporary one")
    args = parser.parse_args()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="segloop-eval-"))
    folder.mkdir(parents=True, exist_ok=True)
    prob, truth = folder / "prob.ome.zarr", folder / "truth.ome.zarr"
    try:
        t = time.perf_counter()
        write_ome(truth, args.size, "uint8", truth_tile)
        write_ome(prob, args.size, "float32", prob_tile)
        print(f"wrote {args.size}² map and truth in {time.perf_counter() - t:.0f} s", flush=True)
        blocks = run_child(CLI_CHILD, str(prob), str(truth))
        print(f"block by block: {blocks['seconds']:.1f} s, peak {blocks['peak_rss_bytes'] / 1e9:.2f} GB",
              flush=True)
        memory = run_child(MEMORY_CHILD, str(prob), str(truth))
        print(f"in memory: {memory['seconds']:.1f} s, peak {memory['peak_rss_bytes'] / 1e9:.2f} GB",
              flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps({
        "size": args.size, "megapixels": args.size ** 2 / 1e6,
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "blocks_peak_gb": round(blocks["peak_rss_bytes"] / 1e9, 3),
        "memory_peak_gb": round(memory["peak_rss_bytes"] / 1e9, 3),
        "memory_ratio": round(blocks["peak_rss_bytes"] / memory["peak_rss_bytes"], 3),
        "blocks_seconds": round(blocks["seconds"], 2), "memory_seconds": round(memory["seconds"], 2),
        "time_ratio": round(blocks["seconds"] / memory["seconds"], 3),
        "blocks_best": [round(blocks["threshold"], 6), round(blocks["dice"], 6)],
        "exact_best": [round(memory["threshold"], 6), round(memory["dice"], 6)],
        "dice_gap": memory["dice"] - blocks["dice"],
    }))


if __name__ == "__main__":
    main()
