"""Benchmark: a folder of images, one process against a local dask.distributed cluster.

Makes 64 synthetic nuclei images (1,024² uint16 TIFFs by default), then in one run,
each as a fresh ``segloop predict`` command in a subprocess (wall time of the whole
command, start-up of the cluster and of its workers included):

1. one process, ``--threads 1`` (one core);
2. one process with the default ``--threads auto`` (all cores but one);
3. ``--workers 2``: a local cluster of 2 single-threaded worker processes;
4. optionally (``--large N``) one N x N OME-Zarr image, block by block, in one process
   and on the same local cluster.

Prints progress lines, then as the last line one JSON object: the seconds of each,
``speedup`` = (1) / (3) and ``speedup_vs_default`` = (2) / (3), and whether the
outputs are equal (``max_abs_diff`` over every pixel of every file).

Run::

    python benchmarks/bench_cluster.py                   # 64 x 1,024², CPU
    python benchmarks/bench_cluster.py --n 16 --size 512 --large 8192
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


def make_folder(folder: Path, n: int, size: int) -> None:
    """``n`` synthetic ``size`` x ``size`` uint16 nuclei images."""
    import tifffile

    from napari_segloop.core.synthetic import make_nuclei

    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        img, _ = make_nuclei((size, size), seed=k)
        tifffile.imwrite(folder / f"field_{k:03d}.tif", np.clip(img, 0, 65535).astype(np.uint16))


def segloop(*args: str) -> float:
    """Run ``segloop predict ARGS -q`` in a subprocess; its wall time in seconds."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "napari_segloop.cli", "predict", *args, "-q"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          check=False)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"segloop predict {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stderr[-3000:]}")
    return seconds


def max_diff(a: Path, b: Path) -> float:
    import tifffile

    worst = 0.0
    for f in sorted(a.iterdir()):
        worst = max(worst, float(np.abs(tifffile.imread(f) - tifffile.imread(b / f.name)).max()))
    return worst


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--large", type=int, default=0, help="also one N x N OME-Zarr image (0: no)")
    args = p.parse_args()
    import torch

    root = Path(tempfile.mkdtemp(prefix="segloop-cluster-"))
    try:
        make_folder(root / "in", args.n, args.size)
        print(f"made {args.n} images of {args.size}²", flush=True)
        one = segloop(str(root / "in"), "-o", str(root / "one"), "--threads", "1")
        print(f"1 process, 1 thread: {one:.1f} s", flush=True)
        auto = segloop(str(root / "in"), "-o", str(root / "auto"))
        print(f"1 process, --threads auto: {auto:.1f} s", flush=True)
        cluster = segloop(str(root / "in"), "-o", str(root / "cluster"), "--workers", str(args.workers))
        print(f"local cluster of {args.workers} workers: {cluster:.1f} s", flush=True)
        result = {
            "benchmark": "cluster", "images": args.n, "size": args.size, "workers": args.workers,
            "torch": torch.__version__, "machine": platform.machine(), "cpus": os.cpu_count(),
            "one_process_1_thread_s": round(one, 1), "one_process_auto_threads_s": round(auto, 1),
            "cluster_s": round(cluster, 1),
            "speedup": round(one / cluster, 2), "speedup_vs_default": round(auto / cluster, 2),
            "max_abs_diff": max_diff(root / "one", root / "cluster"),
        }
        if args.large:
            import zarr

            sys.path.insert(0, str(Path(__file__).parent))
            from bench_large import make_image

            make_image(root / "big.ome.zarr", args.large)
            single = segloop(str(root / "big.ome.zarr"), "-o", str(root / "big1.ome.zarr"), "--threads", "1")
            multi = segloop(str(root / "big.ome.zarr"), "-o", str(root / "big2.ome.zarr"),
                            "--workers", str(args.workers))
            a = zarr.open_group(str(root / "big1.ome.zarr"), mode="r")
            b = zarr.open_group(str(root / "big2.ome.zarr"), mode="r")
            result.update({
                "large": args.large, "large_one_process_s": round(single, 1),
                "large_cluster_s": round(multi, 1),
                "large_speedup": round(single / multi, 2),
                "large_max_abs_diff": float(max(np.abs(a[k][:] - b[k][:]).max() for k in a.array_keys())),
            })
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
