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
from napari_segloop.core.text import printable

#: The tensor types a safetensors weight file of a bundle may hold.
SAFETENSORS_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}
#: The largest safetensors header read (the safetensors library's own limit is 100 MB).
MAX_HEADER_BYTES = 50_000_000


def _shape_of(value: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in value.shape) if hasattr(value, "shape") else tuple(value)


def _mismatch_report(
    own: Mapping[str, Any], found: Mapping[str, Any], source: str
) -> str | None:
    """Compare the tensor shapes a network has (``own``) with those of a file (``found``).

    Values are tensors or shapes (tuples); names from the file are escaped.
    """
    missing = [printable(k, 80) for k in own if k not in found]
    unexpected = [printable(k, 80) for k in found if k not in own]
    wrong = [
        f"{printable(k, 80)}: file {_shape_of(found[k])} vs model {_shape_of(own[k])}"
        for k in own
        if k in found and _shape_of(found[k]) != _shape_of(own[k])
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
        f"The weights in {printable(source)} do not fit this architecture/encoder: "
        + ", ".join(parts)
        + ". Check the architecture, encoder, input channels and classes."
    )


def _odd_tensor(value: Any) -> str | None:
    """Why a tensor from a file cannot be weights (sparse, meta, quantized, ...), or None."""
    import torch

    if not isinstance(value, torch.Tensor):
        return f"a {type(value).__name__}, not a tensor"
    if getattr(value, "is_nested", False):
        return "a nested tensor"
    if value.layout != torch.strided:
        return f"a {str(value.layout).replace('torch.', '')} tensor"
    if value.is_meta:
        return "a meta tensor (it has no values)"
    if value.is_quantized:
        return f"a quantized tensor ({value.dtype})"
    if value.device.type != "cpu":
        return f"a tensor on {value.device}"
    if value.dtype.is_complex or value.dtype == torch.bool:
        return f"a {value.dtype} tensor"
    return None


def check_tensors(state_dict: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Keep the tensors of a state dict, refusing those that cannot be plain weights.

    ``torch.load(weights_only=True)`` accepts sparse, meta, quantized and
    nested tensors, which ``load_state_dict`` then fails on with a traceback;
    they are refused here with one line naming the first such key.
    Non-tensor entries (an epoch number saved next to the weights) are dropped.

    Raises
    ------
    ModelLoadError
    """
    import torch

    out = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            continue
        why = _odd_tensor(value)
        if why:
            raise ModelLoadError(
                f"{printable(source)}: the weight '{printable(key, 80)}' is {why}; napari-segloop "
                "loads plain dense tensors only. Save the weights with "
                "torch.save(model.state_dict(), ...) from a dense float model."
            )
        out[str(key)] = value
    return out


def load_weights(model, state_dict: Mapping[str, Any], source: str) -> None:
    """Copy ``state_dict`` into ``model``, or raise a readable mismatch report.

    Raises
    ------
    ModelLoadError
        Odd tensors, names or shapes that do not fit, or weights that are not
        finite (NaN or infinite values would make every prediction NaN).
    """
    import torch

    state_dict = check_tensors(state_dict, source)
    own = model.state_dict()
    report = _mismatch_report(own, state_dict, source)
    if report:
        raise ModelLoadError(report)
    for key, value in state_dict.items():
        if value.dtype.is_floating_point and not bool(torch.isfinite(value).all()):
            raise ModelLoadError(
                f"{printable(source)}: the weight '{printable(key, 80)}' contains NaN or infinite "
                "values; the model is damaged (retrain or restore it)."
            )
    converted = {k: v.to(dtype=own[k].dtype) for k, v in state_dict.items()}
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as exc:  # anything the checks above did not foresee: still one line
        reason = printable(" ".join(str(exc).split()), 200)
        raise ModelLoadError(f"{printable(source)}: cannot load the weights ({reason}).") from exc


def read_safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """The tensor names and shapes of a safetensors file, from its header only (no tensor data).

    The header (8 bytes of length, then JSON) is checked for plausibility: a
    length within the file, known tensor types, and data offsets that match
    each tensor's size and lie inside the file.

    Raises
    ------
    ModelLoadError
        If it is not a safetensors file or the header is inconsistent.
    """
    import struct

    from napari_segloop.core.bundle.jsonfile import check_regular_file, parse_json_text

    info = check_regular_file(path, "weights file")
    source = printable(path)
    bad = f"{source} is not a valid safetensors weights file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise ModelLoadError(f"{bad}: it is too short.")
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > info.st_size:
                raise ModelLoadError(f"{bad}: its header length ({n} bytes) does not fit the file.")
            raw = fh.read(n)
    except OSError as exc:
        raise ModelLoadError(f"{source}: cannot read the weights ({exc.strerror or exc}).") from exc
    try:
        header = parse_json_text(raw.decode("utf-8").rstrip(" "), source)
    except UnicodeDecodeError:
        raise ModelLoadError(f"{bad}: its header is not UTF-8 text.") from None
    except ModelLoadError as exc:
        raise ModelLoadError(f"{bad}: {exc}") from None
    if not isinstance(header, dict):
        raise ModelLoadError(f"{bad}: its header is not a JSON object.")
    data_bytes = info.st_size - 8 - n
    shapes: dict[str, tuple[int, ...]] = {}
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        name = printable(key, 80)
        if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
            dtype = entry.get("dtype") if isinstance(entry, dict) else None
            raise ModelLoadError(f"{bad}: tensor '{name}' has type '{printable(dtype, 20)}'; "
                                 "weights are float (or integer counters).")
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
                and isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) for o in offsets)):
            raise ModelLoadError(f"{bad}: tensor '{name}' has no valid shape and offsets.")
        size = SAFETENSORS_DTYPES[entry["dtype"]]
        for s in shape:
            size *= s
        begin, stop = offsets
        if not 0 <= begin <= stop <= data_bytes or stop - begin != size:
            raise ModelLoadError(f"{bad}: tensor '{name}' does not lie inside the file.")
        shapes[str(key)] = tuple(shape)
    return shapes


def expect_shapes(shapes: Mapping[str, tuple[int, ...]], source: str):
    """A check for :func:`~napari_segloop.core.models.registry.build_model`'s ``expected``.

    Returns a callable that compares a (meta-device) network's state dict with
    ``shapes`` and raises the mismatch report before the real network is built.
    """
    def check(shell) -> None:
        report = _mismatch_report(shell.state_dict(), shapes, source)
        if report:
            raise ModelLoadError(report)
    return check


def _safetensors_load(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_safetensors_header(path)
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"{printable(path)} is not a valid safetensors weights file: {printable(exc, 200)}"
        ) from exc


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

    from napari_segloop.core.bundle.jsonfile import check_regular_file

    if path.suffix == ".safetensors":
        return _safetensors_load(path)
    check_regular_file(path, "weights file")
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
                f"{printable(path)} is not a readable PyTorch weights file: "
                f"{printable(_unpickler_reason(text), 200)}"
            ) from exc
        raise ModelLoadError(
            f"Refused to load {printable(path)}: it contains Python objects other than tensors "
            f"({printable(found.group(1), 80) if found else 'a global'}); opening it fully could run "
            "code hidden in it, and napari-segloop never executes code from a model file. Where the "
            "model was "
            "made, save its weights as a state dict (torch.save(model.state_dict(), 'weights.pt')) "
            "or as safetensors, or save a segloop bundle."
        ) from exc
    except Exception as exc:  # a damaged file can fail anywhere in the reader (even IndexError)
        reason = printable(_unpickler_reason(str(exc)), 200) or type(exc).__name__
        raise ModelLoadError(f"{printable(path)} is not a readable PyTorch weights file: {reason}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{printable(path)} does not contain a state dict (a mapping of tensors).")
    out = {}
    for k, v in obj.items():
        key = str(k)
        out[key[len("module."):] if key.startswith("module.") else key] = v
    return out


