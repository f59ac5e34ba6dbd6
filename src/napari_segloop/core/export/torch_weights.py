"""TorchScript and ``torch.export`` files of a network, and the plain state dict of a bioimage.io package.

``torch.export`` (a ``.pt2`` file) is what torch recommends now; TorchScript
(``torch.jit.trace``) is deprecated by torch but is still the PyTorch format
that Fiji/DeepImageJ and the bioimage.io tools read, so a bioimage.io package
carries TorchScript and ``segloop export --format torchscript`` writes it.
Both compute the network's logits, with batch, height and width free.

Both formats are *code*: loading one runs what its author put in it, so
segloop never loads them from a file it did not write unless the user allows
it (:func:`load_torchscript`).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.export.shapes import dynamic_shapes, example_input
from napari_segloop.core.export.tracing import cpu_copy, export_errors
from napari_segloop.core.io.atomic import atomic_path
from napari_segloop.core.text import printable


def export_torchscript(model: torch.nn.Module, path: str | os.PathLike, in_channels: int,
                       multiple: int) -> Path:
    """Trace ``model`` into a TorchScript file, atomically (sizes stay free: tested by the parity check).

    Raises
    ------
    ModelLoadError
        If tracing or writing fails.
    """
    path = Path(path)
    net = cpu_copy(model)
    example = example_input(in_channels, multiple)[:1]
    with export_errors(model, path, "could not be traced to TorchScript"):
        with warnings.catch_warnings():
            # torch.jit.trace is deprecated in favour of torch.export; consumers still read it.
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, example, check_trace=False)
            with atomic_path(path) as tmp:
                torch.jit.save(traced, str(tmp))
    return path


def export_program(model: torch.nn.Module, path: str | os.PathLike, in_channels: int,
                   multiple: int) -> Path:
    """Write ``model`` as a ``torch.export`` program (``.pt2``), atomically.

    Raises
    ------
    ModelLoadError
        If ``torch.export`` cannot capture the network, or writing fails.
    """
    path = Path(path)
    net = cpu_copy(model)
    example = example_input(in_channels, multiple)
    with export_errors(model, path, "could not be captured by torch.export"):
        program = torch.export.export(net, (example,), dynamic_shapes=dynamic_shapes(multiple))
        with atomic_path(path) as tmp:
            named = tmp.with_name(tmp.name + ".pt2")  # torch.export warns about other suffixes
            torch.export.save(program, str(named))
            os.replace(named, tmp)
    return path


def load_torchscript(path: str | os.PathLike, *, allow_code: bool = False) -> torch.nn.Module:
    """Load a TorchScript file, only when the user allowed it (a TorchScript file is a program).

    Raises
    ------
    ModelLoadError
        Without ``allow_code``, or when the file is not TorchScript.
    """
    if not allow_code:
        raise ModelLoadError(
            f"{printable(path)} is TorchScript, which runs code its author wrote; segloop loads it "
            "only when you allow it (--allow-torchscript on the command line)."
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise ModelLoadError(f"{printable(path)} is not a TorchScript file: {printable(exc, 200)}") from exc


def load_program(path: str | os.PathLike) -> Any:
    """Load a ``.pt2`` program written by :func:`export_program` (the module it runs)."""
    try:
        return torch.export.load(str(path)).module()
    except Exception as exc:
        raise ModelLoadError(f"{printable(path)} is not a torch.export program: "
                             f"{printable(exc, 200)}") from exc


def save_state_dict(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Write the float32 CPU state dict as a plain ``.pt`` file (``torch.load(weights_only=True)`` reads it).

    The bioimage.io tools read this format; segloop's own bundles keep safetensors.
    """
    path = Path(path)
    state = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).contiguous()
             for k, v in model.state_dict().items()}
    try:
        with atomic_path(path) as tmp:
            torch.save(state, str(tmp))
    except OSError as exc:
        raise ModelLoadError(f"Could not write {printable(path)}: {exc.strerror or exc}") from exc
    return path
