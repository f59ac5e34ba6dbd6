"""Behaviour of the synthetic nuclei generator that users and the training rely on."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_segloop.core.synthetic import make_nuclei, random_params


def _touching_pairs(labels: np.ndarray) -> int:
    """Number of pixels where two different objects are 4-neighbours."""
    a, b = labels[:, :-1], labels[:, 1:]
    horizontal = (a > 0) & (b > 0) & (a != b)
    a, b = labels[:-1, :], labels[1:, :]
    vertical = (a > 0) & (b > 0) & (a != b)
    return int(horizontal.sum() + vertical.sum())


def test_shape_and_dtypes():
    image, labels = make_nuclei((128, 96), seed=3)
    assert image.shape == (128, 96)
    assert labels.shape == (128, 96)
    assert image.dtype == np.float32
    assert labels.dtype == np.int32
    assert np.isfinite(image).all()


def test_same_seed_same_result():
    a_img, a_lab = make_nuclei((128, 128), seed=7, n_objects=15)
    b_img, b_lab = make_nuclei((128, 128), seed=7, n_objects=15)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)


def test_different_seeds_differ():
    a_img, a_lab = make_nuclei((128, 128), seed=1)
    b_img, b_lab = make_nuclei((128, 128), seed=2)
    assert not np.array_equal(a_img, b_img)
    assert not np.array_equal(a_lab, b_lab)


def test_labels_are_sequential_instance_ids():
    for seed in range(10):
        _, labels = make_nuclei((128, 128), seed=seed, density=0.6, cluster=0.8)
        ids = np.unique(labels)
        np.testing.assert_array_equal(ids, np.arange(labels.max() + 1))
    _, labels = make_nuclei((256, 256), seed=0, n_objects=30)
    ids = np.unique(labels)
    assert ids[0] == 0
    np.testing.assert_array_equal(ids, np.arange(labels.max() + 1))
    assert labels.max() >= 25
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes[sizes > 0].min() >= 3


def test_objects_are_bright_on_dark_background():
    image, labels = make_nuclei((256, 256), seed=5, dim_fraction=0.0)
    inside = image[labels > 0].mean()
    outside = image[labels == 0].mean()
    assert inside > 2 * outside
    # Object by object: each object is brighter than the background around it.
    means = ndi.mean(image, labels, index=np.arange(1, labels.max() + 1))
    assert np.mean(means > outside) > 0.95


def test_requested_object_count_roughly_honoured():
    for n in (5, 20, 40):
        _, labels = make_nuclei((256, 256), seed=n, n_objects=n, radius=(5, 8))
        count = len(np.unique(labels)) - 1
        assert 0.8 * n <= count <= n


def test_no_objects_gives_background_only():
    image, labels = make_nuclei((64, 64), seed=0, n_objects=0)
    assert labels.max() == 0
    assert image.max() < 0.5 * 1000  # far below an object's brightness (max_value)


def test_dense_images_have_touching_objects_sparse_do_not_need_to():
    _, dense = make_nuclei((256, 256), seed=4, density=0.5, cluster=0.8,
                           separation=(0.7, 0.9))
    assert _touching_pairs(dense) > 0
    _, sparse = make_nuclei((256, 256), seed=4, n_objects=5, separation=(1.5, 2.0),
                            cluster=0.0)
    assert _touching_pairs(sparse) == 0


def test_radius_controls_object_size():
    _, small = make_nuclei((256, 256), seed=2, n_objects=20, radius=(4, 5))
    _, large = make_nuclei((256, 256), seed=2, n_objects=20, radius=(14, 16))
    small_area = np.median(np.bincount(small.ravel())[1:])
    large_area = np.median(np.bincount(large.ravel())[1:])
    assert large_area > 5 * small_area
    assert 20 < small_area < 130


def test_noise_and_blur_settings_change_the_image():
    clean, labels = make_nuclei((128, 128), seed=9, photons=0, read_noise=0, blur=(0, 0))
    noisy, labels2 = make_nuclei((128, 128), seed=9, photons=5, read_noise=0.05)
    np.testing.assert_array_equal(labels, labels2)  # looks do not move objects
    background = labels == 0
    assert noisy[background].std() > clean[background].std()


def test_quantize_and_intensity_range():
    image, _ = make_nuclei((128, 128), seed=1, max_value=200, offset=10, quantize=True)
    assert np.array_equal(image, np.round(image))
    assert image.min() >= 0 and image.max() <= 410


@pytest.mark.parametrize("seed", range(5))
def test_random_params_give_valid_images(seed):
    rng = np.random.default_rng(seed)
    kwargs = random_params(rng)
    image, labels = make_nuclei((96, 96), seed=seed, **kwargs)
    assert image.shape == labels.shape == (96, 96)
    assert np.isfinite(image).all()
    assert random_params(np.random.default_rng(seed)) == kwargs


def test_fast_enough():
    make_nuclei((64, 64), seed=0)  # warm up imports
    start = time.perf_counter()
    make_nuclei((512, 512), seed=0)
    assert time.perf_counter() - start < 1.0


def test_invalid_arguments():
    with pytest.raises(ValueError):
        make_nuclei((0, 10))
    with pytest.raises(ValueError):
        make_nuclei((32, 32), radius=(5, 2))


def test_simulated_scribbles_stay_inside_their_region_and_away_from_boundaries():
    from scipy import ndimage as ndi

    from napari_segloop.core.synthetic import make_nuclei, simulate_scribbles

    _, labels = make_nuclei((256, 256), seed=3)
    scr = simulate_scribbles(labels, (slice(None), slice(0, 100)), fraction=0.01, seed=1)
    assert scr.dtype == np.uint8 and set(np.unique(scr)) == {0, 1, 2}
    assert not scr[:, 100:].any()
    painted = (scr > 0).mean()
    assert 0.006 <= painted <= 0.02  # about 1 %
    assert (labels[scr == 1] > 0).all() and (labels[scr == 2] == 0).all()
    near_edge = ndi.binary_dilation(labels > 0, iterations=2) & ~ndi.binary_erosion(labels > 0, iterations=1)
    assert not (scr > 0)[near_edge].any()
    np.testing.assert_array_equal(scr, simulate_scribbles(labels, (slice(None), slice(0, 100)),
                                                          fraction=0.01, seed=1))


def test_phase_contrast_is_repeatable():
    from napari_segloop.core.synthetic import make_phase_contrast

    a, la = make_phase_contrast((128, 128), seed=5)
    b, lb = make_phase_contrast((128, 128), seed=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert a.dtype == np.float32 and la.dtype == np.int32
