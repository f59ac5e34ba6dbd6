"""Batch norm that sees a single value per channel: run it with its running statistics.

In training mode a BatchNorm layer needs more than one value per channel to
estimate a variance. Some layers see exactly one whenever the batch holds
one tile: DeepLabV3+'s image-pooling branch (global average pooling to 1x1,
then BatchNorm), PSPNet's 1x1 pyramid level, the bottom of a deep U-Net on a
small tile. PyTorch then raises "Expected more than 1 value per channel when
training". With a guard such a call uses the layer's running statistics (as
in evaluation) and does not update them; the layer's weight and bias are
still trained. Calls with more values per channel train as usual.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["single_value_batchnorm_guard"]


def _values_per_channel(x: torch.Tensor) -> int:
    return int(x.numel() // max(1, x.shape[1])) if x.dim() >= 2 else int(x.numel())


def _pre(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    if module.training and args and _values_per_channel(args[0]) <= 1:
        module.training = False
        module._segloop_guarded = True  # type: ignore[attr-defined]


def _post(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
    if getattr(module, "_segloop_guarded", False):
        module.training = True
        module._segloop_guarded = False  # type: ignore[attr-defined]


@contextmanager
def single_value_batchnorm_guard(model: nn.Module) -> Iterator[int]:
    """Within the block, BatchNorm calls with one value per channel use running statistics.

    Parameters
    ----------
    model : torch.nn.Module
        The network being trained.

    Yields
    ------
    int
        How many BatchNorm layers are guarded.
    """
    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_pre_hook(_pre))
            handles.append(m.register_forward_hook(_post))
    try:
        yield len(handles) // 2
    finally:
        for h in handles:
            h.remove()
