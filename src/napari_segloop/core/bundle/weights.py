"""Reading weights safely: safetensors, and plain state dicts with ``weights_only=True``.

No code from a weights file ever runs: safetensors holds tensors only, and
``torch.load(..., weights_only=True)`` refuses any pickled object other than
tensors and containers. A mismatch between the file and the architecture is
reported key by key in one readable message.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from napari_segloop.core.errors import ModelLoadError


def _mismatch_report(model, state_dict: Mapping[str, Any], source: str) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return None

    def _few(items: list[str]) -> str:
        shown = "; ".join(items[:4])
        return shown + (f"; ... and {len(items) - 4} more" if len(items) > 4 else "")

    parts = []
    if wrong:
        parts.append(f"{len(wrong)} with other shapes ({_few(wrong)})")
    if missing:
        parts.append(f"{len(missing)} missing ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
    return (
        f"The weights in {source} do not fit this architecture/encoder: "
        + ", ".join(parts)
        + ". Check the architecture, encoder, input channels and classes."
    )


def load_weights(model, state_dict: Mapping[str, Any], source: str) -> None:
    """Copy ``state_dict`` into ``model``, or raise a readable mismatch report."""
    import torch

    state_dict = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    report = _mismatch_report(model, state_dict, source)
    if report:
        raise ModelLoadError(report)
    own = model.state_dict()
    converted = {k: v.to(dtype=own[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(converted, strict=True)


def _safetensors_load(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path} is not a valid safetensors weights file: {exc}") from exc



def _unpickler_reason(text: str) -> str:
    """The reason in torch's loader message, without its advice to turn the safe reader off."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\n\s*\n|$)", text, re.S)
    if found:
        return " ".join(found.group(1).split())
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "file an issue" not in line]
    return lines[0] if lines else ""


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        return _safetensors_load(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's safe reader refused the file: it holds a global (class or function) other than
        # tensor types, or pickle instructions it does not allow. Either way the file is unsafe
        # to open with a full unpickler, so torch's advice (retry with weights_only=False) is
        # never passed on.
        text = str(exc)
        found = re.search(r"GLOBAL (\S+)", text)
        if found is None and "global" not in text.lower():  # no object payload: a damaged file
            raise ModelLoadError(
                f"{path} is not a readable PyTorch weights file: {_unpickler_reason(text)}"
            ) from exc
        raise ModelLoadError(
            f"Refused to load {path}: it contains Python objects other than tensors "
            f"({found.group(1) if found else 'a global'}); opening it fully could run code hidden "
            "in it, and napari-segloop never executes code from a model file. Where the model was "
            "made, save its weights as a state dict (torch.save(model.state_dict(), 'weights.pt')) "
            "or as safetensors, or save a segloop bundle."
        ) from exc
    except Exception as exc:  # a damaged file can fail anywhere in the reader (even IndexError)
        reason = _unpickler_reason(str(exc)) or type(exc).__name__
        raise ModelLoadError(f"{path} is not a readable PyTorch weights file: {reason}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{path} does not contain a state dict (a mapping of tensors).")
    out = {}
    for k, v in obj.items():
        key = str(k)
        out[key[len("module."):] if key.startswith("module.") else key] = v
    return out


