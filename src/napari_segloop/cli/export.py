"""``segloop export``: a bundle as a bioimage.io package, ONNX, TorchScript or a torch.export program.

A wrapper over :func:`napari_segloop.core.export.export_model`.
"""

from __future__ import annotations

import argparse
import sys

from napari_segloop.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_model_args,
    err,
    load_model,
    note,
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``export`` command."""
    from napari_segloop.core.export import FORMATS

    formats = "; ".join(f"{k}: {v}" for k, v in FORMATS.items())
    p = sub.add_parser("export", help="export a model for other tools (bioimage.io, ONNX, TorchScript)",
                       description="Export a model for other tools. " + formats + ".")
    p.add_argument("model", help="'default', a bundle folder, or a state dict file")
    p.add_argument("--format", "-f", dest="fmt", choices=tuple(FORMATS), default="bioimageio",
                   help="what to write (default bioimageio)")
    p.add_argument("--output", "-o", required=True,
                   help="the file to write (.zip, .onnx, .pt or .pt2 by format)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.add_argument("--sample", default=None, metavar="IMAGE",
                   help="image the export is tested on (default: the bundle's training image, "
                        "else the synthetic nuclei sample)")
    g = p.add_argument_group("bioimage.io description (placeholders where not given)")
    g.add_argument("--name", default=None, help="model name (default: the bundle folder's name)")
    g.add_argument("--description", default="", help="what it segments, in which images")
    g.add_argument("--author", action="append", default=[], metavar="'NAME; AFFILIATION; ORCID'",
                   help="an author (repeat for several; affiliation and ORCID optional)")
    g.add_argument("--license", default="CC-BY-4.0", help="SPDX licence id (default CC-BY-4.0)")
    g.add_argument("--cite", action="append", default=[], metavar="'TEXT; DOI or URL'",
                   help="a reference to cite (the architecture's paper is always cited)")
    g.add_argument("--tag", action="append", default=[], help="a search tag (repeat for several)")
    g.add_argument("--model-version", default="0.1.0", help="the model's own version (default 0.1.0)")
    g.add_argument("--no-test", action="store_true",
                   help="skip bioimage.io's model test of the written package")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    add_model_args(p)


def _meta(args: argparse.Namespace, default_name: str):
    from napari_segloop.core.export import Author, Citation, ExportMeta

    return ExportMeta(
        name=args.name or default_name, description=args.description,
        authors=[Author.parse(a) for a in args.author],
        license=args.license, citations=[Citation.parse(c) for c in args.cite],
        tags=list(args.tag), version=args.model_version,
    )


def run(args: argparse.Namespace) -> int:
    """Run ``segloop export``."""
    import json

    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import run_to_end
    from napari_segloop.core.export import export_model
    from napari_segloop.core.export.metadata import default_name

    name = default_name(str(args.model))
    try:
        meta = _meta(args, name)
    except ValueError as exc:
        err(str(exc))
        return EXIT_USAGE
    try:
        bundle = load_model(args)
        image = None
        if args.sample is not None:
            from napari_segloop.core.io.images import read_image

            image = read_image(args.sample)
        # The notes come back in the result (printed once, below), so the events are not printed.
        result = run_to_end(export_model(bundle, args.fmt, args.output, meta, image,
                                         overwrite=args.overwrite, run_test=not args.no_test))
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    gaps = ", ".join(f"{k} {v:.1e}" for k, v in result.parity.items())
    if args.json:
        print(json.dumps({"output": str(result.path), "format": args.fmt, "parity": result.parity,
                          "test": result.test, "notes": result.notes}))
    else:
        print(f"wrote {result.path} ({args.fmt})")
        print(f"largest probability difference against the PyTorch model: {gaps}")
        if result.test:
            print(f"bioimage.io model test: {result.test}")
    for text in result.notes:
        note(text)
    sys.stdout.flush()
    return EXIT_OK
