"""``segloop predict`` with OME-Zarr: large inputs block by block, chunked outputs, resume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_segloop.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from napari_segloop.core.bundle import load_model
from napari_segloop.core.events import run_to_end
from napari_segloop.core.inference import blocks as blocks_mod
from napari_segloop.core.inference.predict import PredictOptions, predict

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _image(shape=(300, 260), seed=0):
    return (np.random.default_rng(seed).random(shape) * 200).astype(np.uint8)


def _write_ome(path, data, axes="yx", scale=None):
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    g.create_array("0", data=data, chunks=(64,) * data.ndim)
    g.attrs["multiscales"] = [{"version": "0.4",
                               "axes": [{"name": a, "type": "space"} for a in axes],
                               "datasets": [{"path": "0", "coordinateTransformations": [
                                   {"type": "scale", "scale": scale or [1.0] * data.ndim}]}]}]


def _args(tiny_model_dir, *more):
    return ["predict", "-m", str(tiny_model_dir), "--device", "cpu", "--threads", "1", "-q",
            "--chunk", "64", "--block", "128", *map(str, more)]


def test_an_ome_zarr_image_is_predicted_into_an_ome_zarr_probability_map(tmp_path, tiny_model_dir):
    from ome_zarr_models.v04 import Image

    image = _image()
    _write_ome(tmp_path / "in.ome.zarr", image, scale=[0.5, 0.25])
    assert main(_args(tiny_model_dir, tmp_path / "in.ome.zarr", "-o", tmp_path / "p.ome.zarr")) == EXIT_OK
    group = zarr.open_group(str(tmp_path / "p.ome.zarr"), mode="r")
    Image.from_zarr(group)
    ms = group.attrs["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [0.5, 0.25]
    ref = run_to_end(predict(load_model(str(tiny_model_dir)), image, PredictOptions(device="cpu")))
    prob = group["0"][:]
    assert prob.dtype == np.float32 and prob.shape == image.shape
    assert np.abs(prob - ref).mean() < 0.01  # blending noise at the block seams only
    assert len(group) > 1  # lower-resolution levels


def test_a_large_tiff_is_read_tile_by_tile_into_a_mask(tmp_path, tiny_model_dir):
    tifffile.imwrite(tmp_path / "in.tif", _image(), tile=(64, 64))
    args = _args(tiny_model_dir, tmp_path / "in.tif", "-o", tmp_path / "m.zarr", "--threshold", "auto")
    assert main(args) == 0
    mask = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")["0"][:]
    assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_an_interrupted_run_is_resumed_and_says_so(tmp_path, tiny_model_dir, monkeypatch, capsys):
    _write_ome(tmp_path / "in.zarr", _image())
    real = blocks_mod.predict_block
    calls = []

    def dies_on_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user pressed Ctrl+C
        return (yield from real(*args, **kwargs))

    monkeypatch.setattr(blocks_mod, "predict_block", dies_on_the_third)
    assert main(_args(tiny_model_dir, tmp_path / "in.zarr", "-o", tmp_path / "p.zarr")) == 130
    monkeypatch.setattr(blocks_mod, "predict_block", real)
    capsys.readouterr()
    assert main(_args(tiny_model_dir, tmp_path / "in.zarr", "-o", tmp_path / "p.zarr")) == EXIT_OK
    err = capsys.readouterr().err
    assert "Resuming" in err and "2 of 9 block(s) were already written" in err
    assert main(_args(tiny_model_dir, tmp_path / "in.zarr", "-o", tmp_path / "p.zarr")) == EXIT_OK
    assert "complete already" in capsys.readouterr().err
    # The resumed output is the uninterrupted one.
    assert main(_args(tiny_model_dir, tmp_path / "in.zarr", "-o", tmp_path / "q.zarr")) == EXIT_OK
    a = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "q.zarr"), mode="r")
    for level in a.array_keys():
        np.testing.assert_array_equal(a[level][:], b[level][:])


def test_an_output_of_other_settings_is_refused_and_kept(tmp_path, tiny_model_dir, capsys):
    _write_ome(tmp_path / "in.zarr", _image())
    assert main(_args(tiny_model_dir, tmp_path / "in.zarr", "-o", tmp_path / "p.zarr")) == EXIT_OK
    before = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["0"][:]
    capsys.readouterr()
    code = main(_args(tiny_model_dir, tmp_path / "in.zarr", "-o", tmp_path / "p.zarr", "--threshold", "0.3"))
    assert code == EXIT_FAILED
    err = capsys.readouterr().err
    assert "another prediction" in err and "Traceback" not in err
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["0"][:], before)


def test_usage_errors_are_one_line_before_any_work(tmp_path, tiny_model_dir, capsys):
    _write_ome(tmp_path / "in.zarr", _image((70, 70)))
    cases = [
        (["-o", tmp_path / "out.tif"], "must be named .zarr"),
        (["-o", tmp_path / "in.zarr"], "is an input image"),
        (["-o", tmp_path / "o.zarr", "--block", "100"], "multiple of --chunk"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(_args(tiny_model_dir, tmp_path / "in.zarr", *extra)) == EXIT_USAGE
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_a_folder_of_zarr_images_gives_one_output_each(tmp_path, tiny_model_dir):
    folder = tmp_path / "plate"
    folder.mkdir()
    for name in ("A1", "A2"):
        _write_ome(folder / f"{name}.ome.zarr", _image((64, 80), seed=len(name)))
    assert main(_args(tiny_model_dir, folder, "-o", tmp_path / "out")) == EXIT_OK
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "A1_probability.ome.zarr", "A2_probability.ome.zarr"]
