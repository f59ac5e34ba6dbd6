"""ONNX: export a network, and run an ONNX file through the tiler with onnxruntime.

Export
    :func:`export_onnx` uses the exporter torch recommends (``dynamo=True``,
    built on ``torch.export``) at opset :data:`OPSET`, with batch, height and
    width left free (:mod:`napari_segloop.core.export.shapes`). The graph
    computes the network's *logits*; the sigmoid (one output channel) or
    softmax (several) is applied after it, as for the PyTorch model, so that
    every weight format of a bioimage.io package produces the same tensor.
    Weights are stored inside the one ``.onnx`` file (no external data file).

Inference
    :class:`OnnxNetwork` wraps an ``onnxruntime`` session in a
    ``torch.nn.Module``, so a :class:`~napari_segloop.core.bundle.model.ModelBundle`
    holding it runs through the same tiler, Threshold and Confusion docks as
    any other. It runs on the CPU (the ``onnxruntime`` wheel has no CUDA).
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.export.shapes import dynamic_shapes, example_input
from napari_segloop.core.export.tracing import cpu_copy, export_errors
from napari_segloop.core.io.atomic import atomic_path
from napari_segloop.core.text import printable

#: The ONNX opset exported graphs use: 18 is what torch's exporter targets by default and what
#: onnxruntime >= 1.14 (and DeepImageJ's onnxruntime) runs.
OPSET = 18
#: Names of the graph's input and output.
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: torch.nn.Module, path: str | os.PathLike, in_channels: int, multiple: int,
                opset: int = OPSET) -> Path:
    """Write ``model`` as one ONNX file, atomically.

    Parameters
    ----------
    model : torch.nn.Module
        The network (not modified: a CPU copy in eval mode is exported).
    path : path
        The ``.onnx`` file to write.
    in_channels, multiple : int
        Input channels and input multiple of the network.
    opset : int
        ONNX opset version.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ModelLoadError
        If the exporter fails (the message names the network's class).
    """
    path = Path(path)
    net = cpu_copy(model)
    example = example_input(in_channels, multiple)
    with export_errors(model, path, "could not be exported to ONNX"):
        with atomic_path(path) as tmp, _quiet():
            program = torch.onnx.export(
                net, (example,), None, dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=dynamic_shapes(multiple), external_data=False, verbose=False,
            )
            program.save(str(tmp), external_data=False)
    return path


@contextlib.contextmanager
def _quiet():
    """Keep torch's exporter from printing its progress lines on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def onnx_session(path: str | os.PathLike | bytes, threads: int | None = None) -> Any:
    """An onnxruntime CPU session for a file or the bytes of one (``threads``: default torch's).

    Raises
    ------
    ModelLoadError
        If the file is not a valid ONNX model onnxruntime can run.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        source = path if isinstance(path, bytes) else str(path)
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        what = "The ONNX weights" if isinstance(path, bytes) else printable(path)
        raise ModelLoadError(f"{what} are not an ONNX model onnxruntime can run: "
                             f"{printable(exc, 200)}") from exc


class OnnxNetwork(torch.nn.Module):
    """An ONNX graph run by onnxruntime, shaped like a network the tiler can use.

    Parameters
    ----------
    path : path or bytes
        The ``.onnx`` file, or its bytes (its input ``(B, C, H, W)`` float32,
        its output the logits ``(B, K, H, W)``).
    config : dict
        What ``ModelBundle`` reads from a network's ``config`` (``in_channels``,
        ``classes``, ``encoder_name`` ...).
    input_multiple : int
        The multiple of pixels its input sides must be.
    architecture : str
        Shown by ``segloop info`` (what the graph was exported from, if known).
    threads : int, optional
        onnxruntime's intra-op threads (default: torch's thread count).
    """

    def __init__(self, path: str | os.PathLike | bytes, config: dict[str, Any], input_multiple: int,
                 architecture: str = "ONNX", threads: int | None = None) -> None:
        super().__init__()
        self.source = path if isinstance(path, bytes) else Path(path)
        self.session = onnx_session(path, threads)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(self.session.get_outputs()) < 1:
            raise ModelLoadError(f"{printable(path)}: a segmentation network has one input and "
                                 f"one output; this graph has {len(inputs)} inputs.")
        self.input_name = inputs[0].name
        self.config = dict(config)
        self.input_multiple = int(input_multiple)
        self.architecture = str(architecture)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a ``(B, C, H, W)`` batch (computed on the CPU, returned on ``x``'s device)."""
        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)

    def __getstate__(self) -> dict[str, Any]:
        # Sessions cannot be pickled or deep-copied: carry the file (or its bytes) and reopen it.
        state = dict(self.__dict__)
        state["session"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.session = onnx_session(self.source)
