"""Splitting touching objects at the objects' scale, and where that scale comes from."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_segloop.core.bundle import BundleSettings, PostProcess
from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import evaluate, label_objects, match_objects
from napari_segloop.core.masks import (
    estimate_object_diameter,
    make_mask,
    postprocess,
    resolve_object_diameter,
    split_touching,
)


def _blob_level(shape, centre, diameter, aspect, angle, rng, jag=0.1, noise=0.6) -> np.ndarray:
    """Signed distance (px, > 0 inside) of an ellipse of equivalent ``diameter`` with a jagged outline.

    The outline carries random harmonics 2-8 (up to ``jag`` of the radius) and
    smoothed pixel noise of about ``noise`` px, as a thresholded probability map has.
    """
    a, b = diameter / 2 * math.sqrt(aspect), diameter / 2 / math.sqrt(aspect)
    yy, xx = np.indices(shape, dtype=np.float64)
    dy, dx = yy - centre[0], xx - centre[1]
    u = dx * math.cos(angle) + dy * math.sin(angle)
    v = -dx * math.sin(angle) + dy * math.cos(angle)
    phase = np.arctan2(v / b, u / a)
    wobble = sum(rng.uniform(0, jag) / (k / 2) * np.cos(k * phase + rng.uniform(0, 2 * np.pi))
                 for k in range(2, 9))
    level = (1 + wobble - np.sqrt((u / a) ** 2 + (v / b) ** 2)) * min(a, b)
    return level + ndi.gaussian_filter(rng.normal(0, 1, shape), 1.0) * 2 * noise


def _ellipse(diameter, aspect, rng, jag=0.1, noise=0.6) -> np.ndarray:
    n = int(diameter * math.sqrt(aspect) + 16)
    level = _blob_level((n, n), (n / 2, n / 2), diameter, aspect, rng.uniform(0, np.pi), rng,
                        jag=jag, noise=noise)
    labels, _ = ndi.label(level > 0)
    return labels == np.argmax(np.bincount(labels.ravel())[1:]) + 1  # one component


def _touching_pair(diameter, rng, overlap=0.8) -> tuple[np.ndarray, np.ndarray]:
    """Two roundish blobs whose centres are ``overlap`` times the sum of their radii apart."""
    r1, r2 = diameter / 2 * rng.uniform(0.85, 1.15, size=2)
    c = overlap * (r1 + r2)
    angle = rng.uniform(0, np.pi)
    n = int(c + 2 * max(r1, r2) + 16)
    off = np.array([math.sin(angle), math.cos(angle)]) * c / 2
    f1 = _blob_level((n, n), n / 2 - off, 2 * r1, rng.uniform(1, 1.3), rng.uniform(0, np.pi), rng,
                     jag=0.08, noise=0.5)
    f2 = _blob_level((n, n), n / 2 + off, 2 * r2, rng.uniform(1, 1.3), rng.uniform(0, np.pi), rng,
                     jag=0.08, noise=0.5)
    mask = (f1 > 0) | (f2 > 0)
    truth = np.where(mask, np.where(f1 >= f2, 1, 2), 0)
    return mask, truth


# ----------------------------------------------------------------------------- split touching


@pytest.mark.parametrize("diameter", [12, 20, 32, 48])
def test_isolated_jagged_ellipses_stay_whole(diameter):
    rng = np.random.default_rng(diameter)
    for aspect in (1.0, 1.8, 2.5):
        for _ in range(4):
            m = _ellipse(diameter, aspect, rng)
            assert split_touching(m, object_diameter=diameter).max() == 1, aspect
            assert split_touching(m).max() == 1, aspect  # diameter estimated from the mask


def test_very_jagged_large_ellipses_stay_whole():
    # bumps of a large outline rise more than a pixel: seeds must be deeper for larger objects
    rng = np.random.default_rng(64)
    for aspect in (1.5, 2.0, 2.5, 3.0):
        for _ in range(8):
            m = _ellipse(64, aspect, rng, jag=0.14, noise=0.8)
            assert split_touching(m, object_diameter=64).max() == 1, aspect


@pytest.mark.parametrize("diameter", [16, 24, 32, 48])
def test_touching_pairs_are_split(diameter):
    rng = np.random.default_rng(100 + diameter)
    for overlap in (0.8, 0.9):
        for _ in range(3):
            mask, truth = _touching_pair(diameter, rng, overlap)
            assert label_objects(mask)[1] == 1
            for line in (False, True):
                lab = split_touching(mask, object_diameter=diameter, watershed_line=line)
                pl, n_p = label_objects(lab)
                tl, nt = label_objects(truth)
                assert match_objects(tl, pl, nt, n_p).n_matched == 2, (overlap, line)


def test_a_scene_of_discs_and_pairs_is_split_with_the_estimated_diameter():
    rng = np.random.default_rng(7)
    level = np.full((160, 160), -10.0)
    truth = np.zeros(level.shape, np.int32)
    centres = [(24, 24), (24, 72), (24, 120), (72, 24), (120, 24)]  # isolated
    for k, c in enumerate(centres):
        f = _blob_level(level.shape, c, 22, rng.uniform(1, 2), rng.uniform(0, np.pi), rng, jag=0.06,
                        noise=0.4)
        truth[f > 0] = k + 1
        level = np.maximum(level, f)
    for k, (cy, cx) in enumerate([(80, 80), (126, 110)]):  # touching pairs
        fa = _blob_level(level.shape, (cy, cx - 9), 22, 1.1, 0.3, rng, jag=0.06, noise=0.4)
        fb = _blob_level(level.shape, (cy, cx + 9), 22, 1.1, 1.3, rng, jag=0.06, noise=0.4)
        both = (fa > 0) | (fb > 0)
        truth[both] = np.where(fa >= fb, 10 + 2 * k, 11 + 2 * k)[both]
        level = np.maximum(level, np.maximum(fa, fb))
    mask = (level > 0).astype(np.uint8)
    assert 18 < estimate_object_diameter(mask) < 32
    pp = PostProcess(split_touching=True, instances=True)
    obj = evaluate(mask, truth, postprocess=pp).objects
    assert (obj.n_true, obj.n_pred, obj.n_matched) == (9, 9, 9)
    assert evaluate(mask, truth).objects.n_pred == 7  # the pairs stay merged without splitting


def test_seeds_closer_than_half_a_diameter_make_one_object():
    yy, xx = np.indices((40, 50))
    m = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 49) | ((yy - 20) ** 2 + (xx - 31) ** 2 <= 49)
    assert split_touching(m, object_diameter=14).max() == 2  # two discs of 14 px, 11 px apart
    assert split_touching(m, object_diameter=30).max() == 1  # two lobes of one 30 px object


def test_a_diameter_far_too_large_keeps_touching_objects_together():
    mask, _ = _touching_pair(24, np.random.default_rng(3), 0.85)
    assert split_touching(mask, object_diameter=24).max() == 2
    assert split_touching(mask, object_diameter=100).max() == 1
    with pytest.raises(InputError, match="diameter"):
        split_touching(mask, object_diameter=-1)


# ----------------------------------------------------------------------------- the diameter


def test_estimate_object_diameter():
    m = np.zeros((2, 40, 40), np.uint8)
    m[0, 2:12, 2:12] = 1  # 100 px: 11.28 px across
    m[1, 2:12, 2:12] = 1
    m[1, 20:40, 20:40] = 1  # 400 px: 22.6 px
    m[0, 30, 0] = 1  # a speck is left out
    assert estimate_object_diameter(m) == pytest.approx(math.sqrt(400 / math.pi))
    assert estimate_object_diameter(m, min_size=200) == pytest.approx(math.sqrt(1600 / math.pi))
    cube = np.zeros((10, 10, 10), bool)
    cube[:, :, :] = True
    assert estimate_object_diameter(cube, object_dims=3) == pytest.approx((6000 / math.pi) ** (1 / 3))
    assert estimate_object_diameter(np.zeros((5, 5))) is None


def test_resolve_object_diameter_order():
    mask = np.zeros((30, 30), np.uint8)
    mask[5:15, 5:15] = 1
    settings = BundleSettings(object_size=20.0)
    given = PostProcess(split_touching=True, object_diameter=9.0)
    assert resolve_object_diameter(given, settings, mask) == 9.0
    pp = PostProcess(split_touching=True)
    assert resolve_object_diameter(pp, settings, mask) == 20.0  # the model's object size
    assert resolve_object_diameter(pp, settings, scale=0.5) == 40.0  # in the image before resizing
    assert resolve_object_diameter(pp, BundleSettings(object_size=20.0, scale_factor=2.0)) == 10.0
    assert resolve_object_diameter(pp, BundleSettings(), mask) == pytest.approx(math.sqrt(400 / math.pi))
    assert resolve_object_diameter(pp, None, None) is None
    assert resolve_object_diameter(None, settings) == 20.0


def test_make_mask_uses_the_given_diameter():
    mask, _ = _touching_pair(24, np.random.default_rng(3), 0.85)
    prob = mask.astype(np.float32) * 0.9
    for diameter, n in ((24, 2), (100, 1)):
        pp = PostProcess(split_touching=True, instances=True, object_diameter=diameter)
        assert make_mask(prob, 0.5, pp).max() == n
        assert postprocess(mask.astype(np.uint8), pp).max() == n


def test_predict_auto_splits_at_the_models_object_size_in_the_image():
    from types import SimpleNamespace

    from napari_segloop.core.inference.files import output_for

    yy, xx = np.indices((40, 60))
    pair = ((yy - 20) ** 2 + (xx - 20) ** 2 <= 144) | ((yy - 20) ** 2 + (xx - 40) ** 2 <= 144)
    prob = pair.astype(np.float32) * 0.9
    pp = PostProcess(split_touching=True, instances=True)
    bundle = SimpleNamespace(settings=BundleSettings(object_size=24.0, threshold=0.5, postprocess=pp))
    assert output_for(bundle, prob, "auto").max() == 2
    # resized by 0.25 before the model: objects of 24 px there are 96 px here, one object
    assert output_for(bundle, prob, "auto", scale=0.25).max() == 1
    big = SimpleNamespace(settings=BundleSettings(object_size=100.0, threshold=0.5, postprocess=pp))
    assert output_for(big, prob, "auto").max() == 1
