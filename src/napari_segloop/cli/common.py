"""What every ``segloop`` command shares: exit codes, one-line messages, argument types, model loading."""

from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def err(message: str) -> None:
    """Print ``segloop: error: message`` on stderr (one line, control characters escaped)."""
    from napari_segloop.core.text import printable

    print(f"segloop: error: {printable(message, 2000)}", file=sys.stderr)


def file_error(src: Any, exc: BaseException | str) -> None:
    """One error line for a file that failed: the message, prefixed with the file unless it names it."""
    msg = str(exc)
    err(msg if msg.startswith(str(src)) else f"{src}: {msg}")


def note(message: str) -> None:
    """Print ``segloop: note: message`` on stderr (one line, control characters escaped)."""
    from napari_segloop.core.text import printable

    print(f"segloop: note: {printable(message, 2000)}", file=sys.stderr)


def say(notice: Any, prefix: str = "") -> None:
    """Print a core :class:`~napari_segloop.core.events.Notice` as an error or a note."""
    text = f"{prefix}{notice.text}"
    (err if notice.level == "error" else note)(text)


def threshold_arg(text: str) -> float | str:
    """``--threshold`` of ``predict``: a number in [0, 1] or ``auto``."""
    if text == "auto":
        return "auto"
    return unit_interval(text, "must be a number in [0, 1] or 'auto'")


def evaluate_threshold_arg(text: str) -> float | str:
    """``--threshold`` of ``evaluate``: a number in [0, 1], ``otsu`` or ``auto``."""
    if text in ("auto", "otsu"):
        return text
    return unit_interval(text, "must be a number in [0, 1], 'otsu' or 'auto'")


def unit_interval(text: str, what: str) -> float:
    """Parse a number in [0, 1] or raise an argparse error saying ``what``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(what) from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1]")
    return value


def channel_axis_arg(text: str) -> int | str | None:
    """``--channel-axis``: auto, none or an integer."""
    if text in ("auto", "none"):
        return None if text == "none" else "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be auto, none or an integer axis") from None


def threads_arg(text: str) -> int | str:
    """``--threads``: ``auto`` or a positive number of CPU threads."""
    if text == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be 'auto' or a number of threads") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """The options that describe a plain state dict (bundles do not need them)."""
    p.add_argument("--arch", default=None,
                   help="architecture of a plain state dict (e.g. Unet); not needed for bundles")
    p.add_argument("--encoder", default=None,
                   help="encoder of a plain state dict (e.g. resnet18)")
    p.add_argument("--in-channels", type=int, default=1,
                   help="input channels of a plain state dict (default 1)")
    p.add_argument("--weights-format", default="auto",
                   choices=("auto", "pytorch_state_dict", "onnx", "torchscript"),
                   help="bioimage.io packages: which weights to run (default auto: the state dict "
                        "of an architecture segloop knows, else ONNX)")
    p.add_argument("--allow-torchscript", action="store_true",
                   help="bioimage.io packages: allow TorchScript weights (they run code their "
                        "author wrote; refused otherwise)")


def load_model(args: argparse.Namespace) -> Any:
    """Load ``args.model`` (with the state-dict options)."""
    from napari_segloop.core.bundle import load_model as core_load

    return core_load(args.model, args.arch, args.encoder, args.in_channels,
                     weights=getattr(args, "weights_format", "auto"),
                     allow_torchscript=getattr(args, "allow_torchscript", False))


def add_image_limit_arg(p: argparse.ArgumentParser) -> None:
    """``--max-image-size``: the largest decoded size of an input image."""
    p.add_argument("--max-image-size", default=None, metavar="SIZE",
                   help="refuse input images larger than SIZE once decoded (e.g. 20GB, 500MB, a "
                        "number of bytes, or none); default: $SEGLOOP_MAX_IMAGE_BYTES, else a "
                        "quarter of the available memory")


def apply_image_limit(args: argparse.Namespace) -> str | None:
    """Apply ``--max-image-size`` (or, when it is not given, the environment and the default).

    Returns
    -------
    str or None
        The error message for a bad size (or a bad ``SEGLOOP_MAX_IMAGE_BYTES``), else None.
    """
    from napari_segloop.core.errors import InputError
    from napari_segloop.core.io.limits import (
        max_image_bytes,
        parse_size,
        reset_max_image_bytes,
        set_max_image_bytes,
    )

    text = getattr(args, "max_image_size", None)
    try:
        if text is None:
            reset_max_image_bytes()
            max_image_bytes()  # a bad SEGLOOP_MAX_IMAGE_BYTES is told before any work
        else:
            set_max_image_bytes(parse_size(text))
    except InputError as exc:
        return f"--max-image-size: {exc}" if text is not None else str(exc)
    return None
