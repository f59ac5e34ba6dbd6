"""Open a local bioimage.io model package (``.zip``, or a folder with ``rdf.yaml``) as a :class:`ModelBundle`.

What is honoured, and what is refused with one line:

* **Weights.** A PyTorch state dict whose architecture is a library callable
  the model registry knows (``segmentation_models_pytorch.Unet``, segloop's
  own ``ClassicUNet`` ...), built through the same allow-list as a bundle's
  ``config.json`` and filled with ``torch.load(weights_only=True)``; else
  ONNX, run with onnxruntime (:class:`~napari_segloop.core.export.onnx_weights.OnnxNetwork`);
  TorchScript only when the user allows it (it is a program). An
  architecture given as source code is refused: segloop never executes code
  that comes with a model.
* **Axes.** One input and one output, ``batch`` (optional), ``channel``
  (optional), ``y``, ``x``.
* **Pre-processing.** ``ensure_dtype``; ``scale_range`` over y and x (per
  sample and channel), optionally followed by ``clip`` (segloop's percentile
  normalisation); ``zero_mean_unit_variance`` over y and x (its ``zscore``);
  ``fixed_zero_mean_unit_variance`` (its fixed one). With one input channel,
  steps over all axes are per image and channel too. Anything else
  (``scale_linear``, a ``reference_tensor``, statistics over the channels of
  a multi-channel image, ...) is refused by name.
* **Post-processing.** ``sigmoid`` (one channel) or ``softmax`` over the
  channels: the network computes logits, as segloop's do. With none, the
  network already outputs probabilities and is wrapped so that segloop's
  activation gives them back unchanged. Anything else is refused by name.
* **Settings.** A package segloop exported carries the bundle's whole
  ``segloop.json`` in ``config.segloop``: every setting comes back. For any
  other package the settings are derived from the description (tile size
  from the axes, overlap from the output halo).

Nothing is downloaded: the description is read with I/O checks off, and
files are read from the package itself.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from napari_segloop.core.bundle.model import ModelBundle
from napari_segloop.core.bundle.settings import BundleSettings, Normalization
from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.text import printable

#: The weight formats segloop can run, in the order "auto" tries them.
IMPORT_FORMATS = ("pytorch_state_dict", "onnx", "torchscript")
#: Libraries a state dict's architecture may be imported from (then matched against the registry).
KNOWN_LIBRARIES = ("segmentation_models_pytorch", "napari_segloop.core.models")
#: Largest weights file read from a package.
MAX_WEIGHTS_BYTES = 4 * 2 ** 30
#: Tile side for packages that do not say (rounded to the input step).
DEFAULT_TILE = 256


def is_bioimageio_source(path: str | os.PathLike) -> bool:
    """True for a ``.zip``, a ``*.yaml`` description, or a folder with ``rdf.yaml``/``bioimageio.yaml``."""
    p = Path(path)
    if p.is_dir():
        return (p / "rdf.yaml").is_file() or (p / "bioimageio.yaml").is_file()
    return p.suffix.lower() in (".zip", ".yaml")


class _Package:
    """Read files of a package by their name in the description, never outside it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() and path.suffix.lower() == ".zip" else None
        self.root = None if self.zip else (path if path.is_dir() else path.parent)

    def read(self, name: str, what: str) -> bytes:
        name = str(name).replace("\\", "/")
        if name.startswith(("http://", "https://")):
            raise ModelLoadError(f"{printable(self.path)}: the {what} is a web address ({printable(name)}); "
                                 "segloop reads only files inside the package (download it first).")
        if self.zip is not None:
            try:
                info = self.zip.getinfo(name)
            except KeyError:
                raise ModelLoadError(f"{printable(self.path)}: the {what} {printable(name)} is not in "
                                     "the package.") from None
            if info.file_size > MAX_WEIGHTS_BYTES:
                raise ModelLoadError(f"{printable(self.path)}: the {what} is larger than "
                                     f"{MAX_WEIGHTS_BYTES // 2 ** 30} GiB.")
            return self.zip.read(info)
        assert self.root is not None
        target = (self.root / name).resolve()
        if self.root.resolve() not in target.parents:
            raise ModelLoadError(f"{printable(self.path)}: the {what} {printable(name)} lies outside "
                                 "the package folder.")
        if not target.is_file():
            raise ModelLoadError(f"{printable(self.path)}: the {what} {printable(name)} is missing.")
        return target.read_bytes()

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()


def _description(path: Path) -> Any:
    import logging

    from bioimageio.spec import InvalidDescr, load_model_description

    source: Path = path
    if path.is_dir():
        source = path / ("rdf.yaml" if (path / "rdf.yaml").is_file() else "bioimageio.yaml")
    logging.getLogger("bioimageio").setLevel(logging.ERROR)
    try:
        descr = load_model_description(source, perform_io_checks=False, format_version="latest")
    except Exception as exc:
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ModelLoadError(f"{printable(path)} is not a readable bioimage.io model package: "
                             f"{printable(reason, 300)}") from exc
    if isinstance(descr, InvalidDescr) or not hasattr(descr, "weights"):
        errors = getattr(getattr(descr, "validation_summary", None), "details", []) or []
        first = next((e.msg for d in errors for e in (d.errors or [])), "invalid description")
        raise ModelLoadError(f"{printable(path)} is not a valid bioimage.io model: {printable(first, 300)}")
    return descr


def _axes(tensor: Any, what: str, path: Path) -> list[str]:
    axes = [str(a.id) if getattr(a, "type", "") != "batch" else "batch" for a in tensor.axes]
    kinds = [str(a.type) for a in tensor.axes]
    allowed = {"batch", "channel", "space"}
    spatial = [str(a.id) for a in tensor.axes if a.type == "space"]
    if not set(kinds) <= allowed or sorted(spatial) != ["x", "y"]:
        raise ModelLoadError(
            f"{printable(path)}: segloop runs 2-D models with axes batch, channel, y, x; the {what} "
            f"has {', '.join(f'{k} {a}' for k, a in zip(kinds, axes, strict=True))}."
        )
    return axes


def _per_image(kind: str, kw: Any, channels: int, path: Path) -> None:
    """Refuse a normalisation step whose statistics are not those of one image and channel.

    segloop computes them over y and x (and z) of each image, per channel. The batch axis may
    be reduced too (segloop's images are one sample each), and so may the channel axis, or all
    axes (``axes`` left out), of a one-channel input.
    """
    if getattr(kw, "reference_tensor", None) is not None:
        raise ModelLoadError(f"{printable(path)}: {kind} uses the statistics of another tensor; segloop "
                             "normalises each image with its own.")
    axes = None if kw.axes is None else {str(a) for a in kw.axes}
    joint = {"x", "y", "z", "batch"} | ({"channel"} if channels == 1 else set())
    if axes is None:  # all axes: per image and channel only when there is one channel
        if channels == 1:
            return
    elif {"x", "y"} <= axes <= joint:
        return
    over = ", ".join(sorted(axes)) if axes else "all axes"
    raise ModelLoadError(f"{printable(path)}: {kind} over {over} is not per image and channel, "
                         "which is what segloop does.")


def _normalization(steps: list[Any], path: Path, channels: int) -> Normalization:
    """segloop's normalisation for a package's pre-processing (refused by name where there is none)."""
    norm: Normalization | None = None
    clip: tuple[float, float] | None = None
    for step in steps:
        kind = str(step.id)
        kw = getattr(step, "kwargs", None)
        if kind == "ensure_dtype":
            continue
        if kind == "scale_range" and norm is None:
            _per_image(kind, kw, channels, path)
            norm = Normalization(kind="percentile", low=float(kw.min_percentile),
                                 high=float(kw.max_percentile), clip=False)
            continue
        if kind == "zero_mean_unit_variance" and norm is None:
            _per_image(kind, kw, channels, path)
            norm = Normalization(kind="zscore", eps=float(kw.eps))
            continue
        if kind == "clip" and norm is not None and norm.kind == "percentile" and clip is None \
                and kw.min is not None and kw.max is not None:
            clip = (float(kw.min), float(kw.max))
            continue
        if kind == "fixed_zero_mean_unit_variance" and norm is None:
            mean, std = kw.mean, kw.std
            mean = [float(m) for m in (mean if isinstance(mean, (list, tuple)) else [mean])]
            std = [float(s) for s in (std if isinstance(std, (list, tuple)) else [std])]
            norm = Normalization(kind="fixed", mean=mean, std=std)
            continue
        raise ModelLoadError(
            f"{printable(path)}: the pre-processing step {kind!r} is not one segloop can honour "
            "(it honours scale_range per image, clip after it, zero_mean_unit_variance per image, "
            "fixed_zero_mean_unit_variance)."
        )
    if norm is None:
        return Normalization(kind="fixed", mean=[0.0], std=[1.0])
    if clip is not None:
        norm.clip, norm.clip_min, norm.clip_max = True, clip[0], clip[1]
    return norm


def _activation(steps: list[Any], path: Path, channels: int) -> str:
    """``"logits"`` when the package applies sigmoid/softmax after the network, else ``"probabilities"``."""
    names = [str(s.id) for s in steps if str(s.id) != "ensure_dtype"]
    if not names:
        return "probabilities"
    if names == ["sigmoid"] and channels == 1:
        return "logits"
    if names == ["softmax"] and channels > 1:
        return "logits"
    raise ModelLoadError(
        f"{printable(path)}: the post-processing {', '.join(names)} is not one segloop can honour "
        "(it honours sigmoid for one channel, softmax over several, or none)."
    )


class ProbabilitiesAsLogits(torch.nn.Module):
    """Wrap a network that outputs probabilities so that segloop's sigmoid/softmax gives them back.

    ``log(p / (1 - p))`` for one channel (the sigmoid inverts it), ``log(p)``
    for several (the softmax of ``log p`` is ``p`` when the channels sum to 1).
    """

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.config = dict(getattr(inner, "config", {}) or {})
        self.input_multiple = getattr(inner, "input_multiple", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits whose sigmoid (one channel) or softmax (several) is the inner network's output."""
        p = self.inner(x).float().clamp(1e-7, 1 - 1e-7)
        return torch.log(p / (1 - p)) if p.shape[1] == 1 else torch.log(p)


def _state_dict_network(descr: Any, package: _Package, path: Path, notes: list[str]) -> Any:
    from napari_segloop.core.bundle.weights import _read_state_dict, expect_shapes, load_weights
    from napari_segloop.core.models.registry import build_model, get_spec

    entry = descr.weights.pytorch_state_dict
    arch = entry.architecture
    import_from = getattr(arch, "import_from", None)
    if import_from is None:
        raise ModelLoadError(
            f"{printable(path)}: its architecture is given as source code ({printable(arch.source)}); "
            "segloop never executes code that comes with a model."
        )
    name = str(arch.callable)
    if not any(str(import_from) == lib or str(import_from).startswith(lib + ".") for lib in KNOWN_LIBRARIES):
        raise ModelLoadError(f"{printable(path)}: its architecture "
                             f"{printable(import_from)}.{printable(name)} "
                             "is not one segloop knows (segmentation_models_pytorch or segloop's own).")
    spec = get_spec(name)
    if spec.cls.__name__ != name:
        raise ModelLoadError(f"{printable(path)}: {printable(name)} is not a registered architecture.")
    data = package.read(str(entry.source), "PyTorch weights file")
    with tempfile.TemporaryDirectory(prefix="segloop-import-") as work:
        file = Path(work) / "weights.pt"
        file.write_bytes(data)
        del data
        state = _read_state_dict(file)
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    kwargs = dict(arch.kwargs or {})
    kwargs.pop("encoder_weights", None)
    model = build_model(spec.name, kwargs, expected=expect_shapes(shapes, str(path)), notes=notes)
    load_weights(model, state, str(path))
    return model.eval()


def _onnx_network(descr: Any, package: _Package, config: dict[str, Any], multiple: int) -> Any:
    from napari_segloop.core.export.onnx_weights import OnnxNetwork

    entry = descr.weights.onnx
    if getattr(entry, "external_data", None) is not None:
        raise ModelLoadError(f"{printable(package.path)}: ONNX weights with an external data file are "
                             "not supported; re-export them as one file.")
    data = package.read(str(entry.source), "ONNX weights file")
    return OnnxNetwork(data, config, multiple, architecture="ONNX")


def _torchscript_network(descr: Any, package: _Package, allow: bool) -> Any:
    from napari_segloop.core.export.torch_weights import load_torchscript

    entry = descr.weights.torchscript
    if not allow:
        raise ModelLoadError(
            f"{printable(package.path)}: its TorchScript weights run code their author wrote; segloop "
            "loads them only when you allow it (--allow-torchscript on the command line)."
        )
    data = package.read(str(entry.source), "TorchScript weights file")
    with tempfile.TemporaryDirectory(prefix="segloop-import-") as work:
        file = Path(work) / "weights.pt"
        file.write_bytes(data)
        return load_torchscript(file, allow_code=True)


def _step(tensor_axes: Any) -> int:
    for axis in tensor_axes:
        size = getattr(axis, "size", None)
        step = getattr(size, "step", None)
        if getattr(axis, "type", "") == "space" and isinstance(step, int):
            return max(1, step)
    return 1


def _min_size(tensor_axes: Any) -> int:
    sizes = []
    for axis in tensor_axes:
        size = getattr(axis, "size", None)
        if getattr(axis, "type", "") == "space":
            sizes.append(int(size) if isinstance(size, int) else int(getattr(size, "min", 1)))
    return max(sizes or [1])


def load_bioimageio(path: str | os.PathLike, weights: str = "auto", *,
                    allow_torchscript: bool = False) -> ModelBundle:
    """Load a local bioimage.io model package as a bundle (no network, no code from the package).

    Parameters
    ----------
    path : path
        A ``.zip`` package, a ``rdf.yaml``/``bioimageio.yaml`` file, or a folder holding one.
    weights : {"auto", "pytorch_state_dict", "onnx", "torchscript"}
        Which weight entry to use; ``auto`` takes the first that segloop can
        run safely, in the order of :data:`IMPORT_FORMATS`.
    allow_torchscript : bool
        Allow TorchScript weights (a program from the package's author).

    Raises
    ------
    ModelLoadError
        With one line saying what cannot be honoured.
    """
    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"Model not found: {printable(p)} does not exist.")
    if weights not in ("auto", *IMPORT_FORMATS):
        raise ModelLoadError(f"Unknown weight format {weights!r}; choose auto or one of "
                             f"{', '.join(IMPORT_FORMATS)}.")
    descr = _description(p)
    if len(descr.inputs) != 1 or len(descr.outputs) != 1:
        raise ModelLoadError(f"{printable(p)}: segloop runs models with one input and one output; this "
                             f"one has {len(descr.inputs)} inputs and {len(descr.outputs)} outputs.")
    inp, out = descr.inputs[0], descr.outputs[0]
    in_axes = _axes(inp, "input", p)
    _axes(out, "output", p)
    in_channels = next((len(a.channel_names) for a in inp.axes if a.type == "channel"), 1)
    classes = next((len(a.channel_names) for a in out.axes if a.type == "channel"), 1)
    if in_axes.index("y") > in_axes.index("x"):
        raise ModelLoadError(f"{printable(p)}: its axes are x before y; segloop runs y, x models.")
    normalization = _normalization(list(inp.preprocessing), p, in_channels)
    if normalization.kind == "fixed" and len(normalization.mean or []) not in (1, in_channels):
        raise ModelLoadError(f"{printable(p)}: fixed normalisation has {len(normalization.mean or [])} "
                             f"means for {in_channels} channels.")
    activation = _activation(list(out.postprocessing), p, classes)
    present = [f for f in IMPORT_FORMATS if getattr(descr.weights, f, None) is not None]
    order = [weights] if weights != "auto" else present
    if weights != "auto" and weights not in present:
        raise ModelLoadError(f"{printable(p)} has no {weights} weights "
                             f"(it has {', '.join(present) or 'none'}).")
    notes: list[str] = []
    package = _Package(p)
    seg = getattr(descr.config, "segloop", None)
    seg = seg if isinstance(seg, dict) else {}
    multiple = _step(inp.axes)
    reasons: list[str] = []
    model = None
    used = ""
    try:
        for fmt in order:
            try:
                if fmt == "pytorch_state_dict":
                    model = _state_dict_network(descr, package, p, notes)
                elif fmt == "onnx":
                    config = {"in_channels": in_channels, "classes": classes, "encoder_name": "onnx"}
                    model = _onnx_network(descr, package, config, multiple)
                    if seg.get("architecture"):
                        model.architecture = f"ONNX ({printable(seg['architecture'], 40)})"
                elif fmt == "torchscript":
                    model = _torchscript_network(descr, package, allow_torchscript)
                    model.config = {"in_channels": in_channels, "classes": classes,
                                    "encoder_name": "torchscript"}
                    model.input_multiple = multiple
                    model.architecture = "TorchScript"
                used = fmt
                break
            except ModelLoadError as exc:
                if weights != "auto" or fmt == order[-1]:
                    if reasons and weights == "auto":
                        raise ModelLoadError(f"{exc} (also: {'; '.join(reasons)})") from exc
                    raise
                reasons.append(str(exc).replace(f"{printable(p)}: ", ""))
    finally:
        package.close()
    if model is None:
        raise ModelLoadError(f"{printable(p)} has no weights segloop can run.")
    if activation == "probabilities":
        model = ProbabilitiesAsLogits(model)
        notes.append("the network outputs probabilities (no sigmoid or softmax in the package)")
    if reasons:
        notes.append(f"used the {used} weights ({'; '.join(reasons)})")
    settings = _settings(descr, seg, p, in_channels, classes, normalization, multiple, inp, out)
    bundle = ModelBundle(model=model, settings=settings, source=str(p), notes=notes)
    bundle.settings.provenance.setdefault("imported_from", {"bioimageio": str(p), "weights": used,
                                                            "name": str(descr.name)})
    return bundle


def _settings(descr: Any, seg: dict[str, Any], p: Path, in_channels: int, classes: int,
              normalization: Normalization, multiple: int, inp: Any, out: Any) -> BundleSettings:
    saved = seg.get("settings")
    if isinstance(saved, dict):
        settings = BundleSettings.from_json(saved, f"{printable(p)} (config.segloop)")
        if len(settings.channel_names) != in_channels:
            raise ModelLoadError(f"{printable(p)}: config.segloop names {len(settings.channel_names)} "
                                 f"channels but the input has {in_channels}.")
        return settings
    names = next((list(a.channel_names) for a in inp.axes if a.type == "channel"),
                 [f"channel {i}" for i in range(in_channels)])
    class_names = next((list(a.channel_names) for a in out.axes if a.type == "channel"), None)
    tile = max(_min_size(inp.axes), DEFAULT_TILE - DEFAULT_TILE % multiple or multiple)
    halo = max((int(getattr(a, "halo", 0) or 0) for a in out.axes), default=0)
    overlap = min(0.5, 2 * halo / tile) if halo else 0.125
    settings = BundleSettings(channel_names=[str(n) for n in names], normalization=normalization,
                              tile_size=tile, overlap=overlap)
    if classes > 1:
        settings.output_kind, settings.threshold = "classes", 0.0
        settings.class_names = [str(n) for n in class_names] if class_names else None
    settings.provenance = {"note": f"imported from the bioimage.io package {descr.name}"}
    settings.validate(str(p))
    return settings
