"""``segloop predict``: probability maps or masks for image files, a wrapper over
:func:`napari_segloop.core.inference.files.predict_file`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from napari_segloop.cli import chunked, cluster
from napari_segloop.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_image_limit_arg,
    add_model_args,
    apply_image_limit,
    channel_axis_arg,
    err,
    file_error,
    load_model,
    note,
    threads_arg,
    threshold_arg,
)

#: The explicit channel conversions (same names as the Predict dock's combo box).
CONVERSIONS = ("none", "gray", "repeat", "invert", "hematoxylin")

#: ``--objects`` choices and the ``object_dims`` they mean (None: per file).
OBJECT_DIMS = {"auto": None, "2d": 2, "3d": 3}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``predict`` command."""
    p = sub.add_parser("predict", help="predict probability maps or masks for images",
                       description="Predict probability maps (float32 TIFF) or masks for images.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (TIFF, PNG, JPEG, BMP, NPY) or folders of them")
    p.add_argument("--model", "-m", action="append", default=None, metavar="MODEL",
                   help="'default', a bundle folder, or a state dict file (default: default); "
                        "repeat it for an ensemble: the models' probabilities are averaged, the "
                        "threshold and post-processing of 'auto' are the first model's")
    p.add_argument("--output", "-o", required=True,
                   help="output file for one input, or a folder for several")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--threads", type=threads_arg, default="auto",
                   help="CPU threads for torch: 'auto' (all cores but one, at most 8) or a number")
    p.add_argument("--tile", type=int, default=None, help="tile size, a multiple of 32")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0-0.9)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass (default: 1 on the CPU, 8 on a GPU)")
    p.add_argument("--scale", type=float, default=None,
                   help="resize factor applied before the model (output resized back)")
    p.add_argument("--object-size", type=float, default=None,
                   help="typical object diameter in pixels in these images")
    p.add_argument("--threshold", type=threshold_arg, default=None,
                   help="write a uint8 mask (probability > T), or 'auto' for the model's "
                        "stored threshold and post-processing")
    p.add_argument("--objects", choices=("auto", "2d", "3d"), default="auto",
                   help="post-processing of stacks with --threshold auto: 3d (minimum size in "
                        "voxels, 3-D instances), 2d (slice by slice) or auto (3d for a stack, "
                        "unless its file says its third-last axis is time; default)")
    p.add_argument("--channel-axis", type=channel_axis_arg, default="auto",
                   help="channel axis of the images: auto, none or an integer")
    p.add_argument("--convert", choices=CONVERSIONS, default="none",
                   help="explicit conversion when the image and model differ: gray (average "
                        "to gray), repeat (gray to every channel), invert (dark objects on a "
                        "bright background), hematoxylin (nuclei of H&E/IHC colour images)")
    p.add_argument("--channel", type=int, default=None, help="use only this channel")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                   help="run the network with torch (default) or onnxruntime on the CPU (1.4-2.3x "
                        "faster on plain CPUs; exported once and cached, see docs/sharing.md)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_image_limit_arg(p)
    add_model_args(p)
    chunked.add_args(p)
    cluster.add_args(p)


def output_paths(
    inputs: list[Path], output: Path, suffix: str, kind: str, as_folder: bool = False,
    *, create: bool = True, stem_of: Any = None,
) -> list[Path]:
    """One output path per input: ``output`` itself for one file, else ``<stem>_<kind><suffix>`` in it.

    Names that differ only in case are numbered too (they are one file on
    case-insensitive file systems). ``create=False`` leaves the folder to
    the caller (created after the outputs were checked). ``stem_of`` names an
    input's stem (default ``Path.stem``).
    """
    if len(inputs) == 1 and not (output.is_dir() or as_folder):
        return [output]
    if create:
        output.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    paths = []
    for p in inputs:
        stem = f"{(stem_of or (lambda q: q.stem))(p)}_{kind}"
        n = seen.get(stem.casefold(), 0)
        seen[stem.casefold()] = n + 1
        paths.append(output / f"{stem}{'' if n == 0 else f'_{n + 1}'}{suffix}")
    return paths


def model_input(spec: str) -> Path | None:
    """The file or folder behind ``--model``, which no output may overwrite or write into."""
    if str(spec) == "default":
        from napari_segloop.core.bundle import default_model_path

        return default_model_path()
    path = Path(spec)
    return path if path.exists() else None


def load_models(args: argparse.Namespace, models: list[str]) -> Any:
    """One bundle, or an :class:`~napari_segloop.core.inference.ensemble.Ensemble` of several.

    Raises
    ------
    SegloopError
        A model that cannot be loaded, or models of different tasks.
    """
    from napari_segloop.core.inference.ensemble import Ensemble

    bundles = [load_model(argparse.Namespace(**{**vars(args), "model": spec})) for spec in models]
    return bundles[0] if len(bundles) == 1 else Ensemble(bundles)


def onnx_engine(bundle: Any) -> Any:
    """``--engine onnx``: each model (or ensemble member) run by onnxruntime, its notices printed."""
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.export.engine import with_onnx_engine
    from napari_segloop.core.inference.ensemble import Ensemble

    members = [run_to_end(with_onnx_engine(b), lambda n: note(n.text))
               for b in getattr(bundle, "members", [bundle])]
    return members[0] if not hasattr(bundle, "members") else Ensemble(members)


def run(args: argparse.Namespace) -> int:
    """Run ``segloop predict``."""
    from tqdm import tqdm

    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import Notice, Progress, run_to_end
    from napari_segloop.core.inference.devices import resolve_device
    from napari_segloop.core.inference.files import predict_file
    from napari_segloop.core.inference.predict import PredictOptions
    from napari_segloop.core.inference.threads import apply_threads
    from napari_segloop.core.io.guard import OutputPlan
    from napari_segloop.core.io.images import IMAGE_OUTPUT, PROBABILITY_OUTPUT, expand_inputs

    if (problem := apply_image_limit(args) or cluster.usage_problem(args)) is not None:
        err(problem)
        return EXIT_USAGE
    files, skipped = expand_inputs(args.inputs)
    for text in skipped:
        note(text)
    if not files:
        err("no input images found.")
        return EXIT_FAILED
    output = Path(args.output)
    # Path() drops a trailing slash, which says "a folder" (created if needed).
    as_folder = args.output.endswith(("/", os.sep))
    kind = "probability" if args.threshold is None else "mask"
    models = args.model or ["default"]
    zarr_mode = chunked.wants_zarr(files, args.output)
    if zarr_mode:
        targets_or_problem = chunked.zarr_targets(files, output, kind, as_folder)
        problem = (targets_or_problem if isinstance(targets_or_problem, str)
                   else chunked.usage_problem(args)
                   or chunked.check_targets(files, targets_or_problem,
                                            [(model_input(spec), "the model") for spec in models]))
        if problem:
            err(problem)
            return EXIT_USAGE
        targets = list(targets_or_problem)
    else:
        if len(files) > 1 and output.exists() and not output.is_dir():
            err(f"{output}: several inputs need an output folder, but this is a file.")
            return EXIT_USAGE
        if len(files) == 1 and not output.is_dir() and not output.suffix and not as_folder:
            err(f"{output}: give a file name with .tif or .npy, or an existing folder.")
            return EXIT_USAGE
        # Every output is checked before the model is loaded or an image is read: none may be
        # an input (nor inside the model bundle), and each must be writable where it goes.
        targets = output_paths(files, output, ".tif", kind, as_folder, create=False)
    in_folder = targets != [output]
    plan = OutputPlan([(f, "an input image") for f in files])
    for spec in models:
        plan.protect(model_input(spec), "the model")
    for dst in [] if zarr_mode else targets:
        plan.add(dst, "the output" if in_folder else "-o",
                 kind=PROBABILITY_OUTPUT if args.threshold is None else IMAGE_OUTPUT,
                 create_folders=in_folder)
    try:
        plan.check()
        # An explicit device must work (a usage error otherwise); auto falls back silently.
        choice = resolve_device(args.device)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    if in_folder:
        try:
            output.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            err(f"{output}: cannot create the output folder ({exc.strerror or exc}).")
            return EXIT_FAILED
    apply_threads(args.threads)
    if args.engine == "onnx" and (choice.device.type != "cpu" or cluster.wanted(args)):
        err("--engine onnx runs on the CPU in this process: use it with --device cpu (or auto "
            "without a GPU) and without a cluster.")
        return EXIT_USAGE
    try:
        bundle = load_models(args, models)
        if args.engine == "onnx":
            bundle = onnx_engine(bundle)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    options = PredictOptions(
        device=args.device, tile_size=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, scale=args.scale, object_size=args.object_size,
        amp=not args.no_amp, channel_axis=args.channel_axis, convert=args.convert,
        channel=args.channel,
    )
    try:
        for member in getattr(bundle, "members", [bundle]):
            options.resolved(member)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    for text in choice.notices:
        note(text)
    # An explicit device was probed above; auto is resolved per image (a GPU that stops
    # working then falls back to the CPU, as auto promises).
    options.device = "auto" if choice.requested == "auto" else str(choice.device)

    def show_for(src: Path, unit: str = "tile") -> tuple[Any, Any]:
        # disable=None: no progress bar when stderr is not a terminal (logs, pipes).
        bar = tqdm(total=None, desc=src.name, unit=unit, disable=True if args.quiet else None,
                   file=sys.stderr, leave=False)

        def show(event: object) -> None:
            if isinstance(event, Progress):
                bar.total = event.total
                bar.n = event.done
                bar.refresh()
            elif isinstance(event, Notice):
                bar.clear()
                note(f"{src.name}: {event.text}")

        return show, bar

    if cluster.wanted(args):
        return cluster.run(args, files, targets, bundle, options, zarr_mode, OBJECT_DIMS[args.objects],
                           show_for)
    if zarr_mode:
        return chunked.run(args, files, targets, bundle, options, show_for)
    failed = 0
    for src, dst in zip(files, targets, strict=True):
        show, bar = show_for(src)
        try:
            run_to_end(predict_file(bundle, src, dst, options, args.threshold,
                                    object_dims=OBJECT_DIMS[args.objects]), show)
            if not args.quiet:
                print(f"{src} -> {dst}", file=sys.stderr)
        except SegloopError as exc:
            failed += 1
            file_error(src, exc)
        except MemoryError:
            failed += 1
            err(f"{src}: not enough memory for this image.")
        finally:
            bar.close()
    if failed:
        err(f"{failed} of {len(files)} input(s) failed.")
        return EXIT_FAILED
    return EXIT_OK
