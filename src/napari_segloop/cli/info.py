"""``segloop info``: describe a model."""

from __future__ import annotations

import argparse
import json

from napari_segloop.cli.common import EXIT_FAILED, EXIT_OK, add_model_args, err, load_model


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``info`` command."""
    p = sub.add_parser("info", help="describe a model", description="Describe a model.")
    p.add_argument("model", help="'default', a bundle folder, or a state dict file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_model_args(p)


def run(args: argparse.Namespace) -> int:
    """Run ``segloop info``."""
    from napari_segloop.core.errors import SegloopError

    try:
        bundle = load_model(args)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    info = bundle.describe()
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value}")
    return EXIT_OK
