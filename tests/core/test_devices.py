"""Device choice: a real probe, an error for an explicit device that is not there, float32 on the CPU."""

from __future__ import annotations

import pytest
import torch

from napari_segloop.core.errors import DeviceError
from napari_segloop.core.inference import devices
from napari_segloop.core.inference.devices import (
    autocast_dtype,
    available_devices,
    empty_cache,
    probe,
    resolve_device,
)


@pytest.fixture
def broken_cuda(monkeypatch):
    """A driver that claims a GPU whose first allocation fails."""
    real_ones = torch.ones
    attempts = []

    def ones(*args, **kwargs):
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            attempts.append(device)
            raise RuntimeError("CUDA error: no kernel image is available for execution on the device")
        return real_ones(*args, **kwargs)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(devices.torch, "ones", ones)
    return attempts


def test_auto_resolves_to_the_cpu_without_a_gpu(no_gpu):
    choice = resolve_device("auto")
    assert choice.device == torch.device("cpu")
    assert choice.notices == []
    assert resolve_device(None).device.type == "cpu"
    assert resolve_device("").device.type == "cpu"


def test_explicit_cpu_is_honoured():
    choice = resolve_device("CPU ")
    assert choice.device == torch.device("cpu")
    assert choice.notices == []


@pytest.mark.parametrize("name", ["gpu0", "tpu", "banana", "cuda:x"])
def test_unknown_device_is_a_device_error(name):
    with pytest.raises(DeviceError, match="auto, cpu, cuda"):
        resolve_device(name)


def test_unsupported_torch_device_type_is_a_device_error():
    with pytest.raises(DeviceError, match="meta"):
        resolve_device("meta")


@pytest.mark.parametrize("name", ["cuda", "CUDA", "cuda:0", "cuda:1"])
def test_absent_cuda_is_a_device_error_not_a_cpu_fallback(no_gpu, name):
    with pytest.raises(DeviceError) as info:
        resolve_device(name)
    text = str(info.value)
    assert text == (f"Device {name.lower()} is not available (no CUDA GPU found); "
                    "use --device auto or cpu.")
    assert "\n" not in text


def test_absent_mps_is_a_device_error(no_gpu):
    with pytest.raises(DeviceError, match=r"^Device mps is not available \(no Apple MPS device found\)"):
        resolve_device("mps")


def test_a_cuda_index_beyond_the_gpus_names_them(monkeypatch):
    monkeypatch.setattr(devices, "probe", lambda device: torch.device(device).index in (None, 0))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0").device == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"Device cuda:3 is not available \(this machine has 1 CUDA GPU, "
                                          r"cuda:0 to cuda:0\); use --device auto or cpu\."):
        resolve_device("cuda:3")


def test_failing_cuda_probe_is_a_device_error_but_auto_falls_back_silently(broken_cuda):
    assert probe("cuda") is False
    assert broken_cuda, "the probe really tried an allocation"
    with pytest.raises(DeviceError) as info:
        resolve_device("cuda:0")
    assert str(info.value) == ("Device cuda:0 is not available (failed a test allocation); "
                               "use --device auto or cpu.")
    # auto silently skips the broken GPU, and the CPU always works
    auto = resolve_device("auto")
    assert auto.device.type == "cpu" and auto.notices == []
    assert resolve_device("cpu").device.type == "cpu"


def test_available_devices_lists_only_working_devices(broken_cuda):
    assert available_devices() == ["cpu"]


def test_probe_of_a_wrong_result_is_false(monkeypatch):
    real_ones = torch.ones
    monkeypatch.setattr(devices.torch, "ones", lambda *a, **k: real_ones(*a, **k) * 0)
    assert probe("cpu") is False


def test_probe_cpu_works():
    assert probe("cpu") is True
    assert available_devices()[-1] == "cpu"


def test_autocast_dtype_is_none_on_cpu_and_mps():
    assert autocast_dtype(torch.device("cpu")) is None
    assert autocast_dtype(torch.device("mps")) is None


def test_autocast_dtype_on_cuda_prefers_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert autocast_dtype(torch.device("cuda")) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert autocast_dtype(torch.device("cuda")) is torch.float16


def test_empty_cache_never_raises(monkeypatch):
    def boom():
        raise RuntimeError("driver gone")

    monkeypatch.setattr(torch.cuda, "empty_cache", boom)
    empty_cache(torch.device("cuda"))
    empty_cache(torch.device("cpu"))
