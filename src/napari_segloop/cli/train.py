"""``segloop train``: fine-tune a model (or train a new one) on painted labels, a wrapper over
:func:`napari_segloop.core.training.train`."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from napari_segloop.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_image_limit_arg,
    apply_image_limit,
    channel_axis_arg,
    err,
    note,
    say,
    threads_arg,
)
from napari_segloop.core.errors import ModelLoadError

CONVERSIONS = ("none", "gray", "repeat", "invert", "hematoxylin")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the ``train`` command."""
    from napari_segloop.core.training.annotations import MODES
    from napari_segloop.core.training.losses import LOSSES

    p = sub.add_parser(
        "train", help="fine-tune a model on painted labels (or train a new one)",
        description="Fine-tune a model on painted labels, or train a new one, and save it as a "
                    "new bundle with the labels it used. Labels: mode scribbles (0 = not "
                    "annotated, 1 = foreground, 2 = background), dense (0 = background, other "
                    "values = foreground) or correction (an edited copy of a predicted mask). "
                    "With --classes K (K >= 3): scribbles 1..K-1 = the classes and K = "
                    "background; dense labels 0 = background and 1..K-1 = the classes. "
                    "Stacks may be annotated on some slices only.")
    p.add_argument("--image", nargs="+", required=True, metavar="IMG", help="image files")
    p.add_argument("--labels", nargs="+", required=True, metavar="LBL",
                   help="labels files, one per image, in the same order")
    p.add_argument("--mode", choices=MODES, required=True, help="how the labels are read")
    p.add_argument("--output", "-o", required=True, metavar="BUNDLE_DIR",
                   help="folder of the new bundle (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing BUNDLE_DIR (atomically, once training is done)")
    p.add_argument("--model", "-m", default=None,
                   help="model to fine-tune: 'default', a bundle folder or a state dict file "
                        "(default: the built-in default model)")
    p.add_argument("--architecture", "--arch", default=None,
                   help="train a NEW model of this architecture (e.g. Unet, UnetPlusPlus, FPN), "
                        "or describe a plain state dict given with --model")
    p.add_argument("--encoder", default=None,
                   help="encoder of a new model (e.g. resnet34, vgg16, tu-xception65, plain; "
                        "default: the architecture's own, see docs/architectures.md)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="a new model the courses name, e.g. 'Attention VGG-UNet3+', 'U-Net, "
                        "classic', 'DeepLabV3+ Xception65' (see docs/architectures.md)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting of a new model, e.g. base_channels=32, attention=true, "
                        "deep_supervision=true, encoder_depth=4 (repeat for several)")
    p.add_argument("--encoder-weights", choices=("none", "imagenet"), default="none",
                   help="initial encoder weights of a new model (imagenet needs the network "
                        "or a cached copy)")
    p.add_argument("--in-channels", type=int, default=1, help="input channels of a new model (default 1)")
    p.add_argument("--classes", type=int, default=None, metavar="K",
                   help="classes with background: 2 (binary, the default) or 3 and more (a "
                        "softmax model; its labels use the K-class convention above)")
    p.add_argument("--class-names", default=None, metavar="NAMES",
                   help="comma-separated names of the K classes of a new model, background first")
    p.add_argument("--max-seconds", type=float, default=None, help="time budget (default 120 s)")
    p.add_argument("--max-steps", type=int, default=None, help="step budget")
    freeze = p.add_mutually_exclusive_group()
    freeze.add_argument("--freeze-encoder", action="store_true",
                        help="train only the decoder (feature extraction)")
    freeze.add_argument("--freeze-then-unfreeze", action="store_true",
                        help="encoder frozen for the first 30%% of the budget, then trained with "
                             "a 10x lower learning rate")
    p.add_argument("--loss", choices=LOSSES, default="bce+dice", help="loss on the annotated pixels")
    p.add_argument("--pos-weight", type=float, default=None,
                   help="foreground weight of wbce (default: from the label frequencies)")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default: 3e-3 for a new model; fine-tuning 3e-4 for a "
                        "model that already scores well on the held-out labels, up to 1.5e-3 for "
                        "one that does not)")
    p.add_argument("--batch-size", type=int, default=8, help="patches per step (default 8)")
    p.add_argument("--crop", type=int, default=128, help="patch edge in pixels (default 128)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the annotated blocks held out for validation (default 0.2)")
    p.add_argument("--patience", type=int, default=12,
                   help="stop after this many validations without improvement (0: never)")
    p.add_argument("--keep-weight", type=float, default=1.0,
                   help="weight of the term that keeps the starting model's prediction where "
                        "nothing is painted (fine-tuning; scaled down when the starting model "
                        "scores badly on the held-out labels; 0 turns it off)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default auto)")
    p.add_argument("--threads", type=threads_arg, default="auto",
                   help="CPU threads for torch: 'auto' (all cores but one) or a number")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--seed", type=int, default=0, help="seed of sampling and the validation split")
    p.add_argument("--channel-axis", type=channel_axis_arg, default="auto",
                   help="channel axis of the images: auto, none or an integer")
    p.add_argument("--convert", choices=CONVERSIONS, default="none",
                   help="explicit channel conversion, as for predict")
    p.add_argument("--channel", type=int, default=None, help="use only this channel")
    p.add_argument("--float16", action="store_true", help="store the weights as float16")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_image_limit_arg(p)


def parse_model_options(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` settings of a new model; values are read as JSON (``true``, ``32``), else text.

    Raises
    ------
    ModelLoadError
        For an item without ``=``.
    """
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ModelLoadError(f"--model-option {item!r} must be KEY=VALUE, e.g. base_channels=32.")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def _start_model(args: argparse.Namespace) -> Any:
    from napari_segloop.core.bundle import load_model
    from napari_segloop.core.models.registry import create_model
    from napari_segloop.core.training.annotations import label_classes

    options = parse_model_options(args.model_option)
    if args.model is not None and args.preset:
        raise ModelLoadError("--preset makes a new model; leave out --model (or the preset).")
    if args.model is None and (args.architecture or args.encoder or args.preset or options):
        arch, encoder = args.architecture, args.encoder
        if args.preset:
            from napari_segloop.core.models.presets import find_preset

            preset = find_preset(args.preset)
            arch, encoder = arch or preset.architecture, encoder or preset.encoder
            options = {**preset.options, **options}
        k = args.classes or 2
        bundle = create_model(arch or "Unet", encoder, in_channels=args.in_channels,
                              classes=1 if k <= 2 else k, encoder_weights=args.encoder_weights,
                              **options)
        if args.class_names:
            bundle.settings.class_names = _class_names(args.class_names, k)
        return bundle
    if options:
        raise ModelLoadError("--model-option applies to a new model (--architecture or --preset), "
                             "not to --model.")
    if args.classes and args.classes >= 3 and args.model is None:
        raise ModelLoadError(f"The default model is binary; for {args.classes} classes make a new "
                             "model with --architecture or --preset.")
    bundle = load_model(args.model or "default", args.architecture, args.encoder, args.in_channels)
    if args.classes is not None and label_classes(bundle.classes) != max(2, args.classes):
        raise ModelLoadError(f"{args.model} has {label_classes(bundle.classes)} classes, not "
                             f"{args.classes}; leave out --classes or make a new model.")
    if args.class_names:
        raise ModelLoadError("--class-names names the classes of a new model; --model keeps its own.")
    return bundle


def _class_names(text: str, k: int) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if len(names) != k or not all(names):
        raise ModelLoadError(f"--class-names gives {len(names)} name(s) for {k} classes; give one "
                             "per class, background first, separated by commas.")
    return names


def run(args: argparse.Namespace) -> int:
    """Run ``segloop train``."""
    from tqdm import tqdm

    from napari_segloop.core.errors import SegloopError
    from napari_segloop.core.events import Notice, Progress, TrainStep, Validation, run_to_end
    from napari_segloop.core.inference.devices import resolve_device
    from napari_segloop.core.io.images import read_image
    from napari_segloop.core.training import TrainConfig, TrainControl, TrainingPair
    from napari_segloop.core.training.runs import partial_path, train_to_folder

    if (problem := apply_image_limit(args)) is not None:
        err(problem)
        return EXIT_USAGE
    if len(args.image) != len(args.labels):
        err(f"--image gives {len(args.image)} file(s) but --labels {len(args.labels)}; give one "
            "labels file per image, in the same order.")
        return EXIT_USAGE
    if args.classes is not None and not 2 <= args.classes <= 32:
        err(f"--classes must be from 2 (binary) to 32, background included; got {args.classes}.")
        return EXIT_USAGE
    if args.class_names and (args.classes or 2) < 3:
        err("--class-names names the classes of a model of 3 or more classes; add --classes K.")
        return EXIT_USAGE
    if args.model is not None and args.encoder_weights != "none":
        err("--encoder-weights applies to a new model (--architecture/--encoder), not to --model.")
        return EXIT_USAGE
    output = Path(args.output)
    if output.exists() and not args.overwrite:
        err(f"{output} already exists; choose another folder or add --overwrite.")
        return EXIT_USAGE
    if output.exists() and not output.is_dir():
        err(f"{output} is a file, not a bundle folder.")
        return EXIT_USAGE
    inputs = [Path(p).resolve() for p in [*args.image, *args.labels]]
    if output.resolve() in inputs or any(output.resolve() in p.parents for p in inputs):
        err(f"{output}: the new bundle would replace or contain an input file.")
        return EXIT_USAGE
    transfer = "frozen" if args.freeze_encoder else (
        "frozen_then_unfrozen" if args.freeze_then_unfreeze else "full")
    config = TrainConfig(
        mode=args.mode, loss=args.loss, pos_weight=args.pos_weight, transfer=transfer,
        max_steps=args.max_steps, max_seconds=args.max_seconds, lr=args.lr,
        batch_size=args.batch_size, crop=args.crop, val_fraction=args.val_fraction,
        patience=args.patience, keep_weight=args.keep_weight, seed=args.seed, device=args.device,
        amp=not args.no_amp, threads=args.threads, channel_axis=args.channel_axis,
        convert=args.convert, channel=args.channel,
    )
    try:
        config = config.checked()
        resolve_device(args.device)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_USAGE
    pairs = []
    for img_path, lab_path in zip(args.image, args.labels, strict=True):
        try:
            image, labels = read_image(img_path), read_image(lab_path)
        except SegloopError as exc:
            err(str(exc))
            return EXIT_FAILED
        pairs.append(TrainingPair(image, labels, Path(img_path).name))
    try:
        start = _start_model(args)
    except SegloopError as exc:
        err(str(exc))
        return EXIT_FAILED

    control = TrainControl()
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum: int, frame: Any) -> None:
        # First Ctrl+C: finish the current step and save the best model; a second one aborts.
        signal.signal(signal.SIGINT, previous)
        note("stopping after this step (Ctrl+C again to abort without saving) ...")
        control.stop()

    total = config.max_steps or int(config.max_seconds or 0)
    unit = "step" if config.max_steps else "s"
    bar = tqdm(total=total, unit=unit, disable=True if args.quiet else None, file=sys.stderr,
               desc="training", leave=False)
    state = {"val": ""}

    def show(event: object) -> None:
        if isinstance(event, TrainStep):
            bar.n = min(total, event.step if config.max_steps else int(event.elapsed))
            bar.set_postfix_str(f"loss {event.loss:.4f}{state['val']}", refresh=False)
            bar.refresh()
        elif isinstance(event, Validation):
            state["val"] = f", val Dice {event.dice:.3f}" + (" *" if event.best else "")
        elif isinstance(event, Notice):
            bar.clear()
            say(event)
        elif isinstance(event, Progress) and event.message and event.total:
            bar.set_description_str(event.message, refresh=True)

    try:
        signal.signal(signal.SIGINT, on_interrupt)
    except ValueError:  # not the main thread (tests driving main() from a thread)
        pass
    try:
        saved = run_to_end(train_to_folder(start, pairs, config, output, control,
                                           overwrite=args.overwrite,
                                           dtype="float16" if args.float16 else "float32"), show)
    except SegloopError as exc:
        bar.close()
        err(str(exc))
        return EXIT_FAILED
    except KeyboardInterrupt:
        bar.close()
        part = partial_path(output)
        if part.exists():
            note(f"the best weights so far and the labels are in {part}")
        raise
    finally:
        bar.close()
        try:
            signal.signal(signal.SIGINT, previous)
        except ValueError:
            pass
    result, path = saved.result, saved.path
    start_dice = "" if result.baseline is None else f"{result.baseline['dice']:.3f} -> "
    what = "Dice" if "miou" not in result.best else "mean Dice of the classes"
    extra = f", mIoU {result.best['miou']:.3f}" if "miou" in result.best else ""
    print(f"trained {result.steps} steps ({result.stop_reason}); held-out {what} "
          f"{start_dice}{result.best['dice']:.3f}{extra} (best at step {result.best_step}); saved {path}",
          file=sys.stderr)
    return EXIT_OK
