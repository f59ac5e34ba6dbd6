"""The ``segloop`` command line: the same engine as the napari plugin, headless.

Every user error prints one line to stderr (``segloop: error: ...``) and the
command exits non-zero, without a traceback. With several inputs, a bad file
does not stop the others; the exit code is 1 when any failed.

Exit codes: 0 success, 1 some inputs or the operation failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from napari_segloop import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _err(message: str) -> None:
    print(f"segloop: error: {message}", file=sys.stderr)


def _note(message: str) -> None:
    print(f"segloop: note: {message}", file=sys.stderr)


def _threshold_arg(text: str) -> float | str:
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a number in [0, 1] or 'auto'") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return value


def _channel_axis_arg(text: str) -> int | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be auto, none or an integer axis") from None


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--arch", default=None,
                   help="architecture of a plain state dict (e.g. Unet); not needed for bundles")
    p.add_argument("--encoder", default=None,
                   help="encoder of a plain state dict (e.g. resnet18)")
    p.add_argument("--in-channels", type=int, default=1,
                   help="input channels of a plain state dict (default 1)")


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``segloop`` command."""
    parser = argparse.ArgumentParser(
        prog="segloop",
        description="Deep-learning segmentation with a human in the loop (napari-segloop).",
    )
    parser.add_argument("--version", action="version", version=f"napari-segloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="predict probability maps or masks for images",
                       description="Predict probability maps (float32 TIFF) or masks for images.")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="image files (TIFF, PNG, JPEG, BMP, NPY) or folders of them")
    p.add_argument("--model", "-m", default="default",
                   help="'default', a bundle folder, or a state dict file (default: default)")
    p.add_argument("--output", "-o", required=True,
                   help="output file for one input, or a folder for several")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--tile", type=int, default=None, help="tile size, a multiple of 32")
    p.add_argument("--overlap", type=float, default=None, help="tile overlap fraction (0-0.9)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="tiles per forward pass (default: 1 on the CPU, 8 on a GPU)")
    p.add_argument("--scale", type=float, default=None,
                   help="resize factor applied before the model (output resized back)")
    p.add_argument("--object-size", type=float, default=None,
                   help="typical object diameter in pixels in these images")
    p.add_argument("--threshold", type=_threshold_arg, default=None,
                   help="write a uint8 mask (probability > T), or 'auto' for the model's "
                        "stored threshold and post-processing")
    p.add_argument("--channel-axis", type=_channel_axis_arg, default="auto",
                   help="channel axis of the images: auto, none or an integer")
    p.add_argument("--convert", choices=("none", "gray", "repeat"), default="none",
                   help="explicit channel conversion when the image and model differ")
    p.add_argument("--channel", type=int, default=None, help="use only this channel")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    _add_model_args(p)

    p = sub.add_parser("info", help="describe a model", description="Describe a model.")
    p.add_argument("model", help="'default', a bundle folder, or a state dict file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_model_args(p)

    p = sub.add_parser("demo", help="open napari with the sample image and the default model",
                       description="Open napari with the sample image, the default model and "
                                   "the plugin's docks.")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="run the prediction, save a screenshot of the window and exit")
    return parser


def _load_model(args: argparse.Namespace):
    from napari_segloop.core.bundle import load_model

    return load_model(args.model, args.arch, args.encoder, args.in_channels)


def _output_paths(inputs: list[Path], output: Path, suffix: str, kind: str) -> list[Path]:
    if len(inputs) == 1 and not (output.is_dir() or str(output).endswith(os.sep)):
        return [output]
    output.mkdir(parents=True, exist_ok=True)
    seen: dict[str, int] = {}
    paths = []
    for p in inputs:
        stem = f"{p.stem}_{kind}"
        n = seen.get(stem, 0)
        seen[stem] = n + 1
        paths.append(output / f"{stem}{'' if n == 0 else f'_{n + 1}'}{suffix}")
    return paths


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``segloop predict``."""
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.imageio import expand_inputs, read_image, write_image
    from napari_segloop.core.inference import Notice, PredictOptions, Progress, predict
    from napari_segloop.core.threshold import apply_threshold, postprocess

    files, skipped = expand_inputs(args.inputs)
    for text in skipped:
        _note(text)
    if not files:
        _err("no input images found.")
        return EXIT_FAILED
    output = Path(args.output)
    if len(files) > 1 and output.exists() and not output.is_dir():
        _err(f"{output}: several inputs need an output folder, but this is a file.")
        return EXIT_USAGE
    if len(files) == 1 and not output.is_dir() and not output.suffix:
        _err(f"{output}: give a file name with .tif or .npy, or an existing folder.")
        return EXIT_USAGE
    try:
        bundle = _load_model(args)
    except SegloopError as exc:
        _err(str(exc))
        return EXIT_FAILED
    options = PredictOptions(
        device=args.device, tile_size=args.tile, overlap=args.overlap,
        batch_size=args.batch_size, scale=args.scale, object_size=args.object_size,
        amp=not args.no_amp, channel_axis=args.channel_axis, convert=args.convert,
        channel=args.channel,
    )
    try:
        options.resolved(bundle)
    except SegloopError as exc:
        _err(str(exc))
        return EXIT_USAGE
    kind = "probability" if args.threshold is None else "mask"
    try:
        targets = _output_paths(files, output, ".tif", kind)
    except OSError as exc:
        _err(f"{output}: cannot create the output folder ({exc.strerror or exc}).")
        return EXIT_FAILED
    from tqdm import tqdm

    failed = 0
    for src, dst in zip(files, targets, strict=True):
        try:
            image = read_image(src)
            gen = predict(bundle, image, options)
            bar = tqdm(total=None, desc=src.name, unit="tile", disable=args.quiet,
                       file=sys.stderr, leave=False)
            try:
                while True:
                    try:
                        event = next(gen)
                    except StopIteration as stop:
                        prob = stop.value
                        break
                    if isinstance(event, Progress):
                        bar.total = event.total
                        bar.n = event.done
                        bar.refresh()
                    elif isinstance(event, Notice):
                        bar.clear()
                        _note(f"{src.name}: {event.text}")
            finally:
                bar.close()
            if args.threshold is None:
                result = prob
            elif args.threshold == "auto":
                s = bundle.settings
                result = postprocess(apply_threshold(prob, s.threshold), s.postprocess)
            else:
                result = apply_threshold(prob, float(args.threshold))
            write_image(dst, result)
            if not args.quiet:
                print(f"{src} -> {dst}", file=sys.stderr)
        except SegloopError as exc:
            failed += 1
            msg = str(exc)
            _err(msg if msg.startswith(str(src)) else f"{src}: {msg}")
        except MemoryError:
            failed += 1
            _err(f"{src}: not enough memory for this image.")
    if failed:
        _err(f"{failed} of {len(files)} input(s) failed.")
        return EXIT_FAILED
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """Run ``segloop info``."""
    from napari_segloop.core.errors import SegloopError

    try:
        bundle = _load_model(args)
    except SegloopError as exc:
        _err(str(exc))
        return EXIT_FAILED
    info = bundle.describe()
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Run ``segloop demo``."""
    try:
        from napari_segloop.demo import run_demo
    except ImportError as exc:
        _err(f"the demo needs napari with a Qt binding: pip install 'napari-segloop[qt]' ({exc}).")
        return EXIT_FAILED
    return run_demo(screenshot=args.screenshot)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segloop`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handlers = {"predict": cmd_predict, "info": cmd_info, "demo": cmd_demo}
    try:
        return handlers[args.command](args)
    except KeyboardInterrupt:
        _err("interrupted.")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
