"""``segloop simulate-active-learning``: uncertainty-driven against random annotation on labelled
images, a wrapper over :func:`napari_segloop.core.active.simulate.simulate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from napari_segloop.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_image_limit_arg,
    apply_image_limit,
    err,
    say,
    threads_arg,
)
from napari_segloop.cli.suggest import positive

CSV_NAME, PLOT_NAME = "active_learning.csv", "active_learning.png"


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``simulate-active-learning`` command."""
    p = sub.add_parser(
        "simulate-active-learning",
        help="simulate annotation rounds on labelled images: uncertainty-driven against random regions",
        description="On fully labelled 2-D images: hold out the right-hand part of each image, start "
                    "from a few random square regions of the rest, and in each round add regions "
                    "chosen by the model's uncertainty or at random, retrain from the starting model "
                    "with a fixed step budget, and score Dice on the held-out part. Writes "
                    f"{CSV_NAME} (one line per trained model) and {PLOT_NAME} (Dice against the "
                    "fraction annotated) into --output.")
    p.add_argument("--image", nargs="+", required=True, metavar="IMG", help="image files")
    p.add_argument("--labels", nargs="+", required=True, metavar="LBL",
                   help="ground truth (masks or instance labels), one per image, in the same order")
    p.add_argument("--output", "-o", required=True, metavar="DIR", help="folder for the CSV and the plot")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier CSV and plot in DIR")
    p.add_argument("--model", "-m", default=None,
                   help="model every round fine-tunes: 'default', a bundle folder or a state dict "
                        "(default: the built-in default model)")
    p.add_argument("--architecture", default=None,
                   help="instead of --model, train a NEW model of this architecture every round")
    p.add_argument("--encoder", default=None, help="encoder of a new model (default resnet34)")
    p.add_argument("--region", type=positive, default=64, help="side of the square regions (default 64)")
    p.add_argument("--initial", type=positive, default=4, help="random regions to start from (default 4)")
    p.add_argument("--per-round", type=positive, default=4, help="regions added per round (default 4)")
    p.add_argument("--rounds", type=positive, default=4, help="rounds after the first (default 4)")
    p.add_argument("--steps", type=positive, default=120, help="training steps per round (default 120)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="repetitions (default 0 1 2)")
    p.add_argument("--method", choices=("entropy", "tta", "mc-dropout"), default="entropy",
                   help="uncertainty of the uncertainty-driven strategy (default entropy)")
    p.add_argument("--passes", type=positive, default=None, help="passes of tta or mc-dropout")
    p.add_argument("--test-fraction", type=float, default=0.25,
                   help="share of each image's columns held out for scoring (default 0.25)")
    p.add_argument("--val-fraction", type=float, default=0.125,
                   help="share of each image's columns, left of the held-out part, used as the fixed "
                        "validation set (default 0.125)")
    p.add_argument("--batch-size", type=positive, default=8, help="patches per training step (default 8)")
    p.add_argument("--crop", type=positive, default=128, help="patch edge in pixels (default 128)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--threads", type=threads_arg, default="auto",
                   help="CPU threads for torch: 'auto' (all cores but one) or a number")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_image_limit_arg(p)


def run(args: argparse.Namespace) -> int:
    """Run ``segloop simulate-active-learning``."""
    from tqdm import tqdm

    from napari_segloop.core.active.report import plot_rows, summary_lines, write_csv
    from napari_segloop.core.active.simulate import SimulationConfig, simulate
    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import Notice, Progress, run_to_end
    from napari_segloop.core.inference.devices import resolve_device
    from napari_segloop.core.io.images import read_image
    from napari_segloop.core.models.registry import create_model
    from napari_segloop.core.training import TrainConfig

    if (problem := apply_image_limit(args)) is not None:
        err(problem)
        return EXIT_USAGE
    if len(args.image) != len(args.labels):
        err(f"--image gives {len(args.image)} file(s) but --labels {len(args.labels)}; give one "
            "ground-truth file per image, in the same order.")
        return EXIT_USAGE
    if args.model is not None and (args.architecture or args.encoder):
        err("give either --model (fine-tune it every round) or --architecture/--encoder (a new model).")
        return EXIT_USAGE
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        err(f"{out} is a file; give a folder for the CSV and the plot.")
        return EXIT_USAGE
    targets = [out / CSV_NAME, out / PLOT_NAME]
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        err(f"{existing[0]} already exists; choose another folder or add --overwrite.")
        return EXIT_USAGE
    config = SimulationConfig(
        region=args.region, initial=args.initial, per_round=args.per_round, rounds=args.rounds,
        steps=args.steps, seeds=tuple(args.seeds), method=args.method, passes=args.passes,
        test_fraction=args.test_fraction, val_fraction=args.val_fraction,
        train=TrainConfig(patience=0, batch_size=args.batch_size, crop=args.crop, device=args.device,
                          threads=args.threads),
    )
    try:
        config.checked()
        config.train.checked()
        resolve_device(args.device)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    try:
        images = [read_image(p) for p in args.image]
        truths = [read_image(p) for p in args.labels]
        if args.architecture or args.encoder:
            arch, encoder = args.architecture or "Unet", args.encoder or "resnet34"

            def start() -> object:
                return create_model(arch, encoder, in_channels=1, classes=1, encoder_weights=None)

            create_model(arch, encoder, in_channels=1, classes=1, encoder_weights=None)  # fails early
        else:
            start = load_model(args.model or "default")
        out.mkdir(parents=True, exist_ok=True)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    except OSError as exc:
        err(f"{out}: cannot create the folder ({exc.strerror or exc}).")
        return EXIT_FAILED

    bar = tqdm(total=None, unit="model", disable=True if args.quiet else None, file=sys.stderr,
               desc="simulating", leave=False)

    def show(event: object) -> None:
        if isinstance(event, Progress):
            bar.total = event.total
            bar.n = event.done
            bar.set_description_str(event.message, refresh=True)
        elif isinstance(event, Notice):
            bar.clear()
            say(event)

    try:
        rows = run_to_end(simulate(start, images, truths, config, [Path(p).name for p in args.image]),
                          show)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED
    finally:
        bar.close()
    try:
        write_csv(rows, targets[0])
        names = ", ".join(Path(p).name for p in args.image)
        plot_rows(rows, targets[1], f"{names}: {args.method}, regions of {args.region} px, "
                                    f"{args.steps} steps per round")
    except OSError as exc:
        err(f"{out}: cannot write the results ({exc.strerror or exc}).")
        return EXIT_FAILED
    for line in summary_lines(rows):
        print(line)
    print(f"wrote {targets[0]} and {targets[1]}", file=sys.stderr)
    return EXIT_OK
