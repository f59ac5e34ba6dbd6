"""Channel layout, explicit conversions, dtype-safe normalisation and the NaN policy."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.bundle import Normalization
from napari_segloop.core.errors import InputError
from napari_segloop.core.inference.normalize import detect_channel_axis, normalize_slice, prepare_input

PCT = Normalization()


# ---------------------------------------------------------------- channel layout


@pytest.mark.parametrize(
    ("shape", "model_channels", "rgb", "expected"),
    [
        ((64, 80), 1, None, None),
        ((64, 80, 3), 3, None, 2),
        ((64, 80, 4), 3, None, 2),
        ((64, 80, 3), 1, None, 2),  # RGB found even for a gray model (then refused)
        ((2, 64, 80), 2, None, 0),
        ((5, 2, 64, 80), 2, None, 1),
        ((7, 64, 80), 1, None, None),  # a Z stack
        ((7, 64, 80), 2, None, None),  # no axis of size 2: nothing to guess
        ((7, 64, 3), 1, False, None),  # napari says "not RGB": a stack of narrow images
        ((64, 80, 5), 1, True, 2),
    ],
)
def test_detect_channel_axis(shape, model_channels, rgb, expected):
    assert detect_channel_axis(shape, model_channels, rgb) == expected


def test_gray_2d_image_is_one_slice_with_one_channel():
    img = np.zeros((37, 53), dtype=np.uint8)
    p = prepare_input(img, 1)
    assert p.stack_shape == () and p.spatial_shape == (37, 53)
    assert p.output_shape == (37, 53) and p.n_slices == 1
    assert p.slice_chw(()).shape == (1, 37, 53)
    assert np.shares_memory(p.data, img), "no copy of the user's image"


def test_rgb_for_a_three_channel_model():
    img = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    p = prepare_input(img, 3)
    assert p.channel_axis == 2 and p.output_shape == (20, 30)
    chw = p.slice_chw(())
    np.testing.assert_array_equal(chw, np.moveaxis(img, -1, 0))


def test_rgba_for_a_three_channel_model_drops_alpha_with_a_note():
    img = np.random.default_rng(0).integers(0, 255, (20, 30, 4), dtype=np.uint8)
    p = prepare_input(img, 3)
    assert p.output_shape == (20, 30)
    np.testing.assert_array_equal(p.slice_chw(()), np.moveaxis(img[..., :3], -1, 0))
    assert any("Alpha" in n for n in p.notes)


def test_channels_first_for_a_multichannel_model():
    img = np.random.default_rng(0).random((2, 40, 50))
    p = prepare_input(img, 2)
    assert p.channel_axis == 0 and p.stack_shape == () and p.output_shape == (40, 50)
    np.testing.assert_array_equal(p.slice_chw(()), img)


def test_stack_of_multichannel_images():
    img = np.random.default_rng(0).random((4, 2, 40, 50))
    p = prepare_input(img, 2)
    assert p.stack_shape == (4,) and p.output_shape == (4, 40, 50) and p.n_slices == 4
    np.testing.assert_array_equal(p.slice_chw((3,)), img[3])


def test_z_stack_for_a_gray_model():
    img = np.random.default_rng(0).random((6, 33, 47)).astype(np.float32)
    p = prepare_input(img, 1)
    assert p.stack_shape == (6,) and p.output_shape == (6, 33, 47) and p.n_slices == 6
    np.testing.assert_array_equal(p.slice_chw((2,)), img[2:3])


def test_explicit_channel_axis():
    img = np.random.default_rng(0).random((40, 3, 50))
    p = prepare_input(img, 3, channel_axis=1)
    assert p.output_shape == (40, 50)
    np.testing.assert_array_equal(p.slice_chw(()), np.moveaxis(img, 1, 0))
    with pytest.raises(InputError, match="axis 5"):
        prepare_input(img, 3, channel_axis=5)


@pytest.mark.parametrize(
    ("shape", "model_channels", "found"),
    [((20, 30, 3), 1, "3 channels"), ((20, 30), 3, "1 channel"), ((20, 30, 4), 2, "4 channels"),
     ((20, 30, 3), 2, "3 channels")],
)
def test_channel_mismatch_names_expected_and_found(shape, model_channels, found):
    with pytest.raises(InputError) as info:
        prepare_input(np.zeros(shape, dtype=np.uint8), model_channels)
    message = str(info.value)
    assert f"expects {model_channels} input channel" in message
    assert found in message
    assert str(shape) in message


def test_conversion_gray_averages_rgb_and_drops_alpha():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = prepare_input(rgb, 1, convert="gray")
    np.testing.assert_allclose(p.slice_chw(())[0], rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    assert any("averaged" in n for n in p.notes)
    rgba = np.concatenate([rgb, np.full((20, 30, 1), 255, np.uint8)], axis=-1)
    p = prepare_input(rgba, 1, convert="gray")
    np.testing.assert_allclose(p.slice_chw(())[0], rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    assert any("Alpha" in n for n in p.notes)


def test_conversion_gray_needs_a_gray_model():
    with pytest.raises(InputError, match="expects 3"):
        prepare_input(np.zeros((20, 30, 3)), 3, convert="gray")


def test_conversion_repeat_copies_one_channel_to_every_model_channel():
    img = np.random.default_rng(0).random((20, 30))
    p = prepare_input(img, 3, convert="repeat")
    chw = p.slice_chw(())
    assert chw.shape == (3, 20, 30)
    for c in range(3):
        np.testing.assert_array_equal(chw[c], img)
    with pytest.raises(InputError, match="single-channel"):
        prepare_input(np.zeros((20, 30, 3)), 3, convert="repeat")


def test_conversion_pick_one_channel():
    img = np.random.default_rng(0).random((20, 30, 3))
    p = prepare_input(img, 1, channel=2)
    np.testing.assert_array_equal(p.slice_chw(())[0], img[..., 2])
    with pytest.raises(InputError, match="Channel 3 does not exist"):
        prepare_input(img, 1, channel=3)


def test_unknown_conversion_is_refused():
    with pytest.raises(InputError, match="Unknown conversion"):
        prepare_input(np.zeros((20, 30)), 1, convert="magic")  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(0,), (5,), (0, 10), (10, 0), (3, 0, 10), ()])
def test_empty_and_one_dimensional_arrays_raise(shape):
    with pytest.raises(InputError):
        prepare_input(np.zeros(shape), 1)


@pytest.mark.parametrize("value", [np.array([["a", "b"], ["c", "d"]]), np.zeros((4, 4), dtype=complex)])
def test_non_numeric_images_raise(value):
    with pytest.raises(InputError, match="numeric"):
        prepare_input(value, 1)


# ---------------------------------------------------------------- normalisation


def _check(out):
    assert out.dtype == np.float32
    assert np.isfinite(out).all()


@pytest.mark.parametrize(
    "image",
    [
        np.linspace(0, 255, 64 * 48).reshape(1, 64, 48).astype(np.uint8),
        np.linspace(0, 65535, 64 * 48).reshape(1, 64, 48).astype(np.uint16),
        np.linspace(-30000, 30000, 64 * 48).reshape(1, 64, 48).astype(np.int16),
        np.linspace(-1e6, 1e6, 64 * 48).reshape(1, 64, 48).astype(np.float64),
        np.linspace(0, 1, 64 * 48).reshape(1, 64, 48).astype(np.float16),
        np.linspace(-2**40, 2**40, 64 * 48).reshape(1, 64, 48).astype(np.int64),
    ],
    ids=["uint8", "uint16", "int16", "float64", "float16", "int64"],
)
def test_percentile_normalisation_maps_percentiles_to_0_and_1(image):
    out, warnings = normalize_slice(image, PCT)
    _check(out)
    assert warnings == []
    values = image.astype(np.float64).ravel()
    lo, hi = np.percentile(values, [PCT.low, PCT.high])
    expected = np.clip((image.astype(np.float64) - lo) / (hi - lo), PCT.clip_min, PCT.clip_max)
    np.testing.assert_allclose(out, expected, atol=2e-3)
    assert out.max() <= PCT.clip_max and out.min() >= PCT.clip_min


def test_negative_integers_keep_their_order():
    img = np.array([[[-5, -3, 0, 7]] * 4], dtype=np.int16)
    out, _ = normalize_slice(img, Normalization(low=0, high=100))
    np.testing.assert_allclose(out[0, 0], [0, 2 / 12, 5 / 12, 1], atol=1e-6)


def test_bool_image_is_normalised_to_0_and_1():
    img = np.zeros((1, 20, 20), dtype=bool)
    img[0, 5:10, 5:10] = True
    out, warnings = normalize_slice(img, Normalization(low=0, high=100))
    _check(out)
    assert warnings == []
    np.testing.assert_array_equal(out, img.astype(np.float32))


def test_rare_foreground_with_equal_percentiles_uses_min_and_max():
    img = np.zeros((1, 100, 100), dtype=np.uint8)
    img[0, 0, 0] = 200  # the 99.8th percentile is still 0
    out, warnings = normalize_slice(img, PCT)
    _check(out)
    assert out[0, 0, 0] == pytest.approx(1.0) and out[0, 50, 50] == 0.0
    assert warnings == []


@pytest.mark.parametrize("value", [0, 7, -3.5, 1e6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_constant_image_gives_zeros_and_a_warning(value, dtype):
    img = np.full((1, 32, 40), value, dtype=dtype)
    with np.errstate(all="raise"):  # no division by zero, no invalid value
        out, warnings = normalize_slice(img, PCT)
    _check(out)
    assert (out == 0).all()
    assert len(warnings) == 1 and "constant" in warnings[0]


def test_fixed_normalisation_uses_mean_and_std_per_channel():
    img = np.stack([np.full((8, 8), 10.0), np.full((8, 8), 3.0)])
    out, warnings = normalize_slice(img, Normalization(kind="fixed", mean=[4.0, 1.0], std=[2.0, 0.5]))
    _check(out)
    np.testing.assert_allclose(out[0], 3.0)
    np.testing.assert_allclose(out[1], 4.0)
    assert warnings == []


def test_zscore_normalisation_uses_each_images_mean_and_std_per_channel():
    rng = np.random.default_rng(3)
    img = np.stack([rng.normal(100.0, 20.0, (40, 50)), rng.gamma(2.0, 5.0, (40, 50))])
    norm = Normalization(kind="zscore", eps=1e-3)
    out, warnings = normalize_slice(img, norm)
    _check(out)
    for c in range(2):  # bioimage.io's zero_mean_unit_variance over y and x
        expected = (img[c] - img[c].mean()) / (img[c].std() + 1e-3)
        np.testing.assert_allclose(out[c], expected, rtol=1e-5, atol=1e-5)
    assert warnings == []
    # Another image gets its own statistics: a brighter copy normalises to the same values.
    np.testing.assert_allclose(normalize_slice(img * 3.0 + 7.0, norm)[0], out, atol=1e-3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize(
    "norm", [PCT, Normalization(kind="fixed", mean=[0.0], std=[1.0])], ids=["pct", "fixed"]
)
def test_non_finite_pixels_are_replaced_and_counted(bad, norm):
    rng = np.random.default_rng(0)
    img = rng.random((1, 30, 30)).astype(np.float32)
    img[0, 3:5, 7] = bad
    out, warnings = normalize_slice(img, norm)
    _check(out)
    assert any("2 NaN/Inf" in w for w in warnings)
    # The replaced pixels get the background (low percentile) level, not an extreme value.
    finite = img[np.isfinite(img)]
    lo = np.percentile(finite, norm.low)
    expected_bg = (lo - (norm.mean or [0])[0]) / (norm.std or [1])[0] if norm.kind == "fixed" else 0.0
    np.testing.assert_allclose(out[0, 3:5, 7], expected_bg, atol=1e-2)


def test_all_nan_slice_is_an_input_error():
    with pytest.raises(InputError, match="no finite"):
        normalize_slice(np.full((1, 8, 8), np.nan), PCT)


def test_normalisation_does_not_modify_the_input():
    img = np.random.default_rng(0).random((2, 16, 16))
    img[0, 0, 0] = np.nan
    before = img.copy()
    normalize_slice(img, PCT)
    np.testing.assert_array_equal(img, before)


def test_each_channel_is_normalised_separately():
    img = np.stack([np.linspace(0, 10, 400).reshape(20, 20), np.linspace(0, 5000, 400).reshape(20, 20)])
    out, _ = normalize_slice(img, Normalization(low=0, high=100))
    np.testing.assert_allclose(out[0], out[1], atol=1e-6)


# ---------------------------------------------------------------- invert, hematoxylin, polarity


def _nuclei_he(shape=(64, 64), seed=0):
    """A small H&E-like uint8 RGB image (pink eosin, purple hematoxylin nuclei) and its labels."""
    from skimage.color import hed2rgb

    from napari_segloop.core.synthetic import make_nuclei

    _, labels = make_nuclei(shape, seed=seed)
    nuclei = labels > 0
    hed = np.zeros((*shape, 3))
    hed[..., 0] = np.where(nuclei, 0.1, 0.005)  # hematoxylin: nuclei
    hed[..., 1] = np.where(nuclei, 0.015, 0.03)  # eosin: everything, less in nuclei
    rgb = hed2rgb(hed) + np.random.default_rng(seed).normal(0, 0.01, (*shape, 3))
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8), labels


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_invert_normalises_dark_objects_like_the_positive_image(make_blobs, dtype):
    positive = make_blobs((64, 80))
    positive = (positive - positive.min()) / (positive.max() - positive.min())
    top = {np.uint8: 255, np.uint16: 60000, np.float32: 1.0}[dtype]
    positive = (positive * top).astype(dtype)
    negative = (top - positive).astype(dtype)  # dark objects on a bright background
    p = prepare_input(negative, 1, convert="invert")
    assert any("inverted" in n for n in p.notes)
    chw = p.slice_chw(())
    assert chw.shape == (1, 64, 80) and chw.dtype == np.float32
    expected = normalize_slice(positive[None], PCT)[0]
    # -(top - x) = x - top: a shift, which percentile normalisation removes.
    np.testing.assert_allclose(normalize_slice(chw, PCT)[0], expected, atol=1e-5)
    assert expected[0][positive > np.percentile(positive, 90)].mean() > 0.8  # the objects are bright


def test_invert_reverses_the_order_of_intensities():
    """With symmetric percentiles (low = 100 - high), norm(invert(x)) = 1 - norm(x) exactly."""
    x = np.random.default_rng(0).gamma(2.0, 10.0, (50, 60)).astype(np.float32)
    symmetric = Normalization(low=2.0, high=98.0)
    inverted = normalize_slice(prepare_input(x, 1, convert="invert").slice_chw(()), symmetric)[0][0]
    direct = normalize_slice(x[None], symmetric)[0][0]
    np.testing.assert_allclose(inverted, 1.0 - direct, atol=1e-5)
    order = np.argsort(x.ravel(), kind="stable")
    assert np.all(np.diff(inverted.ravel()[order]) <= 1e-6), "brightest pixels become the darkest"


def test_invert_of_an_rgb_image_averages_to_gray_with_a_note():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    p = prepare_input(rgb, 1, convert="invert")
    chw = p.slice_chw(())
    assert chw.shape == (1, 20, 30)
    np.testing.assert_allclose(chw[0], -rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    assert "3 channels averaged to gray, then inverted." in p.notes
    rgba = np.concatenate([rgb, np.zeros((20, 30, 1), np.uint8)], axis=-1)
    p = prepare_input(rgba, 1, convert="invert")
    np.testing.assert_allclose(p.slice_chw(())[0], -rgb.astype(np.float32).mean(axis=-1), rtol=1e-6)
    assert any("Alpha" in n for n in p.notes)


def test_hematoxylin_makes_one_channel_with_bright_nuclei():
    rgb, labels = _nuclei_he()
    nuclei = labels > 0
    gray = rgb.astype(np.float32).mean(axis=-1)
    assert gray[nuclei].mean() < gray[~nuclei].mean(), "the test image has dark nuclei"
    p = prepare_input(rgb, 1, convert="hematoxylin")
    assert any("hematoxylin" in n for n in p.notes)
    chw = p.slice_chw(())
    assert chw.shape == (1, 64, 64) and chw.dtype == np.float32
    h = chw[0]
    assert h[nuclei].mean() > h[~nuclei].mean() + 5 * h[~nuclei].std()
    # Nearly every nucleus pixel is brighter than nearly every background pixel.
    assert np.percentile(h[nuclei], 5) > np.percentile(h[~nuclei], 95)
    normalised = normalize_slice(chw, PCT)[0][0]
    assert np.median(normalised[~nuclei]) < 0.2 and np.median(normalised[nuclei]) > 0.6
    # A 3-channel model gets the stain repeated; RGBA loses its alpha; floats in [0, 255] work.
    p3 = prepare_input(rgb, 3, convert="hematoxylin")
    np.testing.assert_array_equal(p3.slice_chw(()), np.broadcast_to(h, (3, 64, 64)))
    rgba = np.concatenate([rgb, np.full((64, 64, 1), 255, np.uint8)], axis=-1)
    pa = prepare_input(rgba, 1, convert="hematoxylin")
    assert any("Alpha" in n for n in pa.notes)
    np.testing.assert_allclose(pa.slice_chw(())[0], h, atol=1e-6)
    # Floats beyond 1 are scaled by their maximum (not 255): the same stain up to an offset.
    pf = prepare_input(rgb.astype(np.float32), 1, convert="hematoxylin")
    np.testing.assert_allclose(normalize_slice(pf.slice_chw(()), PCT)[0][0], normalised, atol=0.05)


@pytest.mark.parametrize("shape", [(20, 30), (5, 20, 30)])
def test_hematoxylin_needs_a_colour_image(shape):
    with pytest.raises(InputError) as info:
        prepare_input(np.zeros(shape, dtype=np.uint8), 1, convert="hematoxylin")
    message = str(info.value)
    assert "'hematoxylin (H&E / IHC colour images)' (--convert hematoxylin)" in message
    assert "1 channel" in message and "RGB" in message


def test_mismatch_messages_name_the_conversions_as_the_combo_box():
    with pytest.raises(InputError) as info:
        prepare_input(np.zeros((20, 30, 3), dtype=np.uint8), 1)
    assert "'average to gray' (--convert gray)" in str(info.value)
    with pytest.raises(InputError) as info:
        prepare_input(np.zeros((20, 30), dtype=np.uint8), 3)
    assert "'repeat to the model's channels' (--convert repeat)" in str(info.value)
    with pytest.raises(InputError) as info:
        prepare_input(np.zeros((20, 30, 3), dtype=np.uint8), 3, convert="gray")
    assert "'average to gray' (--convert gray)" in str(info.value)


def test_looks_inverted_for_a_bright_background_only():
    from napari_segloop.core.inference.normalize import compute_stats
    from napari_segloop.core.synthetic import make_nuclei

    image, _ = make_nuclei((96, 96), seed=0)  # bright nuclei on a dark background
    assert not compute_stats(image[None], PCT).looks_inverted()
    bright_background = image.max() - image
    stats = compute_stats(bright_background[None], PCT)
    assert stats.looks_inverted()
    assert float(stats.background[0]) > 0.5
    # The inverted conversion makes it look normal again, and so does hematoxylin for H&E.
    assert not compute_stats(prepare_input(bright_background, 1, convert="invert").slice_chw(()),
                             PCT).looks_inverted()
    rgb, _ = _nuclei_he()
    assert compute_stats(prepare_input(rgb, 1, convert="gray").slice_chw(()), PCT).looks_inverted()
    assert not compute_stats(prepare_input(rgb, 1, convert="hematoxylin").slice_chw(()),
                             PCT).looks_inverted()


def test_real_ihc_image_averaged_to_gray_looks_inverted():
    """scikit-image's IHC image (shipped, no download): much dark tissue, median near the middle,
    but a bright background; gray must warn, hematoxylin must not."""
    from skimage import data

    from napari_segloop.core.inference.normalize import compute_stats

    ihc = data.immunohistochemistry()
    gray = prepare_input(ihc, 1, convert="gray").slice_chw(())
    assert compute_stats(gray, PCT).looks_inverted()
    stain = prepare_input(ihc, 1, convert="hematoxylin").slice_chw(())
    assert not compute_stats(stain, PCT).looks_inverted()


def test_colour_image_for_a_gray_model_names_the_hematoxylin_conversion_too():
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    with pytest.raises(InputError) as info:
        prepare_input(rgb, 1)
    text = str(info.value)
    assert "'average to gray' (--convert gray)" in text
    assert "(--convert hematoxylin) for H&E or IHC colour images" in text
