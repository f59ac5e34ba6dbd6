"""Chunked prediction (core.inference.blocks): blocks with a halo, one normalisation sample, resume."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.bundle.settings import Normalization
from napari_segloop.core.errors import InputError
from napari_segloop.core.events import Notice, Progress, run_to_end
from napari_segloop.core.inference import blocks as blocks_mod
from napari_segloop.core.inference.blocks import ArrayWriter, Layout, plan_blocks, predict_blocks
from napari_segloop.core.inference.ensemble import Ensemble
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.io.lazy import LazyImage
from tests.core.tiny_models import identity_bundle, tiny_bundle

OPTS = PredictOptions(device="cpu", tile_size=64)


class CountingArray:
    """A NumPy array that records every region read from it (a stand-in for a zarr array)."""

    def __init__(self, data: np.ndarray):
        self.data, self.reads = data, []

    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)

    def __getitem__(self, index):
        out = self.data[index]
        self.reads.append(out.size)
        return out


def _image(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _blocks(model, image, threshold=None, events=None, **kw):
    """Predict a 2-D ``image`` block by block into a NumPy array prefilled with a marker."""
    shape = (model.classes, *image.shape) if threshold is None and model.classes > 1 else image.shape
    out = np.full(shape, -1.0, np.float32) if threshold is None else np.full(shape, 255, np.uint8)
    writer = ArrayWriter(out)
    result = run_to_end(predict_blocks(model, LazyImage(image), writer, OPTS, threshold, **kw),
                        None if events is None else events.append)
    return out, result, writer


def test_blocks_cover_each_plane_once_and_their_halo_stays_inside():
    blocks = plan_blocks((2,), 300, 250, 128, 20)
    for z in range(2):
        seen = np.zeros((300, 250), int)
        for b in (b for b in blocks if b.stack == (z,)):
            seen[b.y0:b.y1, b.x0:b.x1] += 1
            assert 0 <= b.ry0 <= b.y0 and b.y1 <= b.ry1 <= 300 and 0 <= b.rx0 <= b.x0 and b.x1 <= b.rx1 <= 250
            assert b.y0 - b.ry0 in (0, 20) and b.ry1 - b.y1 in (0, 20)
        assert (seen == 1).all()
    assert len(blocks) == 2 * 3 * 2


def test_every_pixel_of_a_blocked_prediction_is_the_in_memory_value():
    # The identity network's probability is sigmoid(normalised pixel) whatever the tiling: any
    # misplaced block, wrong halo crop or stale sample shows up as a wrong pixel.
    bundle = identity_bundle()
    image = _image((301, 277))
    ref = run_to_end(predict(bundle, image, OPTS))
    out, result, _ = _blocks(bundle, image, block=96, halo=20)
    assert result.blocks == 4 * 3 and result.skipped == 0
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_a_network_sees_blocks_and_halo_and_differs_from_memory_only_by_blending_noise():
    bundle = tiny_bundle(seed=2)
    image = _image((260, 300), seed=4)
    ref = run_to_end(predict(bundle, image, OPTS))
    one, _, _ = _blocks(bundle, image, block=4096)
    np.testing.assert_array_equal(one, ref)  # one block with the whole-plane sample: identical
    many, _, _ = _blocks(bundle, image, block=128)
    diff = np.abs(many - ref)
    assert diff.mean() < 0.01
    assert ((many > 0.5) != (ref > 0.5)).mean() < 0.01
    assert (many >= 0).all()  # every pixel written


def test_the_image_is_read_block_by_block_never_whole():
    bundle = identity_bundle(normalization=Normalization(kind="percentile"))
    data = CountingArray(_image((400, 400)))
    monkey_windows = pytest.MonkeyPatch()
    monkey_windows.setattr(blocks_mod, "WHOLE_PLANE_PIXELS", 100 * 100)
    try:
        events: list = []
        out = np.zeros((400, 400), np.float32)
        run_to_end(predict_blocks(bundle, LazyImage(data), ArrayWriter(out), OPTS, block=128, halo=16),
                   events.append)
    finally:
        monkey_windows.undo()
    assert max(data.reads) <= (128 + 32) ** 2
    notes = [e.text for e in events if isinstance(e, Notice)]
    assert any("sample of" in t and "windows" in t for t in notes)
    assert sum("Normalisation statistics" in t for t in notes) == 1


def test_every_block_is_normalised_with_the_same_sample():
    # A bright and a dark half: per-block statistics would stretch each half to [0, 1] and the
    # seam would show; one sample of the whole plane keeps the halves apart, as in memory.
    bundle = identity_bundle(normalization=Normalization(kind="percentile"))
    image = _image((128, 256))
    image[:, 128:] += 5
    ref = run_to_end(predict(bundle, image, OPTS))
    out, _, _ = _blocks(bundle, image, block=128, halo=16)
    np.testing.assert_allclose(out, ref, atol=2e-6)
    assert out[:, 128:].mean() > out[:, :128].mean() + 0.15  # per-block statistics: equal means


def test_an_interrupted_run_resumes_where_it_stopped():
    bundle = identity_bundle()
    image = _image((200, 200))
    ref = run_to_end(predict(bundle, image, OPTS))
    out = np.full((200, 200), -1.0, np.float32)
    writer = ArrayWriter(out)
    gen = predict_blocks(bundle, LazyImage(image), writer, OPTS, block=64, halo=8)
    for event in gen:  # stop (a cancelled worker) after the third block
        if isinstance(event, Progress) and event.done > 3000:
            break
    gen.close()
    done = int((out >= 0).sum())
    assert 0 < done < out.size
    events: list = []
    result = run_to_end(predict_blocks(bundle, LazyImage(image), writer, OPTS, block=64, halo=8),
                        events.append)
    assert result.skipped >= 3
    assert any("already written" in e.text for e in events if isinstance(e, Notice))
    np.testing.assert_allclose(out, ref, atol=2e-6)


def test_masks_class_maps_and_class_probabilities_are_written_block_by_block():
    bundle = identity_bundle()
    image = _image((150, 170))
    ref = run_to_end(predict(bundle, image, OPTS))
    mask, _, _ = _blocks(bundle, image, threshold=0.5, block=64, halo=8)
    np.testing.assert_array_equal(mask, (ref > 0.5).astype(np.uint8))
    from napari_segloop.core.bundle import create_model

    k3 = create_model("Unet", "tu-lcnet_050", 1, 3, encoder_depth=3, decoder_channels=(8, 8, 8))
    probs, _, _ = _blocks(k3, image, block=4096)
    np.testing.assert_array_equal(probs, run_to_end(predict(k3, image, OPTS)))
    classes, _, _ = _blocks(k3, image, threshold=0.0, block=4096)
    assert classes.shape == image.shape and classes.max() < 3


def test_stacks_and_channels_keep_their_layout():
    bundle = identity_bundle(in_channels=3)
    image = _image((2, 90, 100, 3))  # Z, Y, X, RGB
    ref = run_to_end(predict(bundle, image, OPTS))
    layout = Layout.of(image.shape, 3)
    assert layout.channel_axis == 3 and layout.stack_shape == (2,) and layout.plane == (90, 100)
    assert layout.output_axes(None) == "ZYX"
    out = np.zeros((2, 90, 100), np.float32)
    run_to_end(predict_blocks(bundle, LazyImage(image), ArrayWriter(out), OPTS, block=64, halo=8))
    np.testing.assert_allclose(out, ref, atol=2e-6)
    cyx = Layout.of((3, 50, 60), 3, channel_axis=0)
    assert cyx.region_channel_axis == 0 and cyx.plane == (50, 60)
    assert Layout.of((4, 5, 50, 60), 1).output_axes("TZYX") == "TZYX"
    with pytest.raises(InputError, match="stack axes"):
        Layout.of((2, 2, 2, 50, 60), 1).output_axes(None)


def test_an_ensemble_is_predicted_block_by_block():
    members = [tiny_bundle(seed=1), tiny_bundle(seed=2)]
    image = _image((100, 120))
    ens = Ensemble(members)
    out, _, _ = _blocks(ens, image, block=4096)
    singles = [run_to_end(predict(m, image, OPTS)) for m in members]
    np.testing.assert_allclose(out, (singles[0] + singles[1]) / 2, atol=1e-6)


def test_bad_block_settings_are_refused():
    with pytest.raises(InputError, match="Block size"):
        plan_blocks((), 10, 10, 0, 2)
    with pytest.raises(InputError, match="at least 2 dimensions"):
        Layout.of((10,), 1)


def test_instance_ids_become_a_foreground_mask_block_by_block_and_it_says_so():
    from napari_segloop.core.masks import PostProcess

    bundle = identity_bundle(postprocess=PostProcess(instances=True), threshold=0.5)
    image = _image((150, 170))
    events: list = []
    mask, _, _ = _blocks(bundle, image, threshold="auto", events=events, block=64, halo=8)
    ref = run_to_end(predict(bundle, image, OPTS)) > 0.5
    np.testing.assert_array_equal(mask, ref.astype(np.uint8))
    assert any("not instance ids" in e.text for e in events if isinstance(e, Notice))
