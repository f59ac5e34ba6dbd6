"""``segloop predict --workers N``: the batch on a local dask.distributed cluster, same outputs and
exit codes as one process."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_segloop.cli import EXIT_FAILED, EXIT_USAGE, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_folder_on_a_local_cluster_writes_what_one_process_writes(tmp_path, tiny_model_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for k in range(3):
        image = (np.random.default_rng(k).random((60, 70)) * 255).astype(np.uint8)
        tifffile.imwrite(folder / f"f{k}.tif", image)
    (folder / "broken.tif").write_bytes(b"not a tiff")
    common = ["predict", str(folder), "-m", str(tiny_model_dir), "--device", "cpu", "--threads", "1"]
    assert main([*common, "-o", str(tmp_path / "one")]) == EXIT_FAILED
    capsys.readouterr()
    assert main([*common, "-o", str(tmp_path / "many"), "--workers", "2"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "dask cluster of 2 worker(s); dashboard: http" in err
    errors = [line for line in err.splitlines() if line.startswith("segloop: error:")]
    assert len(errors) == 2 and "broken.tif" in errors[0] and "1 of 4 input(s) failed" in errors[1]
    assert "Traceback" not in err
    for k in range(3):
        name = f"f{k}_probability.tif"
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "many" / name),
                                      tifffile.imread(tmp_path / "one" / name))


def test_cluster_options_are_checked_before_any_work(tmp_path, tiny_model_dir, capsys):
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((40, 40), np.uint8))
    base = ["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o.tif"), "-m", str(tiny_model_dir)]
    assert main([*base, "--workers", "0"]) == EXIT_USAGE
    assert "--workers must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: the two options exclude each other
        main([*base, "--workers", "2", "--dask-scheduler", "tcp://x:1"])
    assert main([*base, "--dask-scheduler", "tcp://127.0.0.1:9"]) == EXIT_USAGE
    assert "No dask scheduler answered" in capsys.readouterr().err


def test_a_large_image_on_a_local_cluster_equals_one_process(tmp_path, tiny_model_dir, capsys):
    import zarr

    image = (np.random.default_rng(3).random((200, 260)) * 255).astype(np.uint8)
    zarr.open_array(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, dtype="u1", chunks=(64, 64),
                    zarr_format=2)[:] = image
    common = ["predict", str(tmp_path / "in.zarr"), "-m", str(tiny_model_dir), "--device", "cpu",
              "--threads", "1", "--chunk", "64", "--block", "128", "-q"]
    assert main([*common, "-o", str(tmp_path / "one.ome.zarr")]) == 0
    assert main([*common, "-o", str(tmp_path / "many.ome.zarr"), "--workers", "2"]) == 0
    a = zarr.open_group(str(tmp_path / "one.ome.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "many.ome.zarr"), mode="r")
    for level in a.array_keys():
        np.testing.assert_array_equal(a[level][:], b[level][:])
