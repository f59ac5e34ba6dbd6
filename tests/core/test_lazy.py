"""Images read region by region (core.io.lazy): zarr, OME-Zarr 0.4 and 0.5, TIFF, dask."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_segloop.core.errors import InputError
from napari_segloop.core.io.lazy import as_lazy, is_zarr_path, open_lazy


def _ome(path, data, axes, scale, zarr_format=2, version="0.4"):
    g = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    g.create_array("0", data=data, chunks=(32,) * data.ndim)
    ms = [{"version": version, "axes": [{"name": a, "type": "space", "unit": "micrometer"} for a in axes],
           "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": scale}]}]}]
    if version == "0.5":
        g.attrs["ome"] = {"version": "0.5", "multiscales": ms}
    else:
        g.attrs["multiscales"] = ms
    return g


@pytest.mark.parametrize(("zarr_format", "version"), [(2, "0.4"), (3, "0.5")])
def test_an_ome_zarr_image_gives_its_full_resolution_level_axes_and_scale(tmp_path, zarr_format, version):
    data = np.arange(2 * 40 * 50, dtype=np.uint16).reshape(2, 40, 50)
    _ome(tmp_path / "a.ome.zarr", data, "zyx", [2.0, 0.5, 0.25], zarr_format, version)
    with open_lazy(tmp_path / "a.ome.zarr") as lazy:
        assert lazy.shape == (2, 40, 50) and lazy.axes == "ZYX"
        assert lazy.scale == (2.0, 0.5, 0.25) and lazy.units == ("micrometer",) * 3
        np.testing.assert_array_equal(lazy.read((1, slice(3, 9), slice(10, 20))), data[1, 3:9, 10:20])


def test_a_bioformats2raw_folder_and_a_plain_array_open_too(tmp_path):
    data = np.ones((40, 50), np.uint8)
    root = zarr.open_group(str(tmp_path / "b.zarr"), mode="w", zarr_format=2)
    root.attrs["bioformats2raw.layout"] = 3
    _ome(tmp_path / "b.zarr" / "0", data, "yx", [1.0, 1.0])
    assert open_lazy(tmp_path / "b.zarr").shape == (40, 50)
    zarr.open_array(str(tmp_path / "plain.zarr"), mode="w", shape=(7, 9), dtype="f4", zarr_format=2)
    assert open_lazy(tmp_path / "plain.zarr").axes is None


def test_a_tiff_is_read_through_its_zarr_store_with_its_axes_and_pixel_size(tmp_path):
    data = np.random.default_rng(0).integers(0, 255, (3, 64, 80), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "c.tif", data, tile=(32, 32), metadata={"axes": "CYX"},
                     photometric="minisblack",
                     resolution=(4.0, 2.0))
    with open_lazy(tmp_path / "c.tif") as lazy:
        assert lazy.axes == "CYX" and lazy.shape == (3, 64, 80)
        assert lazy.scale == (1.0, 0.5, 0.25)
        region = lazy.read((slice(None), slice(30, 40), slice(0, 5)))
        np.testing.assert_array_equal(region, data[:, 30:40, :5])


def test_dask_and_multiscale_layer_data_read_only_the_region():
    da = pytest.importorskip("dask.array")
    data = da.from_array(np.arange(100 * 100).reshape(100, 100), chunks=25)
    lazy = as_lazy([data, data[::2, ::2]])
    region = lazy.read((slice(10, 20), slice(0, 3)))
    assert isinstance(region, np.ndarray) and region.shape == (10, 3) and region[0, 0] == 1000


def test_what_cannot_be_read_region_by_region_is_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        open_lazy(tmp_path / "missing.zarr")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"only \.zarr folders and TIFF"):
        open_lazy(tmp_path / "x.png")
    g = zarr.open_group(str(tmp_path / "two.zarr"), mode="w", zarr_format=2)
    g.create_array("a", shape=(4, 4), dtype="u1")
    g.create_array("b", shape=(4, 4), dtype="u1")
    with pytest.raises(InputError, match="arrays a, b"):
        open_lazy(tmp_path / "two.zarr")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff")
    with pytest.raises(InputError, match="not a readable TIFF"):
        open_lazy(tmp_path / "bad.tif")


def test_a_missing_chunk_reads_as_fill_but_a_corrupt_one_is_a_clear_error(tmp_path):
    arr = zarr.open_array(str(tmp_path / "d.zarr"), mode="w", shape=(64, 64), chunks=(32, 32),
                          dtype="f4", zarr_format=2)
    arr[:] = 1.0
    (tmp_path / "d.zarr" / "0.0").write_bytes(b"garbage")
    lazy = open_lazy(tmp_path / "d.zarr")
    with pytest.raises(InputError, match=r"cannot read the region \[0:10, 0:10\]"):
        lazy.read((slice(0, 10), slice(0, 10)))
    np.testing.assert_array_equal(lazy.read((slice(40, 50), slice(40, 50))), 1.0)


def test_zarr_paths_are_recognised_by_name_or_content(tmp_path):
    assert is_zarr_path(tmp_path / "new.ome.zarr")
    zarr.open_group(str(tmp_path / "group"), mode="w", zarr_format=3)
    assert is_zarr_path(tmp_path / "group")
    (tmp_path / "plain").mkdir()
    assert not is_zarr_path(tmp_path / "plain")
