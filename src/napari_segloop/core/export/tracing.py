"""What every exporter shares: the CPU copy it traces, and one way to report a failure."""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.text import printable


def cpu_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 CPU copy in eval mode: exporting never changes the user's network (or its mode).

    In-place activations (``nn.ReLU(inplace=True)``, timm's ``nn.Hardswish(inplace=True)``) are
    made out-of-place in the copy. The outputs and the exported graph are the same, but
    ``torch.export`` functionalises every in-place op under symbolic shapes, which made the
    default model's ONNX export 1.7x slower (``benchmarks/bench_onnx.py`` measures both).
    """
    copied = copy.deepcopy(model).to("cpu", torch.float32).eval()
    for module in copied.modules():
        if isinstance(getattr(module, "inplace", None), bool):
            module.inplace = False
    return copied


@contextlib.contextmanager
def export_errors(model: torch.nn.Module, path: str | os.PathLike, failure: str) -> Iterator[None]:
    """Turn what an exporter raises into one :class:`ModelLoadError` line.

    An ``OSError`` says the file could not be written; anything else says
    ``"<network class> <failure>: <reason>"`` (e.g. "could not be exported to ONNX").
    """
    try:
        yield
    except ModelLoadError:
        raise
    except OSError as exc:
        raise ModelLoadError(f"Could not write {printable(Path(path))}: {exc.strerror or exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"{type(model).__name__} {failure}: {printable(exc, 300)}") from exc
