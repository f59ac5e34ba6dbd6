"""Benchmark: an image larger than memory, OME-Zarr to OME-Zarr, against the in-memory path.

Makes a synthetic N x N uint16 image of nuclei (default 20,000 x 20,000: 800 MB raw,
1.6 GB as float32), stored as OME-Zarr with 1,024² chunks, then in one run:

1. ``segloop predict big.ome.zarr -o prob.ome.zarr`` in a subprocess: its peak
   resident memory (its own ``VmHWM``) and its throughput in
   megapixels per second (wall time of the whole command: reading, the model,
   writing the chunks and the lower-resolution levels).
2. The in-memory path on a 4,096² crop of the same image, in a subprocess:
   ``predict`` on a NumPy array, timed around the prediction only (the image
   is already in memory), with its own peak memory.
3. The chunked path on the same 4,096² crop (stored as OME-Zarr), in a
   subprocess, timed like (1).

Prints progress lines, then as the last line one JSON object with the peak
memory of (1) in GB (goal: at most 1.5, whatever N), ``throughput_ratio``
= MP/s of (1) / MP/s of (2) (goal: at least 0.9), ``crop_ratio`` = (3)/(2),
and the largest difference between (1) and (2) on the crop (blending noise at
the block seams: the mean and the share of pixels whose mask at 0.5 differs).

Run::

    python benchmarks/bench_large.py                    # 20,000², default model, CPU
    python benchmarks/bench_large.py --size 8192 --keep /tmp/large   # smaller, keep the files
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CROP = 4096
CHUNK = 1024


def make_image(path: Path, size: int, chunk: int = CHUNK) -> None:
    """Write a synthetic ``size`` x ``size`` uint16 OME-Zarr image of nuclei, tile by tile."""
    import zarr

    from napari_segloop.core.synthetic import make_nuclei

    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    arr = group.create_array("0", shape=(size, size), dtype="uint16", chunks=(chunk, chunk),
                             chunk_key_encoding={"name": "v2", "separator": "/"})
    tile = 2048
    for k, y in enumerate(range(0, size, tile)):
        for j, x in enumerate(range(0, size, tile)):
            h, w = min(tile, size - y), min(tile, size - x)
            img, _ = make_nuclei((h, w), seed=1000 * k + j)
            arr[y:y + h, x:x + w] = np.clip(img, 0, 65535).astype(np.uint16)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "synthetic",
        "axes": [{"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [0.5, 0.5]}]}],
    }]


def run_child(code: str, *args: str) -> dict:
    """Run ``code`` in a fresh Python; return its last JSON line (its own peak memory included)."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, check=False)
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


#: The child's own peak resident memory: VmHWM of /proc/self/status (Linux), which starts afresh at
#: exec. (``ru_maxrss`` does not: a child forked from a large parent reports the parent's peak.)
PEAK_CODE = """
def PEAK():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
"""

CLI_CHILD = PEAK_CODE + """
import json, sys, time
from napari_segloop.cli import main
t = time.perf_counter()
rc = main(["predict", sys.argv[1], "-o", sys.argv[2], "--device", sys.argv[3], "-q",
           "--threads", sys.argv[4]])
print(json.dumps({"rc": rc, "seconds": time.perf_counter() - t,
                  "peak_rss_bytes": PEAK()}))
"""

MEMORY_CHILD = PEAK_CODE + """
import json, sys, time
import numpy as np, zarr
from napari_segloop.core.bundle.folder import load_model
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.events import run_to_end
from napari_segloop.core.inference.threads import apply_threads
apply_threads(int(sys.argv[4]))
image = np.asarray(zarr.open_array(sys.argv[1], mode="r")[:])
bundle = load_model("default")
t = time.perf_counter()
prob = run_to_end(predict(bundle, image, PredictOptions(device=sys.argv[3])))
seconds = time.perf_counter() - t
np.save(sys.argv[2], prob)
print(json.dumps({"rc": 0, "seconds": seconds,
                  "peak_rss_bytes": PEAK()}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=20000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch CPU threads, the same for both paths (default: all cores)")
    p.add_argument("--keep", default=None, help="a folder to keep the files in (default: a temporary one)")
    args = p.parse_args()
    import torch
    import zarr

    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="segloop-large-"))
    root.mkdir(parents=True, exist_ok=True)
    big, crop = root / "big.ome.zarr", root / "crop.ome.zarr"
    try:
        if not (big / "0").exists() or zarr.open_array(str(big / "0"), mode="r").shape[0] != args.size:
            shutil.rmtree(big, ignore_errors=True)
            t = time.perf_counter()
            make_image(big, args.size)
            print(f"made {args.size}x{args.size} in {time.perf_counter() - t:.0f} s", flush=True)
        size = min(CROP, args.size)
        if not crop.exists():
            src = zarr.open_array(str(big / "0"), mode="r")
            g = zarr.open_group(str(crop), mode="w", zarr_format=2)
            a = g.create_array("0", shape=(size, size), dtype="uint16", chunks=(CHUNK, CHUNK),
                               chunk_key_encoding={"name": "v2", "separator": "/"})
            a[:] = src[:size, :size]
            g.attrs["multiscales"] = zarr.open_group(str(big), mode="r").attrs["multiscales"]
        for out in ("prob_big.ome.zarr", "prob_crop.ome.zarr"):
            shutil.rmtree(root / out, ignore_errors=True)
        threads = str(args.threads)
        chunked_crop = run_child(CLI_CHILD, str(crop), str(root / "prob_crop.ome.zarr"), args.device, threads)
        print(f"chunked, {size}² crop: {chunked_crop['seconds']:.1f} s", flush=True)
        memory = run_child(MEMORY_CHILD, str(crop / "0"), str(root / "prob_memory.npy"), args.device,
                           str(args.threads))
        print(f"in memory, {size}² crop: {memory['seconds']:.1f} s", flush=True)
        chunked = run_child(CLI_CHILD, str(big), str(root / "prob_big.ome.zarr"), args.device,
                            str(args.threads))
        print(f"chunked, {args.size}²: {chunked['seconds']:.1f} s, peak "
              f"{chunked['peak_rss_bytes'] / 1e9:.2f} GB", flush=True)
        ref = np.load(root / "prob_memory.npy")
        got = np.asarray(zarr.open_array(str(root / "prob_big.ome.zarr" / "0"), mode="r")[:size, :size])
        diff = np.abs(got - ref)
        mp_big = args.size * args.size / 1e6
        mp_crop = size * size / 1e6
        result = {
            "benchmark": "large", "size": args.size, "crop": size, "device": args.device,
            "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "threads": args.threads,
            "chunked_seconds": round(chunked["seconds"], 1),
            "chunked_mp_per_s": round(mp_big / chunked["seconds"], 3),
            "memory_crop_mp_per_s": round(mp_crop / memory["seconds"], 3),
            "chunked_crop_mp_per_s": round(mp_crop / chunked_crop["seconds"], 3),
            "throughput_ratio": round((mp_big / chunked["seconds"]) / (mp_crop / memory["seconds"]), 3),
            "crop_ratio": round(memory["seconds"] / chunked_crop["seconds"], 3),
            "chunked_peak_gb": round(chunked["peak_rss_bytes"] / 1e9, 3),
            "chunked_crop_peak_gb": round(chunked_crop["peak_rss_bytes"] / 1e9, 3),
            "memory_crop_peak_gb": round(memory["peak_rss_bytes"] / 1e9, 3),
            "peak_goal_gb": 1.5, "throughput_goal": 0.9,
            "crop_max_abs_diff": round(float(diff.max()), 4),
            "crop_mean_abs_diff": round(float(diff.mean()), 6),
            "crop_mask_disagreement": round(float(((got > 0.5) != (ref > 0.5)).mean()), 6),
        }
        print(json.dumps(result))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
