"""``segloop predict`` into OME-Zarr: inputs read block by block, outputs written chunk by chunk.

Chosen when an input is a ``.zarr`` folder or the output ends in ``.zarr``;
a wrapper over :mod:`napari_segloop.core.inference.chunked_files`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_segloop.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err, file_error

ZARR_SUFFIX = ".ome.zarr"


def add_args(p: argparse.ArgumentParser) -> None:
    """The options of chunked outputs."""
    g = p.add_argument_group("OME-Zarr outputs (an input or the output is .zarr)")
    g.add_argument("--chunk", type=int, default=1024,
                   help="chunk edge of the OME-Zarr output in pixels (default 1024)")
    g.add_argument("--block", type=int, default=4096,
                   help="pixels predicted at a time, a multiple of --chunk (default 4096); memory "
                        "grows with it, the image size does not matter")


def wants_zarr(files: list[Path], output: str) -> bool:
    """True when an input is a ``.zarr`` image or the output is named ``.zarr``."""
    from napari_segloop.core.io.lazy import is_zarr_path

    return any(is_zarr_path(f) for f in files) or output.rstrip("/" + os.sep).lower().endswith(".zarr")


def zarr_stem(path: Path) -> str:
    """``plate_A1`` for ``plate_A1.ome.zarr``, ``plate_A1.zarr`` or ``plate_A1.tif``."""
    name = path.name
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def zarr_targets(files: list[Path], output: Path, kind: str, as_folder: bool) -> list[Path] | str:
    """One ``.zarr`` output per input, or the reason there is none."""
    if len(files) == 1 and not as_folder and output.suffix.lower() == ".zarr":
        return [output]
    if len(files) == 1 and not as_folder and not output.is_dir():
        return (f"{output}: an OME-Zarr output must be named .zarr (for example "
                f"{zarr_stem(output)}{ZARR_SUFFIX}), or be an existing folder.")
    if output.exists() and not output.is_dir():
        return f"{output}: several inputs need an output folder, but this is a file."
    from napari_segloop.cli.predict import output_paths

    return output_paths(files, output, ZARR_SUFFIX, kind, True, create=False, stem_of=zarr_stem)


def check_targets(files: list[Path], targets: list[Path],
                  protected: list[tuple[Path | None, str]]) -> str | None:
    """Why the outputs cannot be written, or None: none may be an input or inside one."""
    from napari_segloop.core.io.guard import find_input

    inputs = [(f, "an input image") for f in files] + [(p, w) for p, w in protected if p is not None]
    for dst in targets:
        found = find_input(dst, inputs)
        if found is not None:
            inp, _inside = found
            return f"{dst} is {inp.what} ({inp.path}) or inside it; choose another output."
        if dst.exists() and not dst.is_dir():
            return f"{dst} exists and is a file, not an OME-Zarr folder; choose another output."
        parent = dst.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            return f"{dst}: cannot write in {parent}."
    return None


def run(args: argparse.Namespace, files: list[Path], targets: list[Path], model: Any, options: Any,
        show_for: Callable[[Path, str], tuple[Callable[[object], None], Any]]) -> int:
    """Predict each input into its OME-Zarr output; the same exit codes as the TIFF path."""
    from napari_segloop.core.inference.chunked_files import run_zarr_job

    failed = run_jobs(args, files, targets, model, options, show_for, lambda job: run_zarr_job(model, job))
    if failed:
        err(f"{failed} of {len(files)} input(s) failed.")
        return EXIT_FAILED
    return EXIT_OK


def run_jobs(args: argparse.Namespace, files: list[Path], targets: list[Path], model: Any, options: Any,
             show_for: Callable[[Path, str], tuple[Callable[[object], None], Any]],
             run_job: Callable[[Any], Any], unit: str = "") -> int:
    """Plan each input's OME-Zarr job and run it with ``run_job`` (here, or on a cluster).

    One line per failed input; returns how many failed.
    """
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.inference.chunked_files import plan_zarr_job

    failed = 0
    for src, dst in zip(files, targets, strict=True):
        show, bar = show_for(src, unit)
        try:
            job = plan_zarr_job(model, src, dst, options, args.threshold,
                                chunk=args.chunk, block=args.block)
            try:
                run_to_end(run_job(job), show)
            finally:
                job.close()
            if not args.quiet:
                print(f"{src} -> {dst}", file=sys.stderr)
        except SegloopError as exc:
            failed += 1
            file_error(src, exc)
        except OSError as exc:
            failed += 1
            err(f"{src}: cannot write {dst} ({exc.strerror or exc}).")
        finally:
            bar.close()
    return failed


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why ``--chunk``/``--block`` cannot be used, or None."""
    if args.chunk < 64:
        return f"--chunk must be at least 64; got {args.chunk}."
    if args.block < args.chunk or args.block % args.chunk:
        return f"--block ({args.block}) must be a multiple of --chunk ({args.chunk})."
    return None


__all__ = ["EXIT_USAGE", "add_args", "check_targets", "run", "usage_problem", "wants_zarr", "zarr_targets"]
