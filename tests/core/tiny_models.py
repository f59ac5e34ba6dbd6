"""Tiny networks for the core tests, importable by test modules (``from tests.core.tiny_models import ...``).

They live here, not in ``conftest.py``: every test folder has a ``conftest`` module, and
``from conftest import ...`` resolved to whichever of them was imported first.
"""

from __future__ import annotations

import torch

from napari_segloop.core.bundle import BundleSettings, ModelBundle, Normalization, create_model

TINY_DECODER = (16, 16, 16, 16, 16)


def tiny_bundle(in_channels: int = 1, depth: int = 5, seed: int = 0, **settings_kwargs) -> ModelBundle:
    """A small Unet (tu-lcnet_050) with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    settings = BundleSettings(channel_names=[f"c{i}" for i in range(in_channels)], **settings_kwargs)
    bundle = create_model(
        "Unet", "tu-lcnet_050", in_channels, 1, settings=settings,
        encoder_depth=depth, decoder_channels=TINY_DECODER[:depth],
    )
    return bundle


class IdentityNet(torch.nn.Module):
    """A "network" whose logits are the mean of its input channels, counting its calls.

    With it, the stitched probability must be ``sigmoid(normalised input)`` at every
    pixel, whatever the tiling: a misplaced tile or a wrong weight breaks that.
    """

    def __init__(self, in_channels: int = 1):
        super().__init__()
        self.config = {"in_channels": in_channels, "classes": 1, "encoder_name": "identity"}
        self.calls = 0
        self.batch_sizes: list[int] = []
        self.tile_shapes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.batch_sizes.append(int(x.shape[0]))
        self.tile_shapes.append((int(x.shape[2]), int(x.shape[3])))
        return x.mean(dim=1, keepdim=True)


def identity_bundle(in_channels: int = 1, **settings_kwargs) -> ModelBundle:
    """Wrap :class:`IdentityNet` in a bundle with fixed normalisation (logits spread over [-2, 2])."""
    settings_kwargs.setdefault(
        "normalization",
        Normalization(kind="fixed", mean=[0.5] * in_channels, std=[0.25] * in_channels),
    )
    settings = BundleSettings(channel_names=[f"c{i}" for i in range(in_channels)], **settings_kwargs)
    return ModelBundle(model=IdentityNet(in_channels), settings=settings, source="test")
