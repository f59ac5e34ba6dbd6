"""``segloop predict --workers N`` and ``--dask-scheduler ADDRESS``: the batch on dask.distributed.

A wrapper over :mod:`napari_segloop.core.inference.cluster`; the outputs,
messages and exit codes are those of the single process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_segloop.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, file_error, note


def add_args(p: argparse.ArgumentParser) -> None:
    """The options that send the work to a dask.distributed cluster."""
    g = p.add_argument_group("several processes or machines (dask.distributed)")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="start a local cluster of N single-threaded worker processes (one file, "
                            "or one block of a large image, per task); default: this process only")
    where.add_argument("--dask-scheduler", default=None, metavar="ADDRESS",
                       help="send the work to a running dask.distributed scheduler "
                            "(tcp://host:8786); inputs and outputs must be on a disk every worker sees")


def wanted(args: argparse.Namespace) -> bool:
    """True when the work goes to a cluster."""
    return bool(args.workers or args.dask_scheduler)


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why the cluster options cannot be used, or None."""
    if args.workers is not None and args.workers < 1:
        return f"--workers must be at least 1; got {args.workers}."
    return None


def run(args: argparse.Namespace, files: list[Path], targets: list[Path], model: Any, options: Any,
        zarr_mode: bool, object_dims: int | None,
        show_for: Callable[[Path, str], tuple[Callable[[object], None], Any]]) -> int:
    """Predict every input on the cluster; one line per failed file, the usual exit codes."""
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.inference import cluster

    # Local workers are single-threaded; a remote cluster's workers use --threads (auto: the
    # policy on their own machine).
    threads = 1 if args.workers else args.threads
    try:
        client, local = cluster.connect(args.dask_scheduler, args.workers)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    failed = 0
    try:
        link = cluster.dashboard(client)
        workers = len(client.scheduler_info().get("workers", {}))
        note(f"dask cluster of {workers} worker(s); dashboard: {link or 'not available'}")
        if zarr_mode:
            failed = _blocks(args, files, targets, model, options, threads, show_for, client)
        else:
            show, bar = show_for(Path(f"{len(files)} files"), "file")
            try:
                outcomes = run_to_end(cluster.predict_files_on(
                    client, model, list(zip(files, targets, strict=True)), options, args.threshold,
                    object_dims=object_dims, threads=threads), show)
            finally:
                bar.close()
            for o in sorted(outcomes, key=lambda o: files.index(o.src)):
                for text in o.notices:
                    note(f"{o.src.name}: {text}")
                if o.error is None:
                    if not args.quiet:
                        print(f"{o.src} -> {o.dst}", file=sys.stderr)
                else:
                    failed += 1
                    file_error(o.src, o.error)
    finally:
        client.close()
        if local is not None:
            local.close()
    if failed:
        err(f"{failed} of {len(files)} input(s) failed.")
        return EXIT_FAILED
    return EXIT_OK


def _blocks(args: argparse.Namespace, files: list[Path], targets: list[Path], model: Any, options: Any,
            threads: int | str | None, show_for: Callable, client: Any) -> int:
    from napari_segloop.cli.chunked import run_jobs
    from napari_segloop.core.inference import cluster

    return run_jobs(args, files, targets, model, options, show_for,
                    lambda job: cluster.predict_blocks_on(client, model, job, threads=threads), "block")
