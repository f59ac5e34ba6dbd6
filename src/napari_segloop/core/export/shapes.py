"""The input sizes an exported network accepts, and the example it is traced with.

Every exporter (ONNX, TorchScript, ``torch.export``) traces the network on one
example batch and must leave height, width and batch free. Two things decide
the sizes that stay valid:

* the network's input multiple (:func:`napari_segloop.core.models.registry.input_multiple`):
  sides are ``multiple * n``;
* ``torch.export`` specialises a dimension that equals 1 anywhere in the graph
  (its 0/1 specialisation), so the deepest feature map must be larger than one
  pixel: the smallest side is :func:`min_side`, at least 64 px (the tiler's
  smallest tile) and two input multiples.

The batch of the example is 2 for the same reason.
"""

from __future__ import annotations

from typing import Any

#: Largest side the exported graphs are declared for (the tiler's tiles are far smaller).
MAX_SIDE = 16384
#: Batch of the example input (1 would be specialised to a constant).
EXAMPLE_BATCH = 2


def min_side(multiple: int) -> int:
    """The smallest height and width an exported network accepts: a multiple of ``multiple``, >= 64 px."""
    multiple = max(1, int(multiple))
    side = max(64, 2 * multiple)
    return -(-side // multiple) * multiple


def example_input(in_channels: int, multiple: int, seed: int = 0) -> Any:
    """A random ``(2, C, S, S)`` float32 batch at the smallest valid side ``S`` (a fixed seed)."""
    import torch

    side = min_side(multiple)
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(EXAMPLE_BATCH, int(in_channels), side, side, generator=generator)


def dynamic_shapes(multiple: int) -> tuple[dict[int, Any]]:
    """``torch.export`` dimensions: batch free, height and width ``multiple * n`` from :func:`min_side`."""
    import torch

    multiple = max(1, int(multiple))
    low, high = min_side(multiple) // multiple, MAX_SIDE // multiple
    batch = torch.export.Dim("batch", min=1, max=1024)
    height = torch.export.Dim("height_blocks", min=low, max=high)
    width = torch.export.Dim("width_blocks", min=low, max=high)
    # Positional (a tuple): the networks' forward argument need not be called ``x``.
    return ({0: batch, 2: multiple * height, 3: multiple * width},)
