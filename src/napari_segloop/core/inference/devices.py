"""Compute devices: automatic choice with a real probe, and the AMP policy.

``auto`` picks CUDA, then Apple's MPS, then the CPU, each verified by a small
real allocation and computation (a driver can report a GPU that then fails).
An explicit choice is honoured when it works; an explicit device that is not
there or fails its probe is a :class:`~napari_segloop.core.errors.DeviceError`
(the user asked for it: silently running on the CPU, maybe a hundred times
slower, would hide the problem). Only ``auto`` falls back, silently; the CPU
always works.

MPS cannot be tested on the machines this project is developed on; its path is
kept deliberately simple (probe, then plain float32 inference without autocast).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from napari_segloop.core.errors import DeviceError


@dataclass
class DeviceChoice:
    """The device that will be used and why.

    Attributes
    ----------
    device : torch.device
        The working device.
    requested : str
        What the user asked for.
    notices : list of str
        Messages to show the user (none today: an unusable explicit device
        raises, ``auto`` chooses silently).
    """

    device: torch.device
    requested: str
    notices: list[str] = field(default_factory=list)


def probe(device: str | torch.device) -> bool:
    """Return True if a small tensor can be allocated and computed on ``device``."""
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            return False
        if dev.type == "mps" and not (
            getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
        ):
            return False
        x = torch.ones(8, device=dev)
        return bool(float((x * 2).sum().cpu()) == 16.0)
    except Exception:  # any driver failure means "not usable"
        return False


def available_devices() -> list[str]:
    """List the devices that pass :func:`probe`, best first; the CPU is always last."""
    found: list[str] = []
    try:
        n_cuda = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        n_cuda = 0
    for i in range(n_cuda):
        name = "cuda" if i == 0 else f"cuda:{i}"
        if probe(name):
            found.append(name)
    if probe("mps"):
        found.append("mps")
    found.append("cpu")
    return found


def _unavailable_reason(dev: torch.device) -> str:
    """Why the explicit device ``dev`` (which failed its probe) cannot be used, in a few words."""
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        found = False
        with contextlib.suppress(Exception):
            found = mps is not None and bool(mps.is_available())
        return "failed a test allocation" if found else "no Apple MPS device found"
    try:
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        count = 0
    if count == 0:
        return "no CUDA GPU found"
    if dev.index is not None and dev.index >= count:
        return f"this machine has {count} CUDA GPU{'s' if count > 1 else ''}, cuda:0 to cuda:{count - 1}"
    return "failed a test allocation"


def resolve_device(requested: str | torch.device | None = "auto") -> DeviceChoice:
    """Turn a user's device choice into a working :class:`torch.device`.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda", "cuda:N", "mps"} or torch.device
        ``auto`` (or None) picks the best working device (CUDA, then MPS,
        then the CPU) and falls back silently; any other choice must work.

    Returns
    -------
    DeviceChoice
        The device (its ``notices`` are empty: nothing is ever replaced).

    Raises
    ------
    DeviceError
        If ``requested`` is not a device name, or names a device that is not
        there or fails its probe (one line, e.g. "Device cuda is not available
        (no CUDA GPU found); use --device auto or cpu.").
    """
    text = "auto" if requested is None else str(requested).strip().lower()
    if text in ("", "auto"):
        for name in ("cuda", "mps"):
            if probe(name):
                return DeviceChoice(torch.device(name), "auto")
        return DeviceChoice(torch.device("cpu"), "auto")
    try:
        dev = torch.device(text)
    except RuntimeError as exc:
        raise DeviceError(
            f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps."
        ) from exc
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"Unsupported device {requested!r}; use auto, cpu, cuda, cuda:N or mps.")
    if dev.type == "cpu" or probe(dev):
        return DeviceChoice(dev, text)
    raise DeviceError(
        f"Device {text} is not available ({_unavailable_reason(dev)}); use --device auto or cpu."
    )


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype for inference on ``device``, or None for float32.

    CUDA uses bfloat16 where the GPU supports it, else float16. MPS and the
    CPU run in float32.
    """
    if device.type != "cuda":
        return None
    try:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    except Exception:
        return torch.float16


def empty_cache(device: torch.device) -> None:
    """Release cached allocator memory on ``device`` (after an out-of-memory error)."""
    try:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()
    except Exception:
        pass
