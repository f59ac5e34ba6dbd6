"""The `segloop` command line that repeats what a dock just did, for scripts and clusters (no Qt)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from napari_segloop.core.bundle import ModelBundle
    from napari_segloop.core.inference.predict import PredictOptions

#: Shown instead of an image path when the layer was not opened from a file.
IMAGE_PLACEHOLDER = "IMAGE.tif"
#: Shown instead of a model path for a model that exists only in memory.
MODEL_PLACEHOLDER = "MODEL_FOLDER"


def model_arguments(bundle: ModelBundle) -> list[str]:
    """The ``--model`` (and, for a plain state dict, ``--arch/--encoder``) arguments.

    An ensemble gives one ``--model`` per member.
    """
    members = getattr(bundle, "members", None)
    if members is not None:
        return [arg for member in members for arg in model_arguments(member)]
    source = str(bundle.source)
    if source == "default":
        return ["--model", "default"]
    if source in ("", "new") or not Path(source).exists():
        return ["--model", MODEL_PLACEHOLDER]
    args = ["--model", source]
    if Path(source).is_file():
        args += ["--arch", bundle.architecture, "--encoder", bundle.encoder,
                 "--in-channels", str(bundle.in_channels)]
    return args


def predict_command(
    bundle: ModelBundle,
    options: PredictOptions,
    image_path: str | None,
    threads: int | str = "auto",
) -> str:
    """Return the ``segloop predict`` command equivalent to a dock's run.

    Parameters
    ----------
    bundle : ModelBundle
        The model used.
    options : PredictOptions
        The options as given by the user (device as requested); tile size,
        overlap and scale are written out explicitly.
    image_path : str, optional
        The image file (``layer.source.path``); a placeholder when None.
    threads : int or "auto"
        The CPU-thread setting (written out when it is not ``auto``).

    Returns
    -------
    str
        A shell command line (arguments quoted where needed).
    """
    members = getattr(bundle, "members", None)
    resolved = options.resolved(members[0] if members else bundle)
    image = image_path or IMAGE_PLACEHOLDER
    output = f"{Path(image).stem}_probability.tif"
    args = ["segloop", "predict", image, *model_arguments(bundle), "--output", output,
            "--device", str(options.device or "auto")]
    if members is None:
        args += ["--tile", str(resolved.tile_size), "--overlap", f"{resolved.overlap:g}",
                 "--batch-size", str(resolved.batch_size), "--scale", f"{resolved.scale:g}"]
    else:
        # Members may differ in tile size and scale: only what the user set is written out.
        for flag, value in (("--tile", options.tile_size), ("--overlap", options.overlap),
                            ("--batch-size", options.batch_size), ("--scale", options.scale)):
            if value is not None:
                args += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    if options.convert != "none":
        args += ["--convert", options.convert]
    if options.channel is not None:
        args += ["--channel", str(options.channel)]
    if threads != "auto":
        args += ["--threads", str(threads)]
    if not options.amp:
        args.append("--no-amp")
    return shlex.join(args)
