"""Export a bundle as a bioimage.io model package (spec 0.5), built and validated with ``bioimageio.spec``.

The package (a ``.zip``) holds:

* three weight entries that compute the same logits: the PyTorch state dict
  (``weights.pt``, with the architecture named as a library callable,
  ``segmentation_models_pytorch.Unet(**kwargs)`` or segloop's own
  ``napari_segloop.core.models.unets.ClassicUNet``, so a consumer rebuilds it
  without any code from the package), TorchScript and ONNX, both marked as
  converted from the state dict;
* the pre-processing the bundle really uses: ``ensure_dtype`` float32, then
  percentile ``scale_range`` per sample and channel over y and x with the
  bundle's percentiles, then ``clip`` (or ``zero_mean_unit_variance`` over y
  and x for per-image z-scores, or ``fixed_zero_mean_unit_variance`` for
  fixed statistics), and the post-processing: ``sigmoid`` (one output
  channel) or ``softmax`` over the channels (several);
* axes ``batch, channel, y, x`` with sides ``min + n * step`` (the step is
  the input multiple), an output halo of half the tiler's overlap, and the
  tile size in ``config.segloop``;
* a test input (a raw crop of the sample) and the test output segloop
  computes for it, a cover image (image, probability, mask), a model card
  (``README.md``) that documents the threshold and post-processing, the
  authors, licence and citations, and ``config.segloop`` with the bundle's
  whole ``segloop.json``, so that importing the package back into segloop
  restores every setting.

:func:`export_bioimageio` is a generator: it yields :class:`Progress` and
:class:`Notice` and returns an :class:`ExportResult`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.events import Notice, Progress
from napari_segloop.core.export.metadata import PLACEHOLDER_AUTHOR, ExportMeta
from napari_segloop.core.export.sample import (
    MAX_SAMPLE_SIDE,
    choose_sample,
    cover_image,
    normalized_input,
    sample_probability,
)
from napari_segloop.core.export.shapes import min_side
from napari_segloop.core.io.atomic import atomic_path
from napari_segloop.core.text import printable

#: Largest probability difference allowed between the weight formats and the PyTorch model.
PARITY_TOLERANCE = 1e-4
#: What the package's ``reproducibility_tolerance`` allows a consumer's output to differ by
#: (other hardware and libraries; segloop's own formats agree to :data:`PARITY_TOLERANCE`).
PACKAGE_TOLERANCE = 1e-3
#: ``scale_range``'s epsilon (bioimage.io divides by ``high - low + eps``).
SCALE_RANGE_EPS = 1e-6
#: Where each family's architectures are imported from by a consumer.
LIBRARIES = {"smp": "segmentation_models_pytorch"}
WEIGHT_FORMATS = ("pytorch_state_dict", "torchscript", "onnx")


@dataclass
class ExportResult:
    """What an export wrote and measured.

    Attributes
    ----------
    path : Path
        The written file.
    parity : dict
        Largest probability difference of each weight format against the
        PyTorch model, on the sample at two sizes.
    notes : list of str
        What the user should know (placeholders to fill, settings a consumer
        cannot honour).
    test : str
        The result of bioimage.io's own model test ("" when not run).
    """

    path: Path
    parity: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    test: str = ""


def architecture_source(bundle: ModelBundle) -> tuple[str, str, dict[str, Any]]:
    """``(import_from, callable, kwargs)`` that rebuild the network with no code from the package.

    Raises
    ------
    ModelLoadError
        If the network's architecture is not in the registry.
    """
    from napari_segloop.core.models.registry import get_spec

    spec = get_spec(bundle.architecture)
    if spec.family in LIBRARIES:
        module = LIBRARIES[spec.family]
    else:
        module = spec.cls.__module__
    kwargs = dict(bundle.config)
    kwargs["encoder_weights"] = None
    kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    return module, spec.cls.__name__, kwargs


def _identifier(text: str, fallback: str) -> str:
    value = re.sub(r"[^A-Za-z0-9_]+", "_", str(text)).strip("_")
    return value or fallback


def _halo(bundle: ModelBundle) -> int:
    """Half the tiler's overlap in pixels (what a consumer should crop from each tile side)."""
    s = bundle.settings
    return max(1, round(float(s.overlap) * int(s.tile_size) / 2))


def probability_gaps(bundle: ModelBundle, runners: dict[str, Any], raw: np.ndarray,
                     multiple: int) -> dict[str, float]:
    """Largest probability gap of each runner against the PyTorch model, at two input sizes."""
    import torch

    from napari_segloop.core.models.registry import probabilities

    full = torch.from_numpy(normalized_input(bundle, raw))
    s = full.shape[-1]
    small = min_side(multiple)
    inputs = [full]
    if s > small:  # a second, non-square size proves height and width are free
        inputs.append(full[..., : max(small, (s // 2) - (s // 2) % multiple), :].contiguous())
    model = bundle.model.to("cpu").eval()
    gaps: dict[str, float] = {}
    with torch.no_grad():
        refs = [probabilities(model(x)) for x in inputs]
        for name, run in runners.items():
            gaps[name] = max(float((probabilities(run(x)) - ref).abs().max())
                             for x, ref in zip(inputs, refs, strict=True))
    return gaps


def _model_card(bundle: ModelBundle, meta: ExportMeta, halo: int, notes: list[str]) -> str:
    s = bundle.settings
    desc = bundle.describe()
    lines = [f"# {meta.name}", "", meta.description or "*(Describe what this model segments and in "
             "which images before sharing it.)*", "",
             "Exported by napari-segloop. The network outputs logits; the package's post-processing "
             "turns them into "
             f"{'a probability (sigmoid)' if bundle.classes == 1 else 'class probabilities (softmax)'}.",
             "", "## Using the output", ""]
    if bundle.classes == 1:
        lines += [f"- Threshold: foreground where probability > **{s.threshold:g}** (chosen in segloop).",
                  f"- Post-processing segloop applies after the threshold: {desc['post-processing']}."]
    else:
        lines += [f"- Classes: {', '.join(bundle.class_names)}; the mask is the arg-max.",
                  f"- Minimum confidence: {s.threshold:g} (pixels whose best class is less likely are "
                  "left unassigned)."]
    lines += [f"- Tiles: {s.tile_size} px with overlap {s.overlap:g}; crop a halo of {halo} px from "
              "each side of a tile's output.", "", "## The network", ""]
    lines += [f"- {key}: {value}" for key, value in desc.items()
              if key not in ("source", "loading notes", "training history")]
    if notes:
        lines += ["", "## Notes", "", *(f"- {n}" for n in notes)]
    return "\n".join(lines) + "\n"


def _training_details(bundle: ModelBundle) -> dict[str, Any]:
    prov = bundle.settings.provenance or {}
    training = prov.get("training") if isinstance(prov.get("training"), dict) else {}
    config = training.get("config") if isinstance(training.get("config"), dict) else {}
    details: dict[str, Any] = {}
    if config:
        for key, target in (("loss", "loss_function"), ("lr", "initial_learning_rate"),
                            ("batch_size", "training_batch_size")):
            if config.get(key) is not None:
                details[target] = config[key]
    if "initial_learning_rate" not in details and training.get("learning_rate") is not None:
        details["initial_learning_rate"] = training["learning_rate"]  # the trainer's own choice
    if training.get("steps") is not None:
        details["learning_rate_schedule"] = (f"{training['steps']} steps with warm-up and cosine decay "
                                             "(segloop's trainer)")
    norm = bundle.settings.normalization
    details["training_preprocessing"] = {
        "percentile": f"percentile normalisation {norm.low:g}-{norm.high:g} per image and channel",
        "zscore": "zero mean, unit variance per image and channel",
    }.get(norm.kind, "fixed mean/std normalisation")
    return details


def export_bioimageio(
    bundle: ModelBundle,
    output: str | os.PathLike,
    meta: ExportMeta | None = None,
    image: Any = None,
    *,
    overwrite: bool = False,
    run_test: bool = True,
    **prepare: Any,
) -> Generator[Progress | Notice, None, ExportResult]:
    """Write ``bundle`` as a bioimage.io 0.5 package (``.zip``), atomically.

    Parameters
    ----------
    bundle : ModelBundle
        The model (not modified).
    output : path
        The ``.zip`` to write; an existing file only with ``overwrite``.
    meta : ExportMeta, optional
        Name, authors, licence, citations; placeholders where missing.
    image : array-like, optional
        The sample to test on (default: the bundle's training image, or the
        synthetic nuclei sample).
    overwrite : bool
        Replace an existing file.
    run_test : bool
        Run ``bioimageio.core``'s model test on the written package.
    **prepare
        Channel options for the sample (``channel_axis``, ``rgb``, ``convert``, ``channel``).

    Returns
    -------
    ExportResult

    Raises
    ------
    ModelLoadError
        Existing output, an architecture outside the registry, a weight format
        that differs from the PyTorch model by more than
        :data:`PARITY_TOLERANCE`, or a description ``bioimageio.spec`` refuses.
    """
    output = Path(output)
    if output.exists() and not overwrite:
        raise ModelLoadError(f"{printable(output)} already exists; choose another name or allow "
                             "overwriting (--overwrite).")
    if output.suffix.lower() != ".zip":
        raise ModelLoadError(f"A bioimage.io package is a .zip file; got {printable(output.name)}.")
    meta = meta or ExportMeta()
    if (problem := meta.name_problem()) is not None:
        raise ModelLoadError(problem)
    import_from, callable_name, kwargs = architecture_source(bundle)
    notes: list[str] = []
    steps = 7
    yield Progress(0, steps, "choosing the sample")
    multiple = bundle.input_multiple
    halo = _halo(bundle)
    smallest = max(min_side(multiple), -(-(2 * halo + multiple) // multiple) * multiple)
    side = max(smallest, min(int(bundle.settings.tile_size), MAX_SAMPLE_SIDE))
    side -= side % multiple
    side = max(side, smallest)
    sample = choose_sample(bundle, side, multiple, image, **prepare)
    raw = sample.raw
    prob = sample_probability(bundle, raw)
    s = bundle.settings
    if s.scale_factor != 1:
        notes.append(f"segloop resizes images by {s.scale_factor:g} for this model; bioimage.io "
                     "consumers do not: resize your images before giving them to the package.")
    elif s.object_size:
        notes.append(f"The model was trained on objects about {s.object_size:g} px across; segloop "
                     "can resize images by object size, bioimage.io consumers cannot: give images at "
                     "that scale.")
    for missing in meta.placeholders():
        notes.append(f"The {missing} field holds a placeholder: fill it in before sharing the model.")
    work = Path(tempfile.mkdtemp(prefix="segloop-export-"))
    try:
        from napari_segloop.core.export.onnx_weights import OnnxNetwork, export_onnx
        from napari_segloop.core.export.torch_weights import (
            export_torchscript,
            load_torchscript,
            save_state_dict,
        )

        yield Progress(1, steps, "writing the PyTorch weights")
        save_state_dict(bundle.model, work / "weights.pt")
        yield Progress(2, steps, "tracing TorchScript")
        export_torchscript(bundle.model, work / "weights.torchscript.pt", bundle.in_channels, multiple)
        yield Progress(3, steps, "exporting ONNX")
        export_onnx(bundle.model, work / "weights.onnx", bundle.in_channels, multiple)
        runners = {
            "torchscript": load_torchscript(work / "weights.torchscript.pt", allow_code=True),
            "onnx": OnnxNetwork(work / "weights.onnx", bundle.config, multiple),
        }
        yield Progress(4, steps, "checking the weight formats")
        parity = probability_gaps(bundle, runners, raw, multiple)
        del runners
        for name, gap in parity.items():
            if not gap <= PARITY_TOLERANCE:
                raise ModelLoadError(f"The {name} weights differ from the PyTorch model by {gap:.2g} "
                                     f"(more than {PARITY_TOLERANCE:g}); the package was not written.")
        np.save(work / "test_input.npy", raw[None])
        np.save(work / "test_output.npy", prob[None])
        from PIL import Image

        Image.fromarray(cover_image(raw, prob, s.threshold)).save(work / "cover.png")
        (work / "README.md").write_text(_model_card(bundle, meta, halo, notes), encoding="utf-8")
        yield Progress(5, steps, "validating the description")
        from pydantic import ValidationError

        try:
            descr = _description(bundle, meta, work, import_from, callable_name, kwargs, halo,
                                 smallest, multiple)
        except ValidationError as exc:
            first = exc.errors()[0] if exc.errors() else {}
            where = ".".join(str(x) for x in first.get("loc", ()))
            raise ModelLoadError(f"bioimage.io refuses the description: {where}: "
                                 f"{printable(first.get('msg', exc), 200)}") from exc
        from bioimageio.spec import save_bioimageio_package

        try:
            with atomic_path(output) as tmp:
                save_bioimageio_package(descr, output_path=tmp.with_suffix(".zip"))
                os.replace(tmp.with_suffix(".zip"), tmp)
        except OSError as exc:
            raise ModelLoadError(f"Could not write {printable(output)}: {exc.strerror or exc}") from exc
        result = ExportResult(output, parity, notes)
        if run_test:
            yield Progress(6, steps, "running the bioimage.io model test")
            result.test = run_model_test(output)
        yield Progress(steps, steps, "done")
        for note in notes:
            yield Notice(note, "warning")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_model_test(package: str | os.PathLike) -> str:
    """Run ``bioimageio.core``'s model test on a package (offline); return a one-line summary.

    Raises
    ------
    ModelLoadError
        If the test fails (the message names the first failed check).
    """
    from bioimageio.core import test_model

    summary = test_model(str(package), devices=["cpu"])
    if summary.status != "passed":
        failed = [d for d in summary.details if d.status == "failed"]
        first = failed[0] if failed else None
        text = f"{first.name}: {printable(first.errors[0].msg if first.errors else '', 300)}" if first else ""
        raise ModelLoadError(f"bioimage.io's model test failed on {printable(package)}: {text}")
    formats = sorted({str(d.loc[1]) for d in summary.details
                      if len(d.loc) > 1 and d.loc[0] == "weights"})
    return "passed" + (f" ({', '.join(formats)})" if formats else "")


def _description(bundle: ModelBundle, meta: ExportMeta, work: Path, import_from: str, callable_name: str,
                 kwargs: dict[str, Any], halo: int, smallest: int, multiple: int) -> Any:
    import segmentation_models_pytorch as smp
    import torch
    from bioimageio.spec.model import v0_5 as bio

    from napari_segloop import __version__
    from napari_segloop.core.export.onnx_weights import OPSET

    s = bundle.settings
    norm = s.normalization
    version = torch.__version__.split("+")[0]
    channel_names = [_identifier(n, f"channel{i}") for i, n in enumerate(s.channel_names)]
    class_names = ([_identifier(n, f"class{i}") for i, n in enumerate(bundle.class_names)]
                   if bundle.classes > 1 else ["probability"])
    pre: list[Any] = [bio.EnsureDtypeDescr(kwargs=bio.EnsureDtypeKwargs(dtype="float32"))]
    if norm.kind == "percentile":
        pre.append(bio.ScaleRangeDescr(kwargs=bio.ScaleRangeKwargs(
            axes=[bio.AxisId("y"), bio.AxisId("x")], min_percentile=float(norm.low),
            max_percentile=float(norm.high), eps=SCALE_RANGE_EPS)))
        if norm.clip:
            pre.append(bio.ClipDescr(kwargs=bio.ClipKwargs(min=float(norm.clip_min),
                                                           max=float(norm.clip_max))))
    elif norm.kind == "zscore":
        pre.append(bio.ZeroMeanUnitVarianceDescr(kwargs=bio.ZeroMeanUnitVarianceKwargs(
            axes=[bio.AxisId("y"), bio.AxisId("x")], eps=float(norm.eps))))
    else:
        n = bundle.in_channels
        means = [float((norm.mean or [0.0])[min(c, len(norm.mean or [0.0]) - 1)]) for c in range(n)]
        stds = [float((norm.std or [1.0])[min(c, len(norm.std or [1.0]) - 1)]) for c in range(n)]
        pre.append(bio.FixedZeroMeanUnitVarianceDescr(kwargs=bio.FixedZeroMeanUnitVarianceAlongAxisKwargs(
            mean=means, std=stds, axis=bio.AxisId("channel"))))
    post: list[Any] = ([bio.SigmoidDescr()] if bundle.classes == 1 else
                       [bio.SoftmaxDescr(kwargs=bio.SoftmaxKwargs(axis=bio.AxisId("channel")))])
    side = bio.ParameterizedSize(min=smallest, step=multiple)
    inputs = [bio.InputTensorDescr(
        id=bio.TensorId("input"),
        description="raw image, channels first",
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=channel_names),
              bio.SpaceInputAxis(id=bio.AxisId("y"), size=side),
              bio.SpaceInputAxis(id=bio.AxisId("x"), size=side)],
        test_tensor=bio.FileDescr(source=work / "test_input.npy"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(None, None)),
        preprocessing=pre,
        sample_tensor=None,
    )]
    outputs = [bio.OutputTensorDescr(
        id=bio.TensorId("probability"),
        description=("foreground probability" if bundle.classes == 1 else "class probabilities"),
        axes=[bio.BatchAxis(), bio.ChannelAxis(channel_names=class_names),
              bio.SpaceOutputAxisWithHalo(id=bio.AxisId("y"), halo=halo, size=bio.SizeReference(
                  tensor_id=bio.TensorId("input"), axis_id=bio.AxisId("y"))),
              bio.SpaceOutputAxisWithHalo(id=bio.AxisId("x"), halo=halo, size=bio.SizeReference(
                  tensor_id=bio.TensorId("input"), axis_id=bio.AxisId("x")))],
        test_tensor=bio.FileDescr(source=work / "test_output.npy"),
        data=bio.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=post,
    )]
    state = bio.PytorchStateDictWeightsDescr(
        source=work / "weights.pt",
        architecture=bio.ArchitectureFromLibraryDescr(import_from=import_from, callable=callable_name,
                                                      kwargs=kwargs),
        pytorch_version=bio.Version(version),
    )
    weights = bio.WeightsDescr(
        pytorch_state_dict=state,
        torchscript=bio.TorchscriptWeightsDescr(source=work / "weights.torchscript.pt",
                                                pytorch_version=bio.Version(version),
                                                parent="pytorch_state_dict"),
        onnx=bio.OnnxWeightsDescr(source=work / "weights.onnx", opset_version=OPSET,
                                  parent="pytorch_state_dict"),
    )
    authors = [bio.Author(name=a.name, affiliation=a.affiliation, orcid=a.orcid) for a in meta.authors] \
        or [bio.Author(name=PLACEHOLDER_AUTHOR)]
    cites = [bio.CiteEntry(text=c.text, doi=bio.Doi(c.doi) if c.doi else None,
                           url=c.url) for c in meta.all_citations(bundle.architecture)]
    n_params = int(sum(p.numel() for p in bundle.model.parameters()))
    tags = sorted({"segmentation", "2d", "pytorch", "onnx", "napari-segloop",
                   bundle.architecture.lower(), *(t.lower() for t in meta.tags)}
                  | ({"semantic-segmentation"} if bundle.classes > 1 else {"binary-segmentation"}))
    settings_json = s.to_json()
    config = bio.Config(
        bioimageio=bio.BioimageioConfig(
            reproducibility_tolerance=[bio.ReproducibilityTolerance(
                absolute_tolerance=PACKAGE_TOLERANCE, relative_tolerance=PACKAGE_TOLERANCE)],
            model_parameter_count=n_params,
            architecture_type=bundle.architecture[:32],
            architecture_description=f"{bundle.architecture} with encoder {bundle.encoder}",
            training=bio.TrainingDetails(**_training_details(bundle)),
        ),
        segloop={"settings": settings_json, "architecture": bundle.architecture,
                 "config": kwargs, "input_multiple": multiple, "tile_size": int(s.tile_size),
                 "overlap": float(s.overlap), "threshold": float(s.threshold),
                 "segloop_version": __version__, "smp_version": smp.__version__,
                 "meta": meta.to_json()},
    )
    name = meta.name.strip()[:128]
    if len(name) < 5:  # the spec's minimum
        name = f"{name} model".strip()
    return bio.ModelDescr(
        name=name,
        description=(meta.description or f"{bundle.architecture} segmentation model exported by "
                     "napari-segloop")[:1024],
        authors=authors,
        cite=cites,
        license=meta.license,
        tags=tags,
        version=meta.version,
        documentation=bio.FileDescr(source=work / "README.md"),
        covers=[bio.FileDescr(source=work / "cover.png")],
        inputs=inputs,
        outputs=outputs,
        weights=weights,
        config=config,
    )

