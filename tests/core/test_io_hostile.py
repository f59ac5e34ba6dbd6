"""No input is silently misread: trailing channel axes, OME/ImageJ axes, FIFOs, bad probability maps."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation.batch import evaluate_files
from napari_segloop.core.evaluation.checks import as_probability, integer_map_notice, prediction_mask
from napari_segloop.core.events import Notice, run_to_end
from napari_segloop.core.inference.files import channel_axis_from_axes, predict_file
from napari_segloop.core.inference.normalize import detect_channel_axis, prepare_input
from napari_segloop.core.inference.predict import PredictOptions, predict
from napari_segloop.core.io.images import expand_inputs, read_image

OPTS = PredictOptions(device="cpu", tile_size=64, batch_size=1)


def _disc(shape=(48, 64)) -> np.ndarray:
    """uint8 gray image: a bright disc on a dark, slightly noisy background."""
    r = np.random.default_rng(0)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = r.normal(20, 4, shape)
    img[(yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < 12**2] += 180
    return np.clip(img, 0, 255).astype(np.uint8)


def _events(gen):
    events: list = []
    result = run_to_end(gen, events.append)
    return result, [e.text for e in events if isinstance(e, Notice)]


# ------------------------------------------------------------ 1. trailing axis of size 1 or 2


@pytest.mark.parametrize(("shape", "expected"), [
    ((48, 64, 1), 2), ((48, 64, 2), 2), ((5, 48, 64, 1), 3), ((48, 64), None), ((3, 48, 64), None),
])
def test_detect_trailing_singleton_and_gray_alpha(shape, expected):
    assert detect_channel_axis(shape, 1) == expected
    assert detect_channel_axis(shape, 1, rgb=False) == expected  # a napari layer that is not RGB


def test_prepare_squeezes_singleton_and_drops_alpha():
    prep = prepare_input(np.zeros((48, 64, 1), np.uint8), 1)
    assert prep.output_shape == (48, 64) and not prep.notes
    prep = prepare_input(np.zeros((5, 48, 64, 1), np.uint8), 1)
    assert prep.output_shape == (5, 48, 64)
    prep = prepare_input(np.zeros((48, 64, 2), np.uint8), 1)
    assert prep.output_shape == (48, 64)
    assert prep.slice_chw(()).shape == (1, 48, 64)
    assert any("Alpha channel dropped" in n for n in prep.notes)
    # a model of 2 channels takes the 2 channels as they are
    prep = prepare_input(np.zeros((48, 64, 2), np.uint8), 2)
    assert prep.slice_chw(()).shape == (2, 48, 64) and not prep.notes
    # explicit conversions drop the alpha too, never average it into the gray
    prep = prepare_input(np.zeros((48, 64, 2), np.uint8), 1, convert="gray")
    assert prep.slice_chw(()).shape == (1, 48, 64)
    assert any("Alpha channel dropped" in n for n in prep.notes)


def test_singleton_channel_for_multichannel_model_is_the_usual_mismatch():
    with pytest.raises(InputError, match=r"expects 3 input channel\(s\).*has 1 channel"):
        prepare_input(np.zeros((48, 64, 1), np.uint8), 3)
    with pytest.raises(InputError, match=r"has 1 channel \(gray \+ alpha\)"):
        prepare_input(np.zeros((48, 64, 2), np.uint8), 3)


def test_gray_alpha_png_predicts_like_the_gray_image(tmp_path, bundle):
    gray = _disc()
    la = np.stack([gray, np.full_like(gray, 255)], axis=-1)
    src = tmp_path / "la.png"
    Image.fromarray(la).save(src)
    assert Image.open(src).mode == "LA"
    dst = tmp_path / "out.tif"
    _, notes = _events(predict_file(bundle, src, dst, OPTS))
    out = tifffile.imread(dst)
    assert out.shape == gray.shape
    ref = run_to_end(predict(bundle, gray, OPTS))
    np.testing.assert_allclose(out, ref, atol=1e-6)
    assert (out > 0.5).mean() < 0.99  # the alpha (255 everywhere) is not read as foreground
    assert any("Alpha channel dropped" in n for n in notes)


@pytest.mark.parametrize("suffix", [".tif", ".npy"])
def test_singleton_channel_files_predict_to_2d(tmp_path, bundle, suffix):
    gray = _disc()
    src = tmp_path / f"img{suffix}"
    if suffix == ".tif":
        tifffile.imwrite(src, gray[..., None])
    else:
        np.save(src, gray[..., None])
    assert read_image(src).shape == (48, 64, 1)
    dst = tmp_path / "out.tif"
    _events(predict_file(bundle, src, dst, OPTS, object_dims=None))
    out = tifffile.imread(dst)
    assert out.shape == (48, 64)
    np.testing.assert_allclose(out, run_to_end(predict(bundle, gray, OPTS)), atol=1e-6)
    _events(predict_file(bundle, src, dst, OPTS, threshold="auto", object_dims=None))
    assert tifffile.imread(dst).shape == (48, 64)


def test_singleton_channel_stack_predicts_to_zyx(tmp_path, bundle):
    stack = np.stack([_disc(), _disc()[::-1]])[..., None]  # (Z, H, W, 1)
    src = tmp_path / "stack.tif"
    tifffile.imwrite(src, stack)
    dst = tmp_path / "out.tif"
    _events(predict_file(bundle, src, dst, OPTS, object_dims=None))
    out = tifffile.imread(dst)
    assert out.shape == (2, 48, 64)
    np.testing.assert_allclose(out[1], run_to_end(predict(bundle, _disc()[::-1], OPTS)), atol=1e-6)


# ------------------------------------------------------------ 2. OME-TIFF / ImageJ axes


@pytest.mark.parametrize(("axes", "shape", "expected"), [
    ("CZYX", (2, 3, 8, 8), 0), ("ZCYX", (3, 2, 8, 8), 1), ("YXC", (8, 8, 2), 2),
    ("YXS", (8, 8, 3), 2), ("TYX", (2, 8, 8), None), ("QYX", (2, 8, 8), "unknown"),
    (None, (2, 8, 8), "unknown"), ("ZYX", (2, 8, 9, 9), "unknown"),
])
def test_channel_axis_from_axes(axes, shape, expected):
    assert channel_axis_from_axes(axes, shape, 2) == expected


def _two_channel_stack(depth: int = 3) -> np.ndarray:
    """(Z=depth, C=2, Y, X): channel 0 bright discs, channel 1 noise."""
    r = np.random.default_rng(1)
    return np.stack([np.stack([_disc(), r.integers(0, 30, (48, 64)).astype(np.uint8)])
                     for _ in range(depth)])


@pytest.mark.parametrize("depth", [3, 2])
@pytest.mark.parametrize("kind", ["ome_czyx", "ome_zcyx", "imagej_zcyx"])
def test_tiff_axes_choose_the_channel_axis(tmp_path, make_bundle, kind, depth):
    """With Z == C == 2, the shape alone would take Z (the first axis of size 2) for C."""
    bundle2 = make_bundle(in_channels=2, depth=3)
    zcyx = _two_channel_stack(depth)
    src = tmp_path / "img.ome.tif"
    if kind == "ome_czyx":
        tifffile.imwrite(src, np.moveaxis(zcyx, 1, 0), ome=True, metadata={"axes": "CZYX"})
    elif kind == "ome_zcyx":
        tifffile.imwrite(src, zcyx, ome=True, metadata={"axes": "ZCYX"})
    else:
        tifffile.imwrite(src, zcyx, imagej=True, metadata={"axes": "ZCYX"})
    dst = tmp_path / "out.tif"
    _events(predict_file(bundle2, src, dst, OPTS))
    out = tifffile.imread(dst)
    assert out.shape == (depth, 48, 64)
    ref = run_to_end(predict(bundle2, zcyx, PredictOptions(**{**OPTS.__dict__, "channel_axis": 1})))
    np.testing.assert_allclose(out, ref, atol=1e-6)


def test_tiff_channel_axis_mismatch_names_the_file_axes(tmp_path, bundle):
    src = tmp_path / "img.ome.tif"
    tifffile.imwrite(src, np.moveaxis(_two_channel_stack(), 1, 0), ome=True, metadata={"axes": "CZYX"})
    with pytest.raises(InputError, match=r"2 channels \(axis 0\).*file's axes CZYX"):
        _events(predict_file(bundle, src, tmp_path / "out.tif", OPTS))


def test_time_axes_are_not_channels(tmp_path, make_bundle):
    bundle2 = make_bundle(in_channels=2, depth=3)
    src = tmp_path / "t.tif"
    tifffile.imwrite(src, np.stack([_disc(), _disc()]), metadata={"axes": "TYX"})
    with pytest.raises(InputError, match="file's axes TYX give no channel axis"):
        _events(predict_file(bundle2, src, tmp_path / "out.tif", OPTS))


# ------------------------------------------------------------ 4. FIFOs and other special files


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_is_refused_without_opening(tmp_path):
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            read_image(fifo)
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(30)
    if thread.is_alive():  # blocked in open(): give it a writer, then EOF, and fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail("read_image blocked on a FIFO")
    assert isinstance(outcome[0], InputError)
    assert "pipe.tif: is not a regular file (a FIFO or pipe); give an image file." in str(outcome[0])


@pytest.mark.skipif(not os.path.exists("/dev/null") or sys.platform == "win32", reason="no /dev/null")
def test_device_is_refused(tmp_path):
    link = tmp_path / "null.npy"
    link.symlink_to("/dev/null")
    with pytest.raises(InputError, match=r"is not a regular file \(a device\)"):
        read_image(link)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_fifo_in_a_folder_is_reported_not_silently_left_out(tmp_path):
    tifffile.imwrite(tmp_path / "a.tif", _disc())
    os.mkfifo(tmp_path / "b.tif")
    (tmp_path / "c.tif").symlink_to(tmp_path / "missing.tif")
    files, skipped = expand_inputs([tmp_path])
    assert files == [tmp_path / "a.tif"]
    assert skipped == [f"{tmp_path / 'b.tif'}: skipped (not a regular file)",
                       f"{tmp_path / 'c.tif'}: skipped (not a regular file)"]


def test_folder_and_missing_file_messages(tmp_path):
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "nope.tif")


# ------------------------------------------------------------ 5. probability maps


@pytest.mark.parametrize(("bad", "count"), [(np.inf, "2 infinite"), (-np.inf, "2 infinite"),
                                            (np.nan, "2 NaN")])
def test_non_finite_probabilities_are_refused(bad, count):
    prob = np.full((8, 8), 0.3, np.float32)
    prob[0, :2] = bad
    with pytest.raises(InputError, match=f"contains {count} value"):
        as_probability(prob)
    with pytest.raises(InputError, match=count):
        prediction_mask(prob, 0.5)


def test_non_finite_message_says_where():
    prob = np.full((2, 8, 8), 0.3, np.float32)
    prob[1, 4, 5] = np.nan
    prob[1, 6, 0] = np.inf
    with pytest.raises(InputError, match=r"contains 1 NaN and 1 infinite value\(s\) of 128 "
                                         r"\(the first at pixel \(1, 4, 5\)\)"):
        as_probability(prob)


def test_float64_beyond_float32_is_not_called_infinite():
    prob = np.full((8, 8), 0.5)
    prob[2, 2] = 1e300
    with pytest.raises(InputError, match=r"values from 0.5 to 1e\+300, which are not probabilities"):
        as_probability(prob, unit_range=True)
    with pytest.raises(InputError, match="beyond the range of float32"):
        as_probability(prob)


@pytest.mark.parametrize(("lo", "hi", "hint"), [(-3.2, 4.1, "logits\\? apply a sigmoid"),
                                                (0.0, 255.0, "divide by 255")])
def test_probabilities_outside_unit_range_are_refused(lo, hi, hint):
    prob = np.linspace(lo, hi, 64, dtype=np.float32).reshape(8, 8)
    with pytest.raises(InputError, match=f"values from {lo:.4g} to {hi:.4g}.*{hint}"):
        as_probability(prob, unit_range=True)
    with pytest.raises(InputError, match=hint):
        prediction_mask(prob, 0.5)
    assert as_probability(prob).dtype == np.float32  # a curve over an explicit value range


def test_probabilities_within_tolerance_are_accepted():
    prob = np.array([[0.0, 1.0 + 5e-7], [-5e-7, 0.5]], np.float32)
    assert as_probability(prob, unit_range=True).dtype == np.float32


def _smooth_uint8_map(shape=(48, 64)) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = np.hypot(yy - shape[0] / 2, xx - shape[1] / 2)
    return np.clip(255 / (1 + np.exp((d - 14) / 4)) + 3, 0, 255).astype(np.uint8)


def test_integer_map_notice_tells_scaled_probabilities_from_labels():
    assert "divide it by 255" in integer_map_notice(_smooth_uint8_map())
    labels = np.zeros((64, 64), np.uint16)
    for i in range(40):  # dense instance labels: flat regions, many ids
        labels[(i // 8) * 8:(i // 8) * 8 + 8, (i % 8) * 8:(i % 8) * 8 + 8] = i + 1
    assert integer_map_notice(labels) is None
    assert integer_map_notice((labels > 0).astype(np.uint8)) is None


def test_evaluate_files_notices_uint8_probability_map(tmp_path):
    pred = _smooth_uint8_map()
    truth = (pred > 127).astype(np.uint8)
    tifffile.imwrite(tmp_path / "p.tif", pred)
    tifffile.imwrite(tmp_path / "t.tif", truth)
    report, notes = _events(evaluate_files(tmp_path / "p.tif", tmp_path / "t.tif"))
    assert report.rows  # still evaluated, as a mask
    assert any("read as a mask or instance labels" in n and "float32" in n for n in notes)


def test_evaluate_files_refuses_infinite_map_as_a_failure(tmp_path):
    prob = np.full((16, 16), 0.2, np.float32)
    prob[3, 3] = np.inf
    tifffile.imwrite(tmp_path / "p.tif", prob)
    tifffile.imwrite(tmp_path / "t.tif", np.zeros((16, 16), np.uint8))
    report, _ = _events(evaluate_files(tmp_path / "p.tif", tmp_path / "t.tif", threshold="otsu"))
    assert not report.rows
    assert "1 infinite value" in report.failures[0]["error"]


def test_read_image_keeps_plain_images(tmp_path):
    gray = _disc()
    Image.fromarray(gray).save(tmp_path / "g.png")
    Image.fromarray(np.stack([gray] * 3, -1)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "g.png").shape == gray.shape
    assert read_image(tmp_path / "c.jpg").shape == (*gray.shape, 3)
    assert isinstance(read_image(Path(tmp_path / "g.png")), np.ndarray)
