"""The ``segloop`` command line: the same engine as the napari plugin, headless.

One thin module per command (:mod:`.predict`, :mod:`.train`, :mod:`.evaluate`, :mod:`.suggest`,
:mod:`.simulate`, :mod:`.info`, :mod:`.export`, :mod:`.demo`), each a wrapper over one core
function: it parses arguments,
runs the core generator with :func:`~napari_segloop.core.events.run_to_end`
and prints the result.

Every user error prints one line to stderr (``segloop: error: ...``) and the
command exits non-zero, without a traceback. With several inputs, a bad file
does not stop the others; the exit code is 1 when any failed.

Exit codes: 0 success, 1 some inputs or the operation failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from napari_segloop import __version__
from napari_segloop.cli import demo, evaluate, export, info, predict, simulate, suggest, train
from napari_segloop.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, err

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]

#: The commands, in the order ``segloop --help`` lists them.
COMMANDS = {"predict": predict, "train": train, "evaluate": evaluate, "suggest": suggest,
            "simulate-active-learning": simulate, "info": info, "export": export, "demo": demo}


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``segloop`` command."""
    parser = argparse.ArgumentParser(
        prog="segloop",
        description="Deep-learning segmentation with a human in the loop (napari-segloop).",
    )
    parser.add_argument("--version", action="version", version=f"napari-segloop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``segloop`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        err("interrupted.")
        return 130
    except BrokenPipeError:  # the reader went away (``segloop info default | head``): stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
