"""Annotated planes, the held-out split and patches (core.training.data)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.bundle import Normalization
from napari_segloop.core.errors import InputError
from napari_segloop.core.training.data import VAL_BLOCK, TrainingData, TrainingPair


def _image(shape=(256, 256), seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(100, 10, shape).astype(np.float32)


def _data(pairs, mode="scribbles", **kw):
    data = TrainingData(pairs, mode, 1, Normalization(), **kw)
    data.build()
    return data


def _scribbles(shape=(256, 256)):
    lab = np.zeros(shape, np.uint8)
    lab[10:200:7, 10:240] = 1
    lab[13:200:7, 10:240] = 2
    return lab


def test_held_out_pixels_never_reach_the_training_loss():
    data = _data([TrainingPair(_image(), _scribbles())])
    assert data.held_out
    plane = data.planes[0]
    assert plane.val.any()
    assert not (plane.weight[plane.val] > 0).any()
    assert not (plane.keep[plane.val] > 0).any()
    # The held-out pixels are whole blocks of the grid, not scattered pixels.
    ys, xs = np.nonzero(plane.val)
    blocks = {(y // VAL_BLOCK, x // VAL_BLOCK) for y, x in zip(ys, xs, strict=True)}
    for by, bx in blocks:
        sl = (slice(by * VAL_BLOCK, (by + 1) * VAL_BLOCK), slice(bx * VAL_BLOCK, (bx + 1) * VAL_BLOCK))
        assert not (plane.weight[sl] > 0).any()
    assert 0 < len(data.windows)
    # Validation windows score exactly the held-out pixels.
    scored = sum(int(w.mask.sum()) for w in data.windows)
    assert scored == int(plane.val.sum())


def test_painting_more_never_moves_training_pixels_into_validation():
    lab = _scribbles()
    first = _data([TrainingPair(_image(), lab)])
    trained = first.planes[0].weight > 0
    more = lab.copy()
    more[205:250:5, 20:200] = 2
    second = _data([TrainingPair(_image(), lab)])
    second.build([more])
    assert not (second.planes[0].val & trained).any()


def test_a_single_stroke_cannot_be_split_and_says_so():
    lab = np.zeros((128, 128), np.uint8)
    lab[5, 5:20] = 1
    lab[8, 5:20] = 2
    data = _data([TrainingPair(_image((128, 128)), lab)])
    assert not data.held_out
    assert data.windows  # validated on the training annotations


def test_labels_of_another_shape_are_refused_with_both_shapes():
    with pytest.raises(InputError, match=r"\(100, 100\).*\(256, 256\)"):
        TrainingData([TrainingPair(_image(), np.zeros((100, 100), np.uint8))], "dense", 1, Normalization())


def test_no_labels_and_one_class_are_refused():
    with pytest.raises(InputError, match="no scribbles"):
        _data([TrainingPair(_image(), np.zeros((256, 256), np.uint8))])
    only_fg = np.zeros((256, 256), np.uint8)
    only_fg[50:60, 50:60] = 1
    with pytest.raises(InputError, match=r"only one class.*background \(2\)"):
        _data([TrainingPair(_image(), only_fg)])
    with pytest.raises(InputError, match="only one class"):
        _data([TrainingPair(_image(), np.ones((256, 256), np.uint8))], mode="dense")


def test_only_annotated_slices_of_a_stack_are_prepared():
    stack = np.stack([_image(seed=s) for s in range(4)])
    lab = np.zeros(stack.shape, np.uint8)
    lab[2] = _scribbles()
    seen = []

    def teacher(pair, index):
        seen.append(index)
        return np.full((256, 256), 0.5, np.float32)

    data = _data([TrainingPair(stack, lab)], teacher=teacher)
    assert [p.index for p in data.planes] == [(2,)]
    assert set(seen) == {(2,)}


def test_patches_are_centred_on_annotations_and_keep_the_shapes():
    lab = np.zeros((256, 256), np.uint8)
    lab[200:210, 200:210] = 1
    lab[20:30, 20:30] = 2
    data = _data([TrainingPair(_image(), lab)], teacher=lambda p, i: np.zeros((256, 256), np.float32))
    rng = np.random.default_rng(0)
    b = data.sample(rng, 16, 32, augment=True, clip=(-0.5, 1.5))
    assert b.image.shape == (16, 1, 32, 32) and b.target.shape == (16, 1, 32, 32)
    assert b.teacher is not None and b.keep is not None
    assert b.image.min() >= -0.5 and b.image.max() <= 1.5
    with_labels = (b.weight.reshape(16, -1) > 0).any(axis=1).mean()
    assert with_labels >= 0.6  # most patches hold annotated pixels (a few are random on purpose)
    # Weight and keep never overlap: a pixel is supervised or kept, not both.
    assert not ((b.weight > 0) & (b.keep > 0)).any()


def test_images_normalised_as_for_inference():
    img = _image()
    data = _data([TrainingPair(img * 3 + 1000, _scribbles())])
    ref = _data([TrainingPair(img, _scribbles())])
    np.testing.assert_allclose(data.planes[0].image, ref.planes[0].image, atol=1e-4)


def test_held_out_annotations_always_hold_both_classes():
    """With background only held out, a model predicting nothing would score Dice 1.0."""
    for seed in range(12):
        lab = np.zeros((256, 256), np.uint8)
        lab[20:30, 20:30] = 1  # the objects sit in one block ...
        lab[200:250:6, 10:250] = 2  # ... the background strokes in many
        data = _data([TrainingPair(_image(), lab)], seed=seed)
        if not data.held_out:
            continue  # nothing held out is allowed (and said); one class held out is not
        plane = data.planes[0]
        held = plane.target[plane.val]
        assert (held > 0.5).any() and (held <= 0.5).any(), seed
        trained = plane.target[plane.weight > 0]
        assert (trained > 0.5).any() and (trained <= 0.5).any(), seed


def test_two_object_blocks_give_one_to_each_side():
    lab = np.zeros((256, 256), np.uint8)
    lab[20:30, 20:30] = 1
    lab[150:160, 150:160] = 1
    lab[200:250:6, 10:250] = 2
    held = [_data([TrainingPair(_image(), lab)], seed=s).held_out for s in range(8)]
    assert all(held)


def test_validation_pairs_are_held_out_whole_and_replace_the_split():
    train_pair = TrainingPair(_image(seed=1), _scribbles(), "train")
    val_pair = TrainingPair(_image(seed=2), _scribbles(), "check", validation=True)
    data = _data([train_pair, val_pair])
    assert data.held_out
    train_plane, val_plane = data.planes
    assert not train_plane.val.any()  # no block of the training image is held out
    assert (train_plane.weight > 0).sum() == (_scribbles() > 0).sum()
    assert not (val_plane.weight > 0).any()  # nothing of the validation image is trained on
    assert val_plane.val.sum() == (_scribbles() > 0).sum()
    assert {w.plane for w in data.windows} == {1}
    assert data.train_planes == [0]


def test_validation_pairs_need_labels_and_a_training_pair():
    with pytest.raises(InputError, match="not only for validation"):
        TrainingData([TrainingPair(_image(), _scribbles(), validation=True)], "scribbles", 1,
                     Normalization())
    empty = np.zeros((256, 256), np.uint8)
    with pytest.raises(InputError, match="validation images need painted labels"):
        _data([TrainingPair(_image(), _scribbles()), TrainingPair(_image(), empty, validation=True)])


def test_max_val_blocks_caps_the_scored_windows():
    pairs = [TrainingPair(_image(seed=1), _scribbles()),
             TrainingPair(_image(seed=2), _scribbles(), validation=True)]
    assert len(_data(pairs).windows) == 16
    assert len(_data(pairs, max_val_blocks=5).windows) == 5


def test_zoom_range_rescales_the_patches():
    """A zoom range far from 1 changes the scale of what the patch shows."""
    lab = np.zeros((256, 256), np.uint8)
    lab[:, :] = 2
    for y in range(0, 256, 32):
        lab[y:y + 4] = 1  # a 4-px band every 32 rows
    data = _data([TrainingPair(_image(), lab)], mode="scribbles", val_fraction=0.0)
    rng = np.random.default_rng(0)

    def edges(batch) -> float:  # band edges per patch (the bands may be rotated)
        t = batch.target
        return float(np.abs(np.diff(t, axis=2)).sum() + np.abs(np.diff(t, axis=3)).sum())

    plain = edges(data.sample(rng, 32, 64, augment=True, zoom_range=(1.0, 1.0)))
    shrunk = edges(data.sample(rng, 32, 64, augment=True, zoom_range=(0.5, 0.5)))
    # Half of the patches are rescaled: by 0.5 they show twice the bands.
    assert 1.2 * plain < shrunk < 2.0 * plain


def test_prefetched_batches_are_the_batches_drawn_in_order():
    from napari_segloop.core.training.data import BatchPrefetcher

    data = _data([TrainingPair(_image(), _scribbles())])
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    plain = [data.sample(rng_a, 4, 32) for _ in range(4)]
    prefetch = BatchPrefetcher(lambda: data.sample(rng_b, 4, 32))
    try:
        fetched = [prefetch.get() for _ in range(4)]
    finally:
        prefetch.close()
    for a, b in zip(plain, fetched, strict=True):
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.weight, b.weight)


def test_a_discarded_batch_is_finished_first_and_its_error_not_raised():
    import threading
    import time

    from napari_segloop.core.training.data import BatchPrefetcher

    calls = []
    done = threading.Event()

    def draw():
        calls.append(1)
        if len(calls) == 2:  # the prefetched one
            time.sleep(0.2)
            done.set()
            raise RuntimeError("drawn from old labels")
        return len(calls)

    prefetch = BatchPrefetcher(draw)
    assert prefetch.get() == 1
    prefetch.discard()
    assert done.is_set()  # discard waited for the running draw
    assert prefetch.get() == 3
    prefetch.close()
    assert not any(t.name.startswith("segloop-batches") for t in threading.enumerate())
