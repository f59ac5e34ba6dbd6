"""Avoid a crash between triton and OpenGL drivers built on LLVM.

On Linux, Mesa's OpenGL drivers that use LLVM (``llvmpipe``, the software
renderer used under Xvfb, virtual machines and remote desktops, and
``radeonsi`` for AMD GPUs) load ``libLLVM``. PyTorch's ``triton`` package
carries its own LLVM, and loading it into a process where Mesa's LLVM is
already mapped ends in a segmentation fault. torch imports triton the first
time ``torch._dynamo`` is imported, which timm and torchvision do, that is,
when segmentation-models-pytorch is imported to build or load a model. In
napari the OpenGL canvas exists before any plugin dock, so the first model
load would crash napari.

The plugin never uses ``torch.compile``, so when Mesa's LLVM is mapped and
triton is not imported yet, :func:`avoid_triton_llvm_clash` marks triton as
unavailable (``sys.modules["triton"] = None``), which torch treats as "triton
is not installed". Processes without such a driver (NVIDIA, macOS, Windows,
the CLI) are left alone.
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger(__name__)


def _llvm_mapped() -> bool:
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as fh:
            return any("libLLVM" in line for line in fh)
    except OSError:
        return False


def avoid_triton_llvm_clash() -> bool:
    """Keep triton from loading next to Mesa's LLVM; return True if it was blocked."""
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return False
    if not _llvm_mapped():
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]
    logger.info("An LLVM-based OpenGL driver is loaded: triton disabled to avoid a crash "
                "(napari-segloop does not need it).")
    return True
