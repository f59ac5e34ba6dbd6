"""Benchmark: CPU inference with onnxruntime against torch, on the same tiles, in one run.

For each model (the default model, and an smp U-Net with a ResNet-34 encoder, untrained) the
model is exported to ONNX with segloop's exporter, then the same pre-built, normalised tiles
(``--tiles`` tiles of ``--tile`` px from the synthetic nuclei image) go through

* ``torch``: ``model(batch)`` under ``torch.inference_mode()``;
* ``onnxruntime``: :class:`napari_segloop.core.export.onnx_weights.OnnxNetwork` (what an
  imported ONNX model runs in the tiler), same thread count;

alternating the two, after warm-up; medians of ``--repeats`` rounds. It prints one line per model
and thread count and, last, one JSON object with ``onnx_over_torch`` (time ratio, below 1: ONNX is
faster) and the largest probability difference.

With ``--export-time`` it first times the export itself: segloop's exporter (whose CPU copy turns
in-place activations out-of-place) against ``torch.onnx.export`` of a plain copy of the network
(the in-place activations kept), same arguments, one after the other after a warm-up export.

Run::

    HF_HUB_OFFLINE=1 python benchmarks/bench_onnx.py                 # 1 and 2 threads
    HF_HUB_OFFLINE=1 python benchmarks/bench_onnx.py --threads 4 --tile 512
    HF_HUB_OFFLINE=1 python benchmarks/bench_onnx.py --export-time --threads 1 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _tiles(n: int, tile: int) -> torch.Tensor:
    from napari_segloop.core.bundle.settings import Normalization
    from napari_segloop.core.inference.normalize import compute_stats, normalized_copy
    from napari_segloop.core.synthetic import make_nuclei

    image = make_nuclei((tile * 2, tile * 2), seed=7)[0][None].astype(np.float32)
    norm = normalized_copy(image, compute_stats(image, Normalization()))[0]
    picks = [norm[y:y + tile, x:x + tile] for y in (0, tile) for x in (0, tile)]
    return torch.from_numpy(np.stack([picks[k % 4] for k in range(n)])[:, None].copy())


def _time(run, tiles: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for k in range(len(tiles)):
            run(tiles[k:k + 1])
    return time.perf_counter() - start


def _export_seconds(bundle, work: Path) -> dict[str, float]:
    """Seconds to export ``bundle`` with segloop's exporter and with a plain copy (in-place kept)."""
    import copy

    from napari_segloop.core.export.onnx_weights import INPUT_NAME, OPSET, OUTPUT_NAME, export_onnx
    from napari_segloop.core.export.shapes import dynamic_shapes, example_input

    m = bundle.input_multiple
    export_onnx(bundle.model, work / "warm.onnx", 1, m)  # the exporter's own first-call costs
    start = time.perf_counter()
    export_onnx(bundle.model, work / "segloop.onnx", 1, m)
    segloop = time.perf_counter() - start
    plain = copy.deepcopy(bundle.model).eval()
    start = time.perf_counter()
    program = torch.onnx.export(plain, (example_input(1, m),), None, dynamo=True, opset_version=OPSET,
                                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                dynamic_shapes=dynamic_shapes(m), external_data=False, verbose=False)
    program.save(str(work / "plain.onnx"), external_data=False)
    plain_s = time.perf_counter() - start
    return {"segloop_export_s": round(segloop, 1), "plain_export_s": round(plain_s, 1),
            "export_ratio": round(segloop / plain_s, 3)}


def main(argv: list[str] | None = None) -> int:
    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.export.onnx_weights import OnnxNetwork, export_onnx
    from napari_segloop.core.models.registry import create_model, probabilities

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--tiles", type=int, default=8)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--export-time", action="store_true",
                   help="also time the default model's export against a plain torch.onnx.export")
    args = p.parse_args(argv)
    tiles = _tiles(args.tiles, args.tile)
    models = {"default (Unet tu-lcnet_075)": load_model("default"),
              "Unet resnet34 (untrained)": create_model("Unet", "resnet34", 1, 1)}
    results = []
    export = None
    with tempfile.TemporaryDirectory() as work:
        if args.export_time:
            export = _export_seconds(models["default (Unet tu-lcnet_075)"], Path(work))
            print(f"default model ONNX export: segloop {export['segloop_export_s']} s, plain copy "
                  f"{export['plain_export_s']} s, time ratio {export['export_ratio']:.2f}", flush=True)
        for name, bundle in models.items():
            model = bundle.model.eval()
            path = export_onnx(model, Path(work) / "m.onnx", 1, bundle.input_multiple)
            for threads in args.threads:
                torch.set_num_threads(threads)
                onnx = OnnxNetwork(path, bundle.config, bundle.input_multiple, threads=threads)
                with torch.inference_mode():
                    pair = tiles[:2]
                    gap = float((probabilities(model(pair)) - probabilities(onnx(pair))).abs().max())
                for run in (model, onnx):  # warm-up
                    _time(run, tiles[:2])
                t_torch, t_onnx = [], []
                for _ in range(args.repeats):
                    t_torch.append(_time(model, tiles))
                    t_onnx.append(_time(onnx, tiles))
                mt, mo = statistics.median(t_torch), statistics.median(t_onnx)
                mp = args.tiles * args.tile ** 2 / 1e6
                row = {"model": name, "threads": threads, "tile": args.tile,
                       "torch_mpix_s": round(mp / mt, 3), "onnx_mpix_s": round(mp / mo, 3),
                       "onnx_over_torch": round(mo / mt, 3), "max_probability_gap": gap}
                results.append(row)
                print(f"{name}, {threads} thread(s), {args.tile} px tiles: torch {mp / mt:.2f} Mpx/s, "
                      f"onnxruntime {mp / mo:.2f} Mpx/s, time ratio onnx/torch {mo / mt:.2f}, "
                      f"probability gap {gap:.1e}", flush=True)
    print(json.dumps({"torch": torch.__version__, "export": export, "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
