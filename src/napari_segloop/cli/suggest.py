"""``segloop suggest``: where to annotate next, a wrapper over
:func:`napari_segloop.core.active.uncertainty` and :func:`napari_segloop.core.active.rank_regions`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_segloop.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_image_limit_arg,
    apply_image_limit,
    channel_axis_arg,
    err,
    note,
    threads_arg,
)
from napari_segloop.cli.predict import CONVERSIONS


def positive(text: str) -> int:
    """An integer of at least 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("must be a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``suggest`` command."""
    from napari_segloop.core.active.uncertainty import METHODS

    p = sub.add_parser(
        "suggest", help="rank square regions by the model's uncertainty: where to annotate next",
        description="Compute the model's uncertainty on images and rank square regions of them, most "
                    "uncertain first. Regions already annotated in --labels are left out. With --json: "
                    "one JSON list of {\"bbox\": [y0, x0, y1, x1], \"score\": s} (pixel coordinates, "
                    "ends exclusive; [z, y0, x0, y1, x1] for stacks; an \"image\" key with several "
                    "images), sorted by descending score.")
    p.add_argument("--model", "-m", action="append", default=None, metavar="MODEL",
                   help="'default', a bundle folder or a state dict file; repeat it for an ensemble "
                        "(default: default)")
    p.add_argument("--image", nargs="+", required=True, metavar="IMG", help="image files")
    p.add_argument("--labels", nargs="+", default=None, metavar="LBL",
                   help="annotations, one file per image in the same order: regions holding "
                        "annotations are skipped")
    p.add_argument("--mode", choices=("scribbles", "dense", "correction"), default="scribbles",
                   help="how --labels say what is annotated: scribbles (any non-zero pixel; default), "
                        "dense or correction (every region of a plane with a non-zero pixel)")
    p.add_argument("--region", type=positive, default=128, metavar="N",
                   help="side of the square regions in pixels (not the inference tile; default 128)")
    p.add_argument("--top", type=positive, default=None, metavar="K",
                   help="list only the K most uncertain regions (default: every region of the grid)")
    p.add_argument("--method", choices=METHODS, default=None,
                   help="entropy (1 pass; default with one model), tta (flips and 90-degree rotations), "
                        "mc-dropout (models with dropout), ensemble (several --model; default then)")
    p.add_argument("--passes", type=positive, default=None,
                   help="augmentations of tta (2-8, default 4) or samples of mc-dropout (default 8)")
    p.add_argument("--json", action="store_true", help="print one JSON list on stdout")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--threads", type=threads_arg, default="auto",
                   help="CPU threads for torch: 'auto' (all cores but one, at most 8) or a number")
    p.add_argument("--tile", type=int, default=None, help="inference tile size, a multiple of 32")
    p.add_argument("--channel-axis", type=channel_axis_arg, default="auto",
                   help="channel axis of the images: auto, none or an integer")
    p.add_argument("--convert", choices=CONVERSIONS, default="none",
                   help="explicit channel conversion, as for predict")
    p.add_argument("--channel", type=int, default=None, help="use only this channel")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    add_image_limit_arg(p)


def run(args: argparse.Namespace) -> int:
    """Run ``segloop suggest``."""
    from napari_segloop.core.active import merge_rankings, rank_regions, uncertainty
    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import Notice, run_to_end
    from napari_segloop.core.inference.devices import resolve_device
    from napari_segloop.core.inference.predict import PredictOptions
    from napari_segloop.core.inference.threads import apply_threads
    from napari_segloop.core.io.images import read_image

    if (problem := apply_image_limit(args)) is not None:
        err(problem)
        return EXIT_USAGE
    models = args.model or ["default"]
    method = args.method or ("ensemble" if len(models) > 1 else "entropy")
    if method == "ensemble" and len(models) < 2:
        err("--method ensemble needs at least two --model.")
        return EXIT_USAGE
    if method != "ensemble" and len(models) > 1:
        err(f"{len(models)} models were given: use --method ensemble (or give one --model).")
        return EXIT_USAGE
    if args.labels is not None and len(args.labels) != len(args.image):
        err(f"--image gives {len(args.image)} file(s) but --labels {len(args.labels)}; give one labels "
            "file per image, in the same order.")
        return EXIT_USAGE
    options = PredictOptions(device=args.device, tile_size=args.tile, amp=not args.no_amp,
                             channel_axis=args.channel_axis, convert=args.convert, channel=args.channel)
    try:
        resolve_device(args.device)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    apply_threads(args.threads)
    try:
        bundles = [load_model(m) for m in models]
        for b in bundles:
            options.resolved(b)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED

    def show(event: object) -> None:
        if isinstance(event, Notice):
            note(event.text)

    several = len(args.image) > 1
    rankings = []
    described = ""
    for k, path in enumerate(args.image):
        try:
            image = read_image(path)
            labels = read_image(args.labels[k]) if args.labels is not None else None
            result = run_to_end(uncertainty(bundles[0], image, options, method, args.passes,
                                            members=bundles[1:]), show)
            described = result.description
            rankings.append(rank_regions(result.uncertainty, args.region, labels, args.mode,
                                         image=str(path) if several else None))
        except SegloopError as exc:
            msg = str(exc)
            err(msg if msg.startswith(str(path)) else f"{path}: {msg}")
            return EXIT_FAILED
        except MemoryError:
            err(f"{path}: not enough memory for this image.")
            return EXIT_FAILED
    regions = merge_rankings(rankings, args.top)
    if args.json:
        json.dump([r.as_json() for r in regions], sys.stdout)
        sys.stdout.write("\n")
        return EXIT_OK
    if not regions:
        note("every region is annotated already.")
        return EXIT_OK
    note(f"{described}; regions of {args.region} px, most uncertain first")
    stack = any(r.index for r in regions)
    head = ["rank", *(["image"] if several else []), *(["slice"] if stack else []),
            "y0", "x0", "y1", "x1", "score"]
    print("\t".join(head))
    for rank, reg in enumerate(regions, 1):
        cells = [str(rank), *([Path(reg.image or "").name] if several else []),
                 *([",".join(map(str, reg.index))] if stack else []), *map(str, reg.bbox), f"{reg.score:.4f}"]
        print("\t".join(cells))
    return EXIT_OK
