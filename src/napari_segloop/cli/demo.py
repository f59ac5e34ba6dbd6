"""``segloop demo``: napari with the sample image, the default model and the plugin's panel."""

from __future__ import annotations

import argparse

from napari_segloop.cli.common import EXIT_FAILED, err


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``demo`` command."""
    p = sub.add_parser("demo", help="open napari with the sample image and the default model",
                       description="Open napari with the sample image, the default model and "
                                   "the plugin's panel (Model, Predict, Threshold and Confusion).")
    p.add_argument("--screenshot", metavar="PNG", default=None,
                   help="run the prediction, save a screenshot of the window and exit")


def run(args: argparse.Namespace) -> int:
    """Run ``segloop demo``."""
    try:
        from napari_segloop.demo import run_demo
    except ImportError as exc:
        err(f"the demo needs napari with a Qt binding: pip install 'napari-segloop[qt]' ({exc}).")
        return EXIT_FAILED
    return run_demo(screenshot=args.screenshot)
