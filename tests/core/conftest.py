"""Shared fixtures of the core tests: tiny networks that run in milliseconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
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


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny models run fastest on one thread; two threads on busy shared cores were 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bundle() -> ModelBundle:
    """Tiny 1-channel Unet, shared by the tests of one module (do not modify it)."""
    return tiny_bundle()


@pytest.fixture
def make_bundle():
    """Factory for a fresh tiny Unet bundle: ``make_bundle(in_channels=1, depth=5, seed=0, **settings)``."""
    return tiny_bundle


@pytest.fixture
def make_identity():
    """Factory for an :class:`IdentityNet` bundle: ``make_identity(in_channels=1, **settings)``."""
    return identity_bundle


@pytest.fixture
def make_blobs():
    """Factory for a structured test image: ``make_blobs((H, W), seed=0)``."""
    return blobs


@pytest.fixture(scope="module")
def shallow_bundle() -> ModelBundle:
    """Tiny Unet with encoder depth 3 (small receptive field) for tiling invariance."""
    return tiny_bundle(depth=3, seed=1)


def blobs(shape: tuple[int, int], seed: int = 0, n: int = 12) -> np.ndarray:
    """A float32 image with bright discs on a noisy background (structure for the network)."""
    r = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = r.normal(0.1, 0.05, shape)
    for _ in range(n):
        cy, cx = r.uniform(0, shape[0]), r.uniform(0, shape[1])
        rad = r.uniform(3, max(4, min(shape) / 6))
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rad**2] += 1.0
    return img.astype(np.float32)
