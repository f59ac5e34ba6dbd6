"""Shared fixtures of the core tests: tiny networks that run in milliseconds on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import ModelBundle
from tests.core.tiny_models import identity_bundle, tiny_bundle


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
