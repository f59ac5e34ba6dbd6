"""Tiled inference: shapes, exact stitching, tiling invariance, progress, cancel and out-of-memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_segloop.core.bundle import Normalization
from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.events import Notice, Progress, run_to_end
from napari_segloop.core.inference import predict as inference
from napari_segloop.core.inference.normalize import normalize_slice
from napari_segloop.core.inference.predict import (
    MIN_TILE,
    PredictOptions,
    _Plan,
    is_out_of_memory,
    predict,
    predict_array,
)
from napari_segloop.core.inference.tiling import TileGrid


def _collect(gen) -> tuple[np.ndarray, list]:
    events: list = []
    result = run_to_end(gen, events.append)
    return result, events


def _expected_identity(image: np.ndarray, norm: Normalization) -> np.ndarray:
    """sigmoid(normalised image) for a gray image or a (Z, H, W) stack."""
    planes = image.reshape(-1, *image.shape[-2:])
    out = [torch.sigmoid(torch.from_numpy(normalize_slice(p[None], norm)[0][0])).numpy() for p in planes]
    return np.stack(out).reshape(image.shape)


def _random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ---------------------------------------------------------------- shapes and ranges


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (37, 53), (300, 410)])
def test_output_has_the_input_shape_and_valid_probabilities(bundle, shape):
    image = _random_image(shape, seed=sum(shape))
    prob = predict_array(bundle, image, tile_size=256)
    assert prob.shape == shape and prob.dtype == np.float32
    assert np.isfinite(prob).all()
    assert prob.min() >= 0 and prob.max() <= 1


def test_stack_output_shape(bundle):
    image = (_random_image((3, 40, 70)) * 1000).astype(np.uint16)
    prob = predict_array(bundle, image, tile_size=64)
    assert prob.shape == (3, 40, 70)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1


def test_rgb_output_shape(make_bundle):
    rgb_bundle = make_bundle(in_channels=3)
    image = (_random_image((45, 61, 3)) * 255).astype(np.uint8)
    prob = predict_array(rgb_bundle, image)
    assert prob.shape == (45, 61)
    # A stack of RGB images
    prob = predict_array(rgb_bundle, np.stack([image, image[::-1]]))
    assert prob.shape == (2, 45, 61)


def test_channel_mismatch_is_refused_before_any_work(make_identity):
    b = make_identity()
    gen = predict(b, np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(InputError, match="expects 1 input channel"):
        next(gen)
    assert b.model.calls == 0


@pytest.mark.parametrize(
    ("options", "match"),
    [({"tile_size": 100}, "multiple of 32"), ({"overlap": 0.95}, "Overlap"), ({"batch_size": 0}, "Batch"),
     ({"scale": 0}, "Scale"), ({"object_size": 10}, "object size"), ({"device": "tpu"}, "device")],
)
def test_bad_options_are_input_errors(bundle, options, match):
    with pytest.raises(SegloopError, match=match):
        predict_array(bundle, np.zeros((40, 40), np.float32), **options)


# ---------------------------------------------------------------- exact stitching


@pytest.mark.parametrize(
    ("shape", "tile", "overlap", "batch"),
    [((200, 300), 64, 0.5, 3), ((37, 53), 256, 0.25, 4), ((130, 97), 32, 0.0, 1),
     ((129, 65), 64, 0.9, 8), ((1, 1), 32, 0.25, 1), ((64, 64), 64, 0.25, 2)],
)
def test_stitching_known_answer(make_identity, shape, tile, overlap, batch):
    """logits = input, so the stitched map must be sigmoid(normalised input) at every pixel."""
    b = make_identity()
    image = _random_image(shape, seed=3)
    prob = predict_array(b, image, tile_size=tile, overlap=overlap, batch_size=batch)
    expected = _expected_identity(image, b.settings.normalization)
    np.testing.assert_allclose(prob, expected, atol=2e-5, rtol=0)
    assert b.model.calls >= 1


def test_stitching_known_answer_with_percentile_normalisation_and_a_stack(make_identity):
    b = make_identity(normalization=Normalization())
    image = (_random_image((3, 90, 110), seed=4) * 4000).astype(np.uint16)
    image[1] //= 7  # every slice is normalised on its own
    prob = predict_array(b, image, tile_size=64, overlap=0.25, batch_size=2)
    np.testing.assert_allclose(prob, _expected_identity(image, b.settings.normalization), atol=2e-5)


def test_stitching_known_answer_for_rgb(make_identity):
    b = make_identity(in_channels=3)
    image = (_random_image((70, 50, 3), seed=5) * 255).astype(np.uint8)
    prob = predict_array(b, image, tile_size=32, overlap=0.5)
    norm, _ = normalize_slice(np.moveaxis(image, -1, 0), b.settings.normalization)
    expected = torch.sigmoid(torch.from_numpy(norm.mean(axis=0))).numpy()
    np.testing.assert_allclose(prob, expected, atol=2e-5)


def test_tiles_have_the_network_size(make_identity):
    b = make_identity()
    predict_array(b, _random_image((37, 200)), tile_size=64, batch_size=2)
    assert set(b.model.tile_shapes) == {(64, 64)}
    assert max(b.model.batch_sizes) == 2


# ---------------------------------------------------------------- tiling invariance


@pytest.fixture(scope="module")
def sharp_bundle(shallow_bundle):
    """The shallow model with a steep head, so its probabilities span (0, 1) on the test image."""
    import copy

    b = copy.deepcopy(shallow_bundle)
    with torch.no_grad():
        b.model.segmentation_head[0].weight.mul_(300)
        b.model.segmentation_head[0].bias.zero_()
    return b


@pytest.mark.parametrize(("tile", "max_tol", "mean_tol"), [(64, 0.15, 0.006), (128, 0.03, 0.001)])
def test_tiling_does_not_change_the_result(sharp_bundle, make_blobs, tile, max_tol, mean_tol):
    # Sizes are multiples of 32, so the one-tile prediction needs no padding.
    image = make_blobs((192, 224), seed=3)
    whole = predict_array(sharp_bundle, image, tile_size=224, batch_size=1)
    assert whole.std() > 0.1, "the model responds to the image (else the test proves nothing)"
    tiled = predict_array(sharp_bundle, image, tile_size=tile, overlap=0.5, batch_size=4)
    diff = np.abs(tiled - whole)
    # A tile placed one pixel off changes the map by ~0.07 on average; blending noise is far below.
    assert diff.mean() < mean_tol
    assert diff.max() < max_tol


def test_batch_size_does_not_change_the_result(bundle, make_blobs):
    image = make_blobs((100, 130), seed=2)
    a = predict_array(bundle, image, tile_size=64, batch_size=1)
    b = predict_array(bundle, image, tile_size=64, batch_size=5)
    np.testing.assert_allclose(a, b, atol=1e-6)


# ---------------------------------------------------------------- stacks, slices, scale, NaN


def test_current_slice_equals_the_same_slice_of_the_whole_stack(bundle, make_blobs):
    stack = np.stack([make_blobs((50, 70), seed=s) * (s + 1) for s in range(3)])
    whole = predict_array(bundle, stack, tile_size=64)
    for i in range(3):
        prob, events = _collect(predict(bundle, stack, PredictOptions(tile_size=64), slice_index=(i,)))
        assert prob.shape == (50, 70)
        np.testing.assert_array_equal(prob, whole[i])
        progress = [e for e in events if isinstance(e, Progress)]
        assert progress[-1].done == progress[-1].total == len(TileGrid.build(50, 70, 64, 0.25))


def test_slice_index_of_a_4d_stack_and_out_of_range(make_identity):
    b = make_identity()
    stack = _random_image((2, 3, 20, 30))
    whole = predict_array(b, stack, tile_size=32)
    prob = run_to_end(predict(b, stack, PredictOptions(tile_size=32), slice_index=(1, 2)))
    np.testing.assert_array_equal(prob, whole[1, 2])
    for bad in [(2, 0), (0,), (0, -1)]:
        with pytest.raises(InputError, match="does not exist"):
            run_to_end(predict(b, stack, slice_index=bad))


@pytest.mark.parametrize("scale", [0.5, 1.7])
def test_scale_factor_returns_the_original_shape(make_identity, scale):
    b = make_identity()
    image = _random_image((61, 87), seed=6)
    prob, events = _collect(predict(b, image, PredictOptions(scale=scale, tile_size=64)))
    assert prob.shape == (61, 87)
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    assert any(isinstance(e, Notice) and "resized" in e.text for e in events)
    # the model saw the resized image
    expected = TileGrid.build(round(61 * scale), round(87 * scale), 64, 0.25)
    assert b.model.tile_shapes[0] == (expected.tile_h, expected.tile_w)
    # A smooth image is reproduced after the round trip through the resize.
    smooth = np.add.outer(np.linspace(0, 1, 61), np.linspace(0, 1, 87)).astype(np.float32)
    prob = predict_array(b, smooth, scale=scale, tile_size=64)
    np.testing.assert_allclose(prob, _expected_identity(smooth, b.settings.normalization), atol=0.02)


def test_object_size_sets_the_scale(make_identity):
    b = make_identity(object_size=20.0)
    opts = PredictOptions(object_size=40.0).resolved(b)
    assert opts.scale == pytest.approx(0.5)
    prob = predict_array(b, _random_image((64, 64)), object_size=40.0)
    assert prob.shape == (64, 64)
    assert b.model.tile_shapes[0] == (32, 32)


def test_nan_and_inf_input_never_produce_nan_output(bundle, make_identity):
    image = _random_image((70, 90), seed=7)
    image[10:20, 30:50] = np.nan
    image[0, 0] = np.inf
    image[-1, -1] = -np.inf
    prob, events = _collect(predict(bundle, image, PredictOptions(tile_size=64)))
    assert np.isfinite(prob).all() and prob.min() >= 0 and prob.max() <= 1
    assert any(isinstance(e, Notice) and "NaN/Inf" in e.text for e in events)
    # With the identity model, the replaced pixels get the background probability.
    b = make_identity(normalization=Normalization())
    prob = predict_array(b, image, tile_size=64)
    assert np.isfinite(prob).all()
    np.testing.assert_allclose(prob[10:20, 30:50], 0.5, atol=1e-6)  # sigmoid(0): the low percentile


def test_all_nan_image_is_an_input_error(bundle):
    with pytest.raises(InputError, match="no finite"):
        predict_array(bundle, np.full((40, 40), np.nan, np.float32))


def test_constant_image_gives_a_warning_not_a_crash(make_identity):
    b = make_identity(normalization=Normalization())
    prob, events = _collect(predict(b, np.full((40, 50), 7, np.uint16)))
    np.testing.assert_allclose(prob, 0.5, atol=1e-6)
    assert any(isinstance(e, Notice) and e.level == "warning" and "constant" in e.text for e in events)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float64, bool])
def test_dtypes(make_identity, dtype):
    b = make_identity(normalization=Normalization(low=0, high=100))
    raw = np.random.default_rng(8).integers(-300 if dtype == np.int16 else 0, 256, (33, 47))
    image = (raw > 128) if dtype is bool else raw.astype(dtype)
    prob = predict_array(b, image, tile_size=32)
    np.testing.assert_allclose(prob, _expected_identity(image, b.settings.normalization), atol=2e-5)


# ---------------------------------------------------------------- progress and cancel


def test_progress_per_batch(make_identity):
    b = make_identity()
    image = _random_image((100, 150))
    grid = TileGrid.build(100, 150, 32, 0.25)
    _, events = _collect(predict(b, np.stack([image, image]), PredictOptions(tile_size=32, batch_size=3)))
    progress = [e for e in events if isinstance(e, Progress)]
    total = 2 * len(grid)
    assert progress[0].done == 0 and all(p.total == total for p in progress)
    dones = [p.done for p in progress]
    assert dones == sorted(dones) and len(set(dones)) == len(dones), "strictly increasing"
    assert dones[-1] == total
    assert len(progress) - 1 == b.model.calls == 2 * -(-len(grid) // 3), "one event per batch"


def test_closing_the_generator_stops_the_work(make_identity):
    b = make_identity()
    gen = predict(b, _random_image((4, 100, 100)), PredictOptions(tile_size=32, batch_size=1))
    assert b.model.calls == 0, "nothing runs before the first event is requested"
    seen = 0
    for event in gen:
        if isinstance(event, Progress) and event.done > 0:
            seen += 1
            if seen == 3:
                break
    calls = b.model.calls
    assert calls == 3
    gen.close()
    assert b.model.calls == calls, "no forward call after close"
    with pytest.raises(StopIteration):
        next(gen)
    assert b.model.calls == calls


# ---------------------------------------------------------------- out of memory


class _OOMAfter:
    """Wrap a model so that its first ``n`` calls (or calls with too large input) raise OOM."""

    def __init__(self, model, n: int = 0, max_pixels: int | None = None, oom=None):
        self.model, self.n, self.max_pixels = model, n, max_pixels
        self.oom = oom or torch.OutOfMemoryError
        self.calls = 0
        self.failures = 0

    def __call__(self, x):
        self.calls += 1
        too_big = self.max_pixels is not None and x.shape[0] * x.shape[2] * x.shape[3] > self.max_pixels
        if self.failures < self.n or too_big:
            self.failures += 1
            raise self.oom("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.model(x)


def _with_forward(monkeypatch, b, wrapper):
    monkeypatch.setattr(b.model, "forward", wrapper)


def test_out_of_memory_retries_with_a_smaller_batch(monkeypatch, bundle, make_blobs):
    import copy

    b = copy.deepcopy(bundle)
    image = make_blobs((100, 120), seed=9)
    normal = predict_array(b, image, tile_size=64, batch_size=4)
    wrapper = _OOMAfter(b.model.forward, n=2)
    _with_forward(monkeypatch, b, wrapper)
    prob, events = _collect(predict(b, image, PredictOptions(tile_size=64, batch_size=4)))
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == [
        "Out of memory on cpu; retrying with batch size 2.",
        "Out of memory on cpu; retrying with batch size 1.",
    ]
    np.testing.assert_allclose(prob, normal, atol=1e-6)
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total


def test_out_of_memory_then_smaller_tiles_gives_the_same_answer(monkeypatch, make_identity):
    b = make_identity()
    image = _random_image((2, 150, 170), seed=10)
    expected = _expected_identity(image, b.settings.normalization)
    # Too large: a batch of more than one 128-px tile.
    wrapper = _OOMAfter(b.model.forward, max_pixels=128 * 128)
    _with_forward(monkeypatch, b, wrapper)
    prob, events = _collect(predict(b, image, PredictOptions(tile_size=256, batch_size=2)))
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == [
        "Out of memory on cpu; retrying with batch size 1.",
        "Out of memory on cpu; retrying with tile size 128.",
    ]
    np.testing.assert_allclose(prob, expected, atol=2e-5)
    # Progress restarts for the slice and ends complete with the new tile count.
    progress = [e for e in events if isinstance(e, Progress)]
    assert progress[-1].done == progress[-1].total == 2 * len(TileGrid.build(150, 170, 128, 0.25))
    assert any(p.message == "retrying" for p in progress)


def test_out_of_memory_in_the_middle_of_a_stack_restarts_only_that_slice(monkeypatch, make_identity):
    b = make_identity()
    image = _random_image((3, 150, 150), seed=12)
    tiles = len(TileGrid.build(150, 150, 128, 0.25))
    real = b.model.forward
    calls = []

    def forward(x):
        calls.append(x.shape[0])
        if len(calls) == tiles + 2:  # the second slice, after one of its batches succeeded
            raise torch.OutOfMemoryError("out of memory")
        return real(x)

    _with_forward(monkeypatch, b, forward)
    prob, events = _collect(predict(b, image, PredictOptions(tile_size=128, batch_size=1)))
    np.testing.assert_allclose(prob, _expected_identity(image, b.settings.normalization), atol=2e-5)
    progress = [e for e in events if isinstance(e, Progress)]
    assert all(0 <= p.done <= p.total for p in progress)
    retry = next(i for i, p in enumerate(progress) if p.message == "retrying")
    assert progress[retry].done == tiles, "the failed slice starts again from its first tile"
    small = len(TileGrid.build(150, 150, 64, 0.25))
    assert progress[-1].done == progress[-1].total == tiles + 2 * small
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == ["Out of memory on cpu; retrying with tile size 64."]


def test_out_of_memory_on_the_cpu_after_all_retries_is_a_clear_error(monkeypatch, make_identity):
    b = make_identity()
    wrapper = _OOMAfter(b.model.forward, n=10**6)
    _with_forward(monkeypatch, b, wrapper)
    gen = predict(b, _random_image((300, 300)), PredictOptions(tile_size=256, batch_size=4))
    events = []
    with pytest.raises(SegloopError, match="Out of memory even with the smallest tiles on the CPU"):
        for event in gen:
            events.append(event)
    steps = [e.text.split("retrying with ")[1] for e in events if isinstance(e, Notice)]
    assert steps == ["batch size 2.", "batch size 1.", "tile size 128.", f"tile size {MIN_TILE}."]


def test_runtime_error_mentioning_out_of_memory_is_retried(monkeypatch, make_identity):
    b = make_identity()
    wrapper = _OOMAfter(b.model.forward, n=1, oom=RuntimeError)
    _with_forward(monkeypatch, b, wrapper)
    prob = predict_array(b, _random_image((40, 40)), batch_size=2)
    assert prob.shape == (40, 40)


def test_other_errors_are_not_swallowed(monkeypatch, make_identity):
    b = make_identity()

    def broken(x):
        raise ValueError("shape mismatch inside the network")

    _with_forward(monkeypatch, b, broken)
    with pytest.raises(ValueError, match="shape mismatch"):
        predict_array(b, _random_image((40, 40)))


def test_nan_from_the_model_is_a_clear_error(monkeypatch, make_identity):
    b = make_identity()
    _with_forward(monkeypatch, b, lambda x: torch.full_like(x[:, :1], float("nan")))
    with pytest.raises(SegloopError, match="NaN/Inf outputs"):
        predict_array(b, _random_image((40, 40)))


def test_is_out_of_memory():
    assert is_out_of_memory(torch.OutOfMemoryError("x"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("size mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_plan_degrades_on_cuda_then_falls_back_to_the_cpu():
    plan = _Plan(torch.device("cuda"), 256, 4, 32)
    steps = []
    while (step := plan.degrade()) is not None:
        steps.append((step, plan.device.type, plan.tile, plan.batch))
        assert len(steps) < 20
    assert steps[:5] == [
        ("batch size 2", "cuda", 256, 2),
        ("batch size 1", "cuda", 256, 1),
        ("tile size 128", "cuda", 128, 1),
        ("tile size 64", "cuda", 64, 1),
        ("the CPU", "cpu", 256, 4),
    ]
    assert all(device == "cpu" for _, device, _, _ in steps[5:])
    assert (plan.tile, plan.batch) == (MIN_TILE, 1)


def test_plan_on_the_cpu_never_reaches_another_device():
    plan = _Plan(torch.device("cpu"), 64, 1, 32)
    assert plan.degrade() is None
    assert plan.device.type == "cpu"


def test_oom_on_a_gpu_falls_back_to_the_cpu_with_notices(monkeypatch, make_identity):
    """The whole CUDA path, simulated without a GPU: every forward on "cuda" runs out of memory."""
    from napari_segloop.core.inference.devices import DeviceChoice

    b = make_identity()
    image = _random_image((70, 70), seed=11)
    expected = _expected_identity(image, b.settings.normalization)
    monkeypatch.setattr(inference, "resolve_device", lambda req: DeviceChoice(torch.device("cuda"), "cuda"))
    monkeypatch.setattr(inference, "autocast_dtype", lambda device: None)
    real_to = torch.Tensor.to
    placed: list[str] = []

    def tensor_to(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, torch.device):
            placed.append(target.type)
            if target.type == "cuda":
                return self  # pretend to move it
        return real_to(self, *args, **kwargs)

    def forward(x):
        if placed[-1] == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return x.mean(dim=1, keepdim=True)

    monkeypatch.setattr(torch.Tensor, "to", tensor_to)
    monkeypatch.setattr(b.model, "to", lambda device: b.model)
    monkeypatch.setattr(b.model, "forward", forward)
    prob, events = _collect(predict(b, image, PredictOptions(device="cuda", tile_size=128, batch_size=2)))
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices == [
        "Out of memory on cuda; retrying with batch size 1.",
        "Out of memory on cuda; retrying with tile size 64.",
        "Out of memory on cuda; retrying with the CPU.",
    ]
    np.testing.assert_allclose(prob, expected, atol=2e-5)


def test_float64_values_beyond_float32_range_are_bright_not_background():
    """Huge float64 outliers must not overflow to Inf (and become background) before scaling."""
    from napari_segloop.core.bundle import ModelBundle
    from napari_segloop.core.inference.predict import predict_array

    class Identity(torch.nn.Module):
        config = {"in_channels": 1, "classes": 1}  # noqa: RUF012 - test double

        def forward(self, x):
            return x * 4.0

    from napari_segloop.core.bundle import BundleSettings

    bundle = ModelBundle(model=Identity(), settings=BundleSettings(channel_names=["x"]))
    image = np.random.default_rng(0).random((64, 64))
    image[10:20, 10:20] = 1e300
    with np.errstate(over="raise", invalid="raise"):  # underflow to 0 is harmless
        prob = predict_array(bundle, image, tile_size=32, overlap=0.5)
    assert np.isfinite(prob).all()
    # The outliers set the 99.8th percentile: they normalise to 1, everything else to about 0.
    assert np.allclose(prob[12:18, 12:18], 1 / (1 + np.exp(-4.0)), atol=1e-4)
    assert np.allclose(prob[40:, 40:], 0.5, atol=1e-3)


# ---------------------------------------------------------------- images that are not fluorescence


def _he_like(shape=(192, 192), seed=0):
    """A synthetic H&E-like uint8 RGB image and its nuclei labels.

    Beer-Lambert mixing of the hematoxylin and eosin stain vectors (skimage's
    ``hed2rgb``): the hematoxylin amount follows a synthetic fluorescent
    nuclei image (purple nuclei with their texture and dim ones), the eosin is
    a pink, slightly uneven background, lighter in the nuclei.
    """
    from scipy.ndimage import gaussian_filter
    from skimage.color import hed2rgb

    from napari_segloop.core.synthetic import make_nuclei

    fluo, labels = make_nuclei(shape, seed=seed)
    rng = np.random.default_rng(seed)
    lo, hi = np.percentile(fluo, [1, 99.8])
    amount = np.clip((fluo - lo) / (hi - lo), 0, 1)
    eosin = 0.03 * (1 - 0.5 * amount) + gaussian_filter(rng.normal(0, 0.02, shape), 4)
    hed = np.stack([0.005 + 0.14 * amount, np.clip(eosin, 0, None), np.zeros(shape)], axis=-1)
    rgb = hed2rgb(hed) + rng.normal(0, 0.01, (*shape, 3))
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8), labels


def _dice(mask, labels) -> float:
    a, b = mask > 0, labels > 0
    return float(2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)))


@pytest.fixture(scope="module")
def default_bundle():
    from napari_segloop.core.bundle import load_model

    return load_model("default")


def _inverted_warnings(events) -> list[str]:
    return [e.text for e in events if isinstance(e, Notice) and e.level == "warning"
            and "looks inverted" in e.text]


def test_he_image_as_gray_warns_that_it_looks_inverted(default_bundle):
    image, _ = _he_like()
    _, events = _collect(predict(default_bundle, image, PredictOptions(convert="gray")))
    (text,) = _inverted_warnings(events)  # once
    assert "'invert (dark objects on a bright background)' (--convert invert)" in text
    assert "'hematoxylin (H&E / IHC colour images)' (--convert hematoxylin)" in text
    for convert in ("hematoxylin", "invert"):
        _, events = _collect(predict(default_bundle, image, PredictOptions(convert=convert)))
        assert _inverted_warnings(events) == [], convert


def test_inverted_warning_once_for_a_stack(default_bundle):
    image, _ = _he_like((96, 96))
    gray = image.astype(np.float32).mean(axis=-1)
    _, events = _collect(predict(default_bundle, np.stack([gray, gray, gray])))
    assert len(_inverted_warnings(events)) == 1


def test_fluorescent_nuclei_give_no_inverted_warning(default_bundle):
    from napari_segloop.core.synthetic import make_nuclei

    image, labels = make_nuclei((192, 192), seed=0)
    prob, events = _collect(predict(default_bundle, image))
    assert _inverted_warnings(events) == []
    assert _dice(prob > default_bundle.settings.threshold, labels) > 0.85


def test_model_without_polarity_gets_no_inverted_warning(make_identity):
    """Only models of bright objects (with percentile normalisation, which measures the background)."""
    image, _ = _he_like((64, 64))
    for polarity, expected in (("any", 0), ("dark", 0), ("bright", 1)):
        bundle = make_identity(object_polarity=polarity, normalization=Normalization())
        _, events = _collect(predict(bundle, image,
                                     PredictOptions(convert="gray", tile_size=64)))
        assert len(_inverted_warnings(events)) == expected, polarity


@pytest.mark.parametrize("seed", [0, 3])
def test_hematoxylin_segments_he_nuclei_that_gray_misses(default_bundle, seed):
    """The default model (bright nuclei on dark) on an H&E image: gray finds the background."""
    from napari_segloop.core.masks import make_mask

    image, labels = _he_like(seed=seed)
    s = default_bundle.settings
    dice, fraction = {}, {}
    for convert in ("gray", "invert", "hematoxylin"):
        prob = predict_array(default_bundle, image, convert=convert)
        mask = make_mask(prob, s.threshold, s.postprocess)
        dice[convert], fraction[convert] = _dice(mask, labels), float(np.mean(mask > 0))
    # Measured (seeds 0, 3): gray 0.27 / 0.19 (mostly background), invert 0.86 / 0.94,
    # hematoxylin 0.94 / 0.96; nuclei cover 22% of the image.
    assert dice["hematoxylin"] > 0.85, dice
    assert dice["hematoxylin"] > dice["gray"] + 0.45, dice
    assert dice["invert"] > dice["gray"] + 0.35, dice
    assert fraction["gray"] > 0.6, fraction  # the pink background is segmented
    assert abs(fraction["hematoxylin"] - np.mean(labels > 0)) < 0.06, fraction
