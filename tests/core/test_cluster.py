"""Batch prediction on a local dask.distributed cluster (core.inference.cluster).

One small local cluster of 2 worker processes for the module: files as tasks, blocks of a large
image as tasks (the same result as one process), the model sent once per worker, a bad file
reported without stopping the others, and a task whose worker dies retried.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_segloop.core.events import Progress, run_to_end
from napari_segloop.core.inference import cluster
from napari_segloop.core.inference.chunked_files import plan_zarr_job, run_zarr_job
from napari_segloop.core.inference.files import predict_file
from napari_segloop.core.inference.predict import PredictOptions
from tests.core.tiny_models import tiny_bundle

OPTS = PredictOptions(device="cpu", tile_size=64)


@pytest.fixture(scope="module")
def client():
    c, local = cluster.connect(workers=2)
    yield c
    c.close()
    local.close()


@pytest.fixture(scope="module")
def bundle():
    return tiny_bundle(seed=5)


def _tif(path: Path, shape=(90, 110), seed=0) -> Path:
    tifffile.imwrite(path, (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8))
    return path


def test_each_file_is_a_task_and_equals_the_single_process_result(tmp_path, client, bundle):
    pairs = [(_tif(tmp_path / f"in{k}.tif", seed=k), tmp_path / f"out{k}.tif") for k in range(4)]
    events: list = []
    outcomes = run_to_end(cluster.predict_files_on(client, bundle, pairs, OPTS), events.append)
    assert sorted(o.src.name for o in outcomes) == [f"in{k}.tif" for k in range(4)]
    assert all(o.error is None for o in outcomes)
    assert {o.worker for o in outcomes} <= {"0", "1"}
    assert [e.done for e in events if isinstance(e, Progress)][-1] == 4
    for src, dst in pairs:
        ref = tmp_path / f"ref_{src.name}"
        run_to_end(predict_file(bundle, src, ref, OPTS))
        np.testing.assert_array_equal(tifffile.imread(dst), tifffile.imread(ref))


def test_a_bad_file_is_reported_and_the_others_are_written(tmp_path, client, bundle):
    good = _tif(tmp_path / "good.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not an image")
    outcomes = run_to_end(cluster.predict_files_on(client, bundle, [(bad, tmp_path / "b.tif"),
                                                                   (good, tmp_path / "g.tif")], OPTS))
    errors = {o.src.name: o.error for o in outcomes}
    assert errors["good.tif"] is None and (tmp_path / "g.tif").exists()
    assert errors["bad.tif"] and "\n" not in errors["bad.tif"]
    assert not (tmp_path / "b.tif").exists()


def test_the_model_is_sent_once_per_worker_not_once_per_task(tmp_path, client, bundle, monkeypatch):
    # Every task reports its process and the identity of the model object it got: tasks on one
    # worker get one and the same object (deserialised once), not a copy each. dask's memory
    # manager runs after every finished task (it drops copies of data it thinks superfluous, as
    # it did to a scattered model on a busy machine); the model must survive it.
    def report(model, s, d, options, threshold, dims, threads):
        import os
        import time

        time.sleep(0.1)
        return cluster.FileOutcome(s, d, (f"{os.getpid()}:{id(model)}",), None, "")

    monkeypatch.setattr(cluster, "_file_task", report)
    pairs = [(tmp_path / f"in{k}.tif", tmp_path / f"out{k}.tif") for k in range(16)]

    def memory_manager(event):
        if isinstance(event, Progress):
            client.amm.run_once()

    outcomes = run_to_end(cluster.predict_files_on(client, bundle, pairs, OPTS), memory_manager)
    by_pid: dict[str, set[str]] = {}
    for o in outcomes:
        pid, model_id = o.notices[0].split(":")
        by_pid.setdefault(pid, set()).add(model_id)
    assert len(outcomes) == 16 and all(len(ids) == 1 for ids in by_pid.values()), by_pid


def test_the_model_stays_on_every_worker_through_the_memory_manager(client, bundle):
    # A scattered copy is data that dask's memory manager may drop between tasks (and the worker
    # then fetches and deserialises the model again); the model must stay one object per worker
    # until the run ends, and be freed then.
    from napari_segloop.core.inference.cluster_model import model_on_workers, with_model

    def where(model):
        import os

        return f"{os.getpid()}:{id(model)}"

    workers = sorted(client.scheduler_info()["workers"])
    rounds = []
    with model_on_workers(client, bundle) as name:
        for _ in range(3):
            client.amm.run_once()
            rounds.append([client.submit(with_model, where, name, workers=[w], pure=False).result()
                           for w in workers])
    assert len(set(rounds[0])) == len(workers) == 2
    assert rounds[0] == rounds[1] == rounds[2]
    assert not any(client.run(lambda dask_worker: name in dask_worker.plugins).values())


def test_the_blocks_of_a_large_image_on_the_cluster_equal_one_process(tmp_path, client, bundle):
    image = (np.random.default_rng(1).random((300, 260)) * 255).astype(np.uint8)
    g = zarr.open_group(str(tmp_path / "in.zarr"), mode="w", zarr_format=2)
    g.create_array("0", data=image, chunks=(64, 64))
    jobs = {}
    for name in ("one", "many"):
        jobs[name] = plan_zarr_job(bundle, tmp_path / "in.zarr", tmp_path / f"{name}.ome.zarr", OPTS,
                                   chunk=64, block=128)
    run_to_end(run_zarr_job(bundle, jobs["one"]))
    done = run_to_end(cluster.predict_blocks_on(client, bundle, jobs["many"]))
    assert done == 9
    a = zarr.open_group(str(tmp_path / "one.ome.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "many.ome.zarr"), mode="r")
    assert sorted(a.array_keys()) == sorted(b.array_keys())
    for level in a.array_keys():
        np.testing.assert_array_equal(a[level][:], b[level][:])
    assert b.attrs["segloop"]["complete"]
    for job in jobs.values():
        job.close()


def test_each_worker_takes_its_own_gpu(monkeypatch):
    import torch

    class W:
        name = 3

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    import distributed

    monkeypatch.setattr(distributed, "get_worker", lambda: W())
    assert cluster.worker_device("auto") == "cuda:1"
    assert cluster.worker_device("cuda:0") == "cuda:0"
    assert cluster.worker_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert cluster.worker_device("auto") == "auto"


def test_no_scheduler_at_the_address_is_one_clear_error():
    from napari_segloop.core.errors import InputError

    with pytest.raises(InputError, match=r"No dask scheduler answered at tcp://127\.0\.0\.1:9"):
        cluster.connect("tcp://127.0.0.1:9")


def test_a_task_whose_worker_dies_is_retried(tmp_path, client, bundle, monkeypatch):
    # The first attempt of the task kills its worker process (as an out-of-memory kill would);
    # dask reschedules it on a new worker and the file is written.
    marker = tmp_path / "died-once"
    src = _tif(tmp_path / "in.tif")

    def dies_once(model, s, d, options, threshold, dims, threads):
        import os

        if not marker.exists():
            marker.write_text("x")
            os._exit(1)
        return cluster._file_task(model, s, d, options, threshold, dims, threads)

    monkeypatch.setattr(cluster, "_file_task", dies_once)
    outcomes = run_to_end(cluster.predict_files_on(client, bundle, [(src, tmp_path / "o.tif")], OPTS))
    assert outcomes[0].error is None and (tmp_path / "o.tif").exists()
    assert marker.exists()
