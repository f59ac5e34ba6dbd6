"""Shared test set-up: never touch the network, keep user settings isolated."""

from __future__ import annotations

import os

import pytest

# Must be set before huggingface_hub is imported anywhere: tests download nothing.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TORCH_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _clean_image_limit(monkeypatch):
    """``--max-image-size`` sets a process-wide limit (and a user may export the variable):
    every test starts from the default and leaves no limit behind."""
    from napari_segloop.core.io.limits import ENV_VAR, reset_max_image_bytes

    monkeypatch.delenv(ENV_VAR, raising=False)
    reset_max_image_bytes()
    yield
    reset_max_image_bytes()


@pytest.fixture
def no_gpu(monkeypatch):
    """Make this machine look like one without CUDA or MPS (the tests then pass on GPU machines too)."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    mps = getattr(torch.backends, "mps", None)
    if mps is not None:
        monkeypatch.setattr(mps, "is_available", lambda: False)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one torch thread (two were far slower on busy shared cores)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny bundle (1 channel, 64-px tiles, threshold 0.5) for command-line tests."""
    import torch

    from napari_segloop.core.bundle import BundleSettings, create_model, save_bundle

    torch.manual_seed(0)
    settings = BundleSettings(channel_names=["gray"], tile_size=64, threshold=0.5)
    bundle = create_model("Unet", "tu-lcnet_050", 1, 1, settings=settings,
                          encoder_depth=3, decoder_channels=(16, 16, 16))
    return save_bundle(bundle, tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(autouse=True)
def _quick_scheduler_timeout(monkeypatch):
    """A scheduler that is not there is reported after 1 s in tests (10 s for users)."""
    try:
        from napari_segloop.core.inference import cluster
    except ImportError:  # pragma: no cover - distributed is a dependency
        return
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)
