"""Batch prediction on a dask.distributed cluster: one task per file, or per block of a large image.

No scheduler of our own: :func:`connect` starts a ``LocalCluster`` (``--workers
N``) or joins a running scheduler (``--dask-scheduler ADDRESS``: dask-jobqueue on
SLURM/PBS, dask-kubernetes, ``dask scheduler`` by hand), and the work is
submitted as ordinary dask futures.

* The model goes to every worker once, as a worker plugin
  (:mod:`~napari_segloop.core.inference.cluster_model`): each worker
  deserialises it once and keeps it for all its tasks (tasks get a reference,
  not a copy), workers that join or restart later get it too, and dask's
  memory manager cannot drop it between tasks as it drops scattered copies.
* Each worker uses one device: with several GPUs, worker ``k`` of a local
  cluster takes ``cuda:k mod n`` (:func:`worker_device`), so two workers do
  not share a GPU while another idles.
* A task that fails because a worker died is retried (``retries``); a bad
  file is not (it would fail again): its one-line error comes back as a
  result and the other files go on. The command's exit codes are those of
  the single process.
* Files are read and written by the workers: inputs and outputs must be on a
  file system that every worker sees (a laptop, a workstation, a cluster's
  shared disk).

A large image (an OME-Zarr or TIFF input with a ``.zarr`` output) is planned
on the client (the output is created, the normalisation sample read), then
each block is a task that reads its region and halo, predicts it and writes its
whole chunks; the client writes the lower-resolution levels at the end. The
blocks are exactly those of the single process, so the result is the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.events import Event, Notice, Progress

__all__ = ["FileOutcome", "connect", "predict_blocks_on", "predict_files_on", "worker_device"]

#: Retries of a task whose worker died (a bad file is never retried: its error is its result).
RETRIES = 2
#: How long to wait for a scheduler given with ``--dask-scheduler``.
CONNECT_TIMEOUT_S = 10.0


def connect(scheduler: str | None = None, workers: int | None = None) -> tuple[Any, Any]:
    """A dask.distributed client: joined to ``scheduler``, or on a new local cluster of ``workers``.

    Local workers are processes with one thread each (torch uses one intra-op
    thread per worker, so N workers use N cores without oversubscribing them).

    Returns
    -------
    client, cluster
        ``cluster`` is None when joining a running scheduler; close both when done.

    Raises
    ------
    InputError
        No scheduler answers at ``scheduler``.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(f"No dask scheduler answered at {scheduler} ({exc}).") from None
    cluster = LocalCluster(n_workers=int(workers or 1), threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=50)
    return Client(cluster), cluster


def dashboard(client: Any) -> str | None:
    """The address of the cluster's dashboard, or None when it is not available."""
    try:
        link = client.dashboard_link
    except Exception:  # no bokeh on the scheduler, or no dashboard configured
        return None
    return str(link) if link else None


_MALLOC_TUNED: list[bool] = []


def tune_malloc() -> bool:
    """Undo, in a dask worker, the allocator setting that halves torch's speed on the CPU.

    dask's nanny starts workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting
    that variable switches off glibc's dynamic mmap threshold, so every buffer
    over 128 KiB (each activation of each tile) is a fresh ``mmap`` with its page
    faults: measured here, 4 images of 1,024² took 6.1 s instead of 3.7 s in one
    thread. Raising the mmap threshold to 64 MiB and the trim threshold to
    128 MiB with ``mallopt`` brings the worker back (2.9 s). Linux with glibc
    only; elsewhere nothing is done. Returns True when the setting was applied.
    """
    if _MALLOC_TUNED:
        return _MALLOC_TUNED[0]
    ok = False
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, 64 << 20))
        ok = bool(libc.mallopt(m_trim_threshold, 128 << 20)) and ok
    except (OSError, AttributeError):  # not glibc
        ok = False
    _MALLOC_TUNED.append(ok)
    return ok


def worker_device(requested: str) -> str:
    """The device of this worker: ``cuda:k`` for worker ``k`` when there are several GPUs.

    ``requested`` is the user's ``--device``; an explicit ``cuda:N`` or
    ``cpu`` is kept. With ``auto`` or ``cuda`` and more than one GPU, a worker
    named by an integer (a local cluster's) takes GPU ``name mod n``, another
    (a named remote worker) GPU ``hash(name) mod n``.
    """
    import torch

    if requested not in ("auto", "cuda") or not torch.cuda.is_available():
        return requested
    n = torch.cuda.device_count()
    if n < 2:
        return requested
    try:
        from distributed import get_worker

        name = get_worker().name
    except ValueError:  # not in a worker
        return requested
    k = int(name) if str(name).isdigit() else abs(hash(str(name)))
    return f"cuda:{k % n}"


@dataclass(frozen=True)
class FileOutcome:
    """What one file's task gave.

    Attributes
    ----------
    src, dst : Path
    notices : tuple of str
        What the prediction told the user.
    error : str or None
        The one-line error of a bad file, or None.
    worker : str
        The worker that ran it.
    """

    src: Path
    dst: Path
    notices: tuple[str, ...]
    error: str | None
    worker: str


def _file_task(model: Any, src: Path, dst: Path, options: Any, threshold: Any,
               object_dims: int | None, threads: int | str | None) -> FileOutcome:
    """One file on a worker (the model is the worker's own copy, see :func:`predict_files_on`)."""
    from distributed import get_worker

    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.inference.files import predict_file
    from napari_segloop.core.inference.threads import apply_threads

    apply_threads(threads)
    tune_malloc()
    notices: list[str] = []
    opts = dataclasses.replace(options, device=worker_device(options.device))
    error = None
    try:
        run_to_end(predict_file(model, src, dst, opts, threshold, object_dims=object_dims),
                   lambda e: notices.append(e.text) if isinstance(e, Notice) else None)
    except SegloopError as exc:
        error = str(exc)
    except MemoryError:
        error = "not enough memory for this image."
    return FileOutcome(Path(src), Path(dst), tuple(notices), error, str(get_worker().name))


def predict_files_on(
    client: Any,
    model: Any,
    pairs: Sequence[tuple[Path, Path]],
    options: Any,
    threshold: Any = None,
    *,
    object_dims: int | None = 2,
    threads: int | str | None = 1,
) -> Generator[Event, None, list[FileOutcome]]:
    """Predict each ``(src, dst)`` pair as one task on the cluster; results in completion order.

    ``threads`` is the torch CPU threads of each worker (1 for single-threaded
    workers; ``auto``: the policy of :mod:`~napari_segloop.core.inference.threads`
    on the worker's machine). Yields a :class:`Progress` per finished file.
    Closing the generator cancels the tasks not yet finished.
    """
    from distributed import as_completed

    from napari_segloop.core.inference.cluster_model import model_on_workers, with_model

    outcomes: list[FileOutcome] = []
    with model_on_workers(client, model) as name:
        futures = [client.submit(with_model, _file_task, name, Path(s), Path(d), options, threshold,
                                 object_dims, threads, key=f"segloop-file-{k}-{Path(s).name}",
                                 retries=RETRIES, pure=False)
                   for k, (s, d) in enumerate(pairs)]
        yield Progress(0, len(futures), "files")
        try:
            for future in as_completed(futures):
                outcome = future.result()
                outcomes.append(outcome)
                yield Progress(len(outcomes), len(futures), "files")
        finally:
            client.cancel([f for f in futures if not f.done()])
    return outcomes


def _block_task(model: Any, src: str, dst: str, block: Any, layout: Any, options: Any, threshold: Any,
                sample: Any, threads: int | str | None) -> tuple[Any, tuple[str, ...]]:
    """One block of a large image on a worker: read its region, predict it, write its chunks."""
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.inference.blocks import write_block
    from napari_segloop.core.inference.threads import apply_threads
    from napari_segloop.core.io.lazy import open_lazy
    from napari_segloop.core.io.omezarr import open_level

    apply_threads(threads)
    tune_malloc()
    notices: list[str] = []
    opts = dataclasses.replace(options, device=worker_device(options.device))
    with open_lazy(src) as lazy:
        level0 = open_level(dst)
        run_to_end(write_block(model, lazy, layout, block, opts, threshold, sample, level0.__setitem__),
                   lambda e: notices.append(e.text) if isinstance(e, Notice) else None)
    return block, tuple(notices)


def predict_blocks_on(client: Any, model: Any, job: Any, *, threads: int | str | None = 1,
                      on_block: Callable[[Any], None] | None = None) -> Generator[Event, None, int]:
    """Predict the blocks of a :class:`~napari_segloop.core.inference.chunked_files.ZarrJob` not yet
    written, one task per block; then write the lower-resolution levels. Returns the blocks predicted.
    """
    from distributed import as_completed

    from napari_segloop.core.inference.blocks import job_blocks, read_sample
    from napari_segloop.core.inference.chunked_files import announce, write_levels

    out = job.output
    if not (yield from announce(out)):
        return 0
    blocks, todo = job_blocks(model, job)
    if len(todo) < len(blocks):
        yield Notice(f"{len(blocks) - len(todo)} of {len(blocks)} block(s) were already written by an "
                     "earlier run and are skipped.")
    from napari_segloop.core.inference.cluster_model import model_on_workers, with_model

    samples: dict[tuple[int, ...], Any] = {}
    with model_on_workers(client, model) as name:
        futures = []
        for b in todo:
            if b.stack not in samples:
                sample, text = read_sample(job.lazy, job.layout, b.stack, job.options, model.in_channels)
                if not samples:
                    yield Notice(f"Normalisation statistics from {text}.")
                samples[b.stack] = client.scatter(sample, broadcast=True, hash=False)
            futures.append(client.submit(with_model, _block_task, name, source_path(job.lazy), str(out.path),
                                         b, job.layout, job.options, job.threshold, samples[b.stack], threads,
                                         retries=RETRIES, pure=False,
                                         key=f"segloop-block-{b.stack}-{b.y0}-{b.x0}"))
        seen: set[str] = set()
        yield Progress(0, len(futures), "blocks")
        done = 0
        try:
            for future in as_completed(futures):
                block, notices = future.result()
                done += 1
                for text in notices:
                    if text not in seen and not text.startswith("Normalisation"):
                        seen.add(text)
                        yield Notice(text)
                if on_block is not None:
                    on_block(block)
                yield Progress(done, len(futures), "blocks")
        finally:
            client.cancel([f for f in futures if not f.done()])
    yield from write_levels(out)
    return done


def source_path(lazy: Any) -> str:
    """The path a worker opens (an input given as an array in memory cannot go to a cluster)."""
    src = getattr(lazy, "source", "array")
    if src == "array" or not Path(src).exists():
        raise InputError("Only files can be predicted on a cluster (its workers open them).")
    return str(src)
