"""OME-Zarr outputs (core.io.omezarr): valid NGFF 0.4, multiscale levels, atomic chunks, resume."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from napari_segloop.core.errors import InputError
from napari_segloop.core.io.omezarr import downsample, ngff_axes, open_output, pyramid_shapes

FP = {"model": "abc", "input": "x.tif"}


def _out(path, shape=(300, 200), kind="probability", fingerprint=FP, **kw):
    kw.setdefault("axes", "YX" if len(shape) == 2 else "ZYX")
    return open_output(path, shape, np.float32 if kind == "probability" else np.uint8, chunk=64,
                       fingerprint=fingerprint, kind=kind, **kw)


def test_the_output_is_a_valid_ome_zarr_image_with_levels_that_halve(tmp_path):
    from ome_zarr_models.v04 import Image

    out = _out(tmp_path / "o.ome.zarr", (2, 300, 200), scale=(3.0, 0.5, 0.5), units=("micrometer",) * 3)
    data = np.random.default_rng(0).random((2, 300, 200)).astype(np.float32)
    out.write((slice(0, 2), slice(0, 300), slice(0, 200)), data)
    assert not out.complete
    list(out.finish())
    assert out.complete
    group = zarr.open_group(str(tmp_path / "o.ome.zarr"), mode="r")
    image = Image.from_zarr(group)  # validates the NGFF 0.4 metadata and the arrays
    ms = image.attributes.multiscales[0]
    assert [a.name for a in ms.axes] == ["z", "y", "x"]
    scales = [d.coordinateTransformations[0].scale for d in ms.datasets]
    assert scales == [[3.0, 0.5, 0.5], [3.0, 1.0, 1.0], [3.0, 2.0, 2.0], [3.0, 4.0, 4.0]]
    assert [group[str(k)].shape for k in range(4)] == pyramid_shapes((2, 300, 200), 64)
    np.testing.assert_allclose(group["1"][:], data.reshape(2, 150, 2, 100, 2).mean(axis=(2, 4)), atol=1e-6)


def test_levels_of_masks_keep_their_values_and_odd_sizes_round_up():
    mask = np.array([[1, 0, 2], [0, 0, 0], [3, 0, 1]], np.uint8)
    np.testing.assert_array_equal(downsample(mask, "mask", (2, 2)), [[1, 2], [3, 1]])
    prob = np.array([[1.0, 0.0, 0.5]], np.float32)
    np.testing.assert_allclose(downsample(prob, "probability", (1, 2)), [[0.5, 0.5]])
    assert pyramid_shapes((300, 129), 64) == [(300, 129), (150, 65), (75, 33), (38, 17)]


def test_a_run_of_the_same_job_resumes_and_counts_what_was_written(tmp_path):
    out = _out(tmp_path / "o.ome.zarr")
    region = (slice(0, 64), slice(0, 128))
    assert not out.written(region)
    out.write(region, np.zeros((64, 128), np.float32))  # zeros too are written (they are done work)
    assert out.written(region) and not out.written((slice(0, 64), slice(0, 192)))
    again = _out(tmp_path / "o.ome.zarr")
    assert again.resumed == 2 and again.written(region)


def test_an_existing_folder_of_another_job_or_another_tool_is_never_overwritten(tmp_path):
    _out(tmp_path / "o.ome.zarr")
    with pytest.raises(InputError, match=r"another prediction .*model"):
        _out(tmp_path / "o.ome.zarr", fingerprint={**FP, "model": "other"})
    with pytest.raises(InputError, match="another prediction"):
        _out(tmp_path / "o.ome.zarr", kind="mask")
    zarr.open_group(str(tmp_path / "theirs.zarr"), mode="w", zarr_format=2)
    with pytest.raises(InputError, match="not written by segloop"):
        _out(tmp_path / "theirs.zarr")
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(InputError, match=r"not an OME-Zarr image segloop wrote|not written by segloop"):
        _out(tmp_path / "junk.zarr")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no temporary left


@pytest.mark.parametrize("axes", ["XY", "CTYX", "YXC", "QYX", "ZZYX", "TCZYXY"])
def test_axes_that_ome_zarr_cannot_hold_are_refused(axes):
    with pytest.raises(InputError, match="OME-Zarr"):
        ngff_axes(axes)


def test_live_writes_draw_every_level_as_finish_would(tmp_path):
    data = np.random.default_rng(1).random((300, 200)).astype(np.float32)
    done = _out(tmp_path / "a.zarr")
    done.write((slice(0, 300), slice(0, 200)), data)
    list(done.finish())
    live = _out(tmp_path / "b.zarr")
    live.live = True
    for y in range(0, 300, 128):  # blocks of 128 px (aligned to the levels' powers of two)
        for x in range(0, 200, 128):
            live.write((slice(y, min(y + 128, 300)), slice(x, min(x + 128, 200))),
                       data[y:y + 128, x:x + 128])
    a = zarr.open_group(str(tmp_path / "a.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "b.zarr"), mode="r")
    for level in a.array_keys():
        np.testing.assert_allclose(b[level][:], a[level][:], atol=1e-6)
