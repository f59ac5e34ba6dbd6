"""Run a bundle with onnxruntime instead of torch (``segloop predict --engine onnx``).

On a plain CPU onnxruntime runs segloop's U-Nets 1.4 to 2.3 times faster than torch on the same
tiles (``benchmarks/bench_onnx.py``). Exporting a network takes seconds (about 30 s for the
default model), so the graph is exported once and kept in a cache folder, named by a fingerprint
of the network's weights and configuration, the torch version and the opset: later runs of the
same model start at once. A cached graph is checked against the network before it is used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Generator
from pathlib import Path

import torch

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.events import Notice
from napari_segloop.core.export.onnx_weights import OPSET, OnnxNetwork, export_onnx
from napari_segloop.core.export.shapes import example_input

#: Environment variable naming the cache folder (default ``~/.cache/napari-segloop/onnx``).
CACHE_ENV = "SEGLOOP_ONNX_CACHE"
#: Largest probability difference a cached graph may have from the network on a random batch.
ENGINE_TOLERANCE = 1e-4


def cache_dir() -> Path:
    """Where exported graphs are kept."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "napari-segloop" / "onnx"


def fingerprint(bundle: ModelBundle) -> str:
    """A digest of the network's weights, configuration, torch version and opset."""
    digest = hashlib.sha256()
    digest.update(json.dumps({"architecture": bundle.architecture, "config": bundle.config,
                              "torch": torch.__version__, "opset": OPSET},
                             sort_keys=True, default=str).encode())
    for key, value in bundle.model.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _gap(model: torch.nn.Module, onnx: OnnxNetwork, in_channels: int, multiple: int) -> float:
    from napari_segloop.core.models.registry import probabilities

    x = example_input(in_channels, multiple, seed=3)
    with torch.no_grad():
        return float((probabilities(model.to("cpu").eval()(x)) - probabilities(onnx(x))).abs().max())


def with_onnx_engine(bundle: ModelBundle) -> Generator[Notice, None, ModelBundle]:
    """The same model run by onnxruntime on the CPU (exported once, then taken from the cache).

    Returns
    -------
    ModelBundle
        Same settings and source; the network is an :class:`OnnxNetwork`. A bundle that already
        runs ONNX is returned as it is.

    Raises
    ------
    ModelLoadError
        For a TorchScript network, a network the exporter cannot capture, or a graph that differs
        from the network by more than :data:`ENGINE_TOLERANCE`.
    """
    net = getattr(bundle.model, "inner", bundle.model)
    if isinstance(net, OnnxNetwork):
        return bundle
    if isinstance(net, torch.jit.ScriptModule):
        raise ModelLoadError("--engine onnx needs a PyTorch network; this model is TorchScript.")
    path = cache_dir() / f"{fingerprint(bundle)}.onnx"
    fresh = not path.is_file()
    if fresh:
        yield Notice(f"Exporting the model to ONNX once (it takes a while); later runs reuse "
                     f"{path}.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelLoadError(f"Cannot create the ONNX cache {path.parent}: "
                                 f"{exc.strerror or exc} (set {CACHE_ENV} to another folder).") from exc
        export_onnx(bundle.model, path, bundle.in_channels, bundle.input_multiple)
    onnx = OnnxNetwork(path, bundle.config, bundle.input_multiple,
                       architecture=f"{bundle.architecture} (onnxruntime)")
    gap = _gap(bundle.model, onnx, bundle.in_channels, bundle.input_multiple)
    if not gap <= ENGINE_TOLERANCE:
        path.unlink(missing_ok=True)
        raise ModelLoadError(f"The ONNX graph differs from the model by {gap:.2g}; it was removed "
                             "from the cache. Run without --engine onnx.")
    return ModelBundle(model=onnx, settings=bundle.settings, source=bundle.source,
                       notes=[*bundle.notes, "runs with onnxruntime on the CPU"])
