"""Model bundles: a network plus everything needed to reproduce its predictions.

A bundle is a folder::

    my-model/
      config.json         smp ``save_pretrained`` config (model class + init kwargs)
      model.safetensors   the weights (float32, or float16 to save space)
      segloop.json        channels, normalisation, scale, tiling, threshold,
                          post-processing and provenance (this module)
      README.md           model card written by smp (informational only)

Loading never touches the network (the encoder is rebuilt with
``encoder_weights=None`` and then filled from the file) and never executes
code from a file: ``config.json`` and ``segloop.json`` are plain JSON, weights
are safetensors, and plain PyTorch state dicts are read with
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from napari_segloop.core.errors import ModelLoadError

#: Version of the ``segloop.json`` layout written by this package.
FORMAT_VERSION = 1
SETTINGS_FILE = "segloop.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
STATE_DICT_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".safetensors")


@dataclass
class Normalization:
    """How raw intensities are mapped to the network's input range.

    Parameters
    ----------
    kind : {"percentile", "fixed"}
        ``percentile`` maps the ``low`` and ``high`` percentiles of each image
        (per channel) to 0 and 1; ``fixed`` computes ``(x - mean) / std``.
    low, high : float
        Percentiles for ``kind="percentile"``.
    mean, std : list of float
        Per-channel statistics for ``kind="fixed"``.
    clip : bool
        Clip percentile-normalised values to ``[clip_min, clip_max]``.
    """

    kind: Literal["percentile", "fixed"] = "percentile"
    low: float = 1.0
    high: float = 99.8
    mean: list[float] | None = None
    std: list[float] | None = None
    clip: bool = True
    clip_min: float = -0.5
    clip_max: float = 1.5


@dataclass
class PostProcess:
    """Post-processing applied after thresholding (``--threshold auto``).

    ``split_touching`` separates touching objects with a distance-transform
    watershed (absent from older ``segloop.json`` files: False).
    """

    min_size: int = 0
    fill_holes: bool = False
    instances: bool = False
    split_touching: bool = False


@dataclass
class BundleSettings:
    """Everything besides the weights that a reproducible prediction needs.

    Parameters
    ----------
    channel_names : list of str
        One name per input channel the network expects.
    normalization : Normalization
        Intensity normalisation applied to every image.
    object_size : float or None
        Typical object diameter, in pixels, in the training data. When the
        user gives the object size in their image, the image is resized by
        ``object_size / user_size`` before inference and the output resized
        back.
    scale_factor : float
        Default resize factor applied before inference (1.0: none).
    tile_size : int
        Default square tile edge in pixels (a multiple of 32).
    overlap : float
        Default fraction of a tile shared with its neighbour, in ``[0, 0.9]``.
    output_kind : str
        ``"binary"``: one output channel passed through a sigmoid.
    threshold : float
        Default threshold; foreground is where probability > threshold.
    postprocess : PostProcess
        Default post-processing.
    provenance : dict
        Package versions, training seed, script, commit, history and a note.
    """

    channel_names: list[str] = field(default_factory=lambda: ["channel 0"])
    normalization: Normalization = field(default_factory=Normalization)
    object_size: float | None = None
    scale_factor: float = 1.0
    tile_size: int = 256
    overlap: float = 0.25
    output_kind: Literal["binary"] = "binary"
    threshold: float = 0.5
    postprocess: PostProcess = field(default_factory=PostProcess)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the JSON-serialisable form written to ``segloop.json``."""
        data = asdict(self)
        data["format_version"] = FORMAT_VERSION
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str = "segloop.json") -> BundleSettings:
        """Build settings from a parsed ``segloop.json``.

        Unknown keys are ignored (files from newer minor versions load);
        a newer ``format_version`` is refused with the version it needs.
        """
        try:
            version = int(data.get("format_version", 1))
        except (TypeError, ValueError):
            raise ModelLoadError(
                f"{source} is not a valid segloop settings file: format_version "
                f"{data.get('format_version')!r} is not a number."
            ) from None
        if version > FORMAT_VERSION:
            prov = data.get("provenance")
            needed = (prov.get("segloop_version") if isinstance(prov, Mapping) else None) or "a newer version"
            raise ModelLoadError(
                f"{source} uses bundle format {version}, but this napari-segloop reads "
                f"format {FORMAT_VERSION} at most; upgrade napari-segloop (saved with {needed})."
            )
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            if "normalization" in kwargs:
                kwargs["normalization"] = Normalization(**_known(Normalization, kwargs["normalization"]))
            if "postprocess" in kwargs:
                kwargs["postprocess"] = PostProcess(**_known(PostProcess, kwargs["postprocess"]))
            settings = cls(**kwargs)
            settings.validate(source)
        except (TypeError, ValueError) as exc:  # e.g. a string where a number belongs
            raise ModelLoadError(f"{source} is not a valid segloop settings file: {exc}") from exc
        return settings

    def validate(self, source: str = "settings") -> None:
        """Raise :class:`ModelLoadError` if a value is out of range."""
        problems = []
        if not isinstance(self.channel_names, list) or not all(
            isinstance(n, str) for n in self.channel_names
        ):
            problems.append("channel_names must be a list of names")
        if not isinstance(self.provenance, dict):
            problems.append("provenance must be a JSON object")
        if self.normalization.kind not in ("percentile", "fixed"):
            problems.append(f"normalization kind {self.normalization.kind!r} is unknown")
        if self.normalization.kind == "fixed" and (
            not self.normalization.mean or not self.normalization.std
        ):
            problems.append("fixed normalization needs mean and std")
        if self.normalization.kind == "fixed" and any(s <= 0 for s in self.normalization.std or []):
            problems.append("fixed normalization needs std > 0")
        if not 0 <= self.normalization.low < self.normalization.high <= 100:
            problems.append("percentiles must satisfy 0 <= low < high <= 100")
        if self.tile_size < 32 or self.tile_size % 32:
            problems.append(f"tile_size {self.tile_size} is not a multiple of 32")
        if not 0 <= self.overlap <= 0.9:
            problems.append(f"overlap {self.overlap} is outside [0, 0.9]")
        if not 0 <= self.threshold <= 1:
            problems.append(f"threshold {self.threshold} is outside [0, 1]")
        if self.scale_factor <= 0:
            problems.append(f"scale_factor {self.scale_factor} must be > 0")
        if self.object_size is not None and self.object_size <= 0:
            problems.append(f"object_size {self.object_size} must be > 0")
        min_size = self.postprocess.min_size
        if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or min_size < 0:
            problems.append(f"post-processing min_size {min_size!r} must be a number >= 0")
        if self.output_kind != "binary":
            problems.append(f"output kind {self.output_kind!r} is not supported (only 'binary')")
        if problems:
            raise ModelLoadError(f"{source}: " + "; ".join(problems) + ".")


def _known(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be a JSON object")
    return {k: v for k, v in data.items() if k in cls.__dataclass_fields__}


@dataclass
class ModelBundle:
    """A loaded network with its settings.

    Attributes
    ----------
    model : torch.nn.Module
        An smp segmentation model in eval mode, on the CPU after loading.
    settings : BundleSettings
        Normalisation, scale, tiling, threshold and provenance.
    source : str
        Where it came from (a path, ``"default"`` or ``"new"``).
    """

    model: Any
    settings: BundleSettings
    source: str = "new"

    @property
    def config(self) -> dict[str, Any]:
        """The smp init kwargs of the network."""
        return dict(getattr(self.model, "config", {}) or {})

    @property
    def architecture(self) -> str:
        """The smp model class name, e.g. ``"Unet"``."""
        return type(self.model).__name__

    @property
    def encoder(self) -> str:
        """The smp encoder name, e.g. ``"resnet18"`` or ``"tu-lcnet_050"``."""
        return str(self.config.get("encoder_name", "?"))

    @property
    def in_channels(self) -> int:
        """Number of input channels the network expects."""
        return int(self.config.get("in_channels", 3))

    @property
    def classes(self) -> int:
        """Number of output channels."""
        return int(self.config.get("classes", 1))

    def describe(self) -> dict[str, str]:
        """Return an ordered, human-readable summary (``segloop info``, Model dock)."""
        s = self.settings
        n_params = sum(p.numel() for p in self.model.parameters())
        norm = s.normalization
        if norm.kind == "percentile":
            norm_text = f"percentile {norm.low:g}-{norm.high:g} per channel"
        else:
            norm_text = f"fixed mean {norm.mean} std {norm.std}"
        if s.object_size:
            scale_text = f"objects about {s.object_size:g} px across (factor {s.scale_factor:g})"
        else:
            scale_text = f"factor {s.scale_factor:g}"
        pp = s.postprocess
        post = []
        if pp.min_size:
            post.append(f"remove < {pp.min_size} px")
        if pp.fill_holes:
            post.append("fill holes")
        if pp.split_touching:
            post.append("split touching objects")
        if pp.instances:
            post.append("instances")
        info = {
            "source": self.source,
            "architecture": self.architecture,
            "encoder": self.encoder,
            "parameters": f"{n_params / 1e6:.2f} M",
            "input channels": f"{self.in_channels} ({', '.join(s.channel_names)})",
            "classes": str(self.classes),
            "output": f"{s.output_kind} (sigmoid)",
            "normalization": norm_text,
            "scale": scale_text,
            "tiling": f"{s.tile_size} px tiles, overlap {s.overlap:g}",
            "threshold": f"{s.threshold:g}",
            "post-processing": ", ".join(post) or "none",
        }
        prov = s.provenance or {}
        for key in ("note", "script", "seed", "commit", "segloop_version", "torch_version",
                    "smp_version", "saved_at"):
            if key in prov and prov[key] not in (None, ""):
                info[key.replace("_", " ")] = str(prov[key])
        history = prov.get("history")
        if isinstance(history, list) and history:
            info["training history"] = f"{len(history)} entries, last: {history[-1]}"
        return info


def _smp():
    import segmentation_models_pytorch as smp

    return smp


def architectures() -> list[str]:
    """Return the smp architecture class names that can be created or loaded."""
    smp = _smp()
    return sorted({cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()})


def _architecture_class(name: str):
    smp = _smp()
    by_name = {cls.__name__.lower(): cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    cls = by_name.get(str(name).lower())
    if cls is None:
        raise ModelLoadError(
            f"Unknown architecture {name!r}; choose one of: {', '.join(architectures())}."
        )
    return cls


def _network_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def create_model(
    architecture: str = "Unet",
    encoder: str = "resnet18",
    in_channels: int = 1,
    classes: int = 1,
    encoder_weights: str | None = None,
    settings: BundleSettings | None = None,
    **model_kwargs: Any,
) -> ModelBundle:
    """Create a new, untrained smp model wrapped in a bundle.

    Parameters
    ----------
    architecture : str
        smp class name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ...).
    encoder : str
        smp encoder name (``resnet18``, ``tu-lcnet_050``, ...).
    in_channels, classes : int
        Input and output channels.
    encoder_weights : {None, "none", "imagenet"}
        ``"imagenet"`` downloads pre-trained encoder weights (needs the network
        unless they are cached); offline this fails fast with guidance.
    settings : BundleSettings, optional
        Settings to attach; defaults match ``in_channels``.
    **model_kwargs
        Further smp init arguments (``decoder_channels``, ...).

    Returns
    -------
    ModelBundle
    """
    if in_channels < 1 or classes < 1:
        raise ModelLoadError("in_channels and classes must be at least 1.")
    if classes != 1:
        raise ModelLoadError("Only binary models (classes=1) are supported for now.")
    weights = None if encoder_weights in (None, "", "none", "None") else str(encoder_weights)
    cls = _architecture_class(architecture)
    smp = _smp()
    if encoder not in smp.encoders.get_encoder_names() and not encoder.startswith("tu-"):
        raise ModelLoadError(
            f"Unknown encoder {encoder!r} (see smp's encoder list, or use 'tu-<timm name>')."
        )
    if weights is not None and not _network_reachable():
        # The weights may already be in the local cache: try offline first.
        try:
            model = _build_offline(cls, encoder, weights, in_channels, classes, model_kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot get {weights} weights for encoder {encoder!r}: no network connection "
                "and they are not cached. Create the model with encoder weights 'none', or load "
                "a local model file."
            ) from exc
    else:
        try:
            model = cls(
                encoder_name=encoder,
                encoder_weights=weights,
                in_channels=in_channels,
                classes=classes,
                **model_kwargs,
            )
        except KeyError as exc:
            raise ModelLoadError(f"Encoder {encoder!r} has no {weights!r} weights: {exc}") from exc
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"Could not create {architecture} with {encoder}: {exc}") from exc
    model.eval()
    if settings is None:
        settings = BundleSettings(channel_names=[f"channel {i}" for i in range(in_channels)])
        if weights == "imagenet":
            settings.normalization = Normalization(
                kind="percentile", low=1.0, high=99.8
            )
    if len(settings.channel_names) != in_channels:
        settings.channel_names = [f"channel {i}" for i in range(in_channels)]
    settings.provenance.setdefault("encoder_weights", weights or "none")
    return ModelBundle(model=model, settings=settings, source="new")


def _build_offline(cls, encoder, weights, in_channels, classes, model_kwargs):
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return cls(encoder_name=encoder, encoder_weights=weights, in_channels=in_channels,
                   classes=classes, **model_kwargs)
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def _provenance_defaults() -> dict[str, Any]:
    import numpy
    import torch

    from napari_segloop import __version__

    smp = _smp()
    return {
        "segloop_version": __version__,
        "torch_version": torch.__version__,
        "smp_version": smp.__version__,
        "numpy_version": numpy.__version__,
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def save_bundle(bundle: ModelBundle, folder: str | os.PathLike, dtype: str = "float32") -> Path:
    """Write a bundle folder atomically.

    The bundle is written to a temporary sibling folder first and swapped in
    with renames, so an interrupted or failed save never leaves a
    half-written bundle and never destroys the previous one.

    Parameters
    ----------
    bundle : ModelBundle
        The model and settings to write.
    folder : path
        Destination folder (created or replaced).
    dtype : {"float32", "float16"}
        Storage precision of the weights. float16 halves the file; weights are
        cast back to float32 when loaded.

    Returns
    -------
    Path
        The destination folder.
    """
    import copy

    import torch
    from safetensors import SafetensorError

    folder = Path(folder)
    if dtype not in ("float32", "float16"):
        raise ValueError("dtype must be 'float32' or 'float16'")
    bundle.settings.validate("bundle settings")
    parent = folder.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"Could not save the model to {folder}: {exc.strerror or exc}") from exc
    tmp = parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    old = parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    settings = copy.deepcopy(bundle.settings)
    prov = _provenance_defaults()
    prov.update({k: v for k, v in settings.provenance.items() if k not in ("saved_at",)})
    prov["weights_dtype"] = dtype
    settings.provenance = prov
    try:
        model = bundle.model
        if dtype == "float16":
            model = copy.deepcopy(model).to(dtype=torch.float16)
        model.save_pretrained(tmp)
        with open(tmp / SETTINGS_FILE, "w", encoding="utf-8") as fh:
            json.dump(settings.to_json(), fh, indent=2)
            fh.flush()
            os.fsync(fh.fileno())
        if folder.exists():
            os.replace(folder, old)
            try:
                os.replace(tmp, folder)
            except OSError:
                os.replace(old, folder)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, folder)
    except (OSError, SafetensorError) as exc:  # safetensors reports a full disk as SafetensorError
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ModelLoadError(f"Could not save the model to {folder}: {reason}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    bundle.settings.provenance = prov
    return folder


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path} is not readable JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must contain a JSON object.")
    return data


def _mismatch_report(model, state_dict: Mapping[str, Any], source: str) -> str | None:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)
    ]
    if not (missing or unexpected or wrong):
        return None

    def _few(items: list[str]) -> str:
        shown = "; ".join(items[:4])
        return shown + (f"; ... and {len(items) - 4} more" if len(items) > 4 else "")

    parts = []
    if wrong:
        parts.append(f"{len(wrong)} with other shapes ({_few(wrong)})")
    if missing:
        parts.append(f"{len(missing)} missing ({_few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected ({_few(unexpected)})")
    return (
        f"The weights in {source} do not fit this architecture/encoder: "
        + ", ".join(parts)
        + ". Check the architecture, encoder, input channels and classes."
    )


def load_weights(model, state_dict: Mapping[str, Any], source: str) -> None:
    """Copy ``state_dict`` into ``model``, or raise a readable mismatch report."""
    import torch

    state_dict = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    report = _mismatch_report(model, state_dict, source)
    if report:
        raise ModelLoadError(report)
    own = model.state_dict()
    converted = {k: v.to(dtype=own[k].dtype) for k, v in state_dict.items()}
    model.load_state_dict(converted, strict=True)


def _safetensors_load(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path} is not a valid safetensors weights file: {exc}") from exc


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load a bundle folder (or a plain smp ``save_pretrained`` folder).

    Parameters
    ----------
    path : path
        The bundle folder.

    Returns
    -------
    ModelBundle
        With the model in eval mode on the CPU.

    Raises
    ------
    ModelLoadError
        If the folder is missing, incomplete, corrupt, or its weights do not
        fit its architecture.
    """
    folder = Path(path)
    if not folder.exists():
        raise ModelLoadError(f"Model not found: {folder} does not exist.")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a bundle folder.")
    config_path = folder / CONFIG_FILE
    weights_path = folder / WEIGHTS_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{folder} is not a model bundle: {CONFIG_FILE} is missing.")
    if not weights_path.is_file():
        raise ModelLoadError(f"{folder} is not a model bundle: {WEIGHTS_FILE} is missing.")
    config = _read_json(config_path)
    class_name = config.pop("_model_class", None)
    if class_name is None:
        raise ModelLoadError(f"{config_path} does not name a model class (_model_class).")
    cls = _architecture_class(class_name)
    # Never download: the weights come from the file.
    config["encoder_weights"] = None
    for key in ("decoder_channels", "upsampling", "encoder_output_stride"):
        if isinstance(config.get(key), list):
            config[key] = tuple(config[key])
    try:
        model = cls(**config)
    except Exception as exc:
        raise ModelLoadError(f"{config_path} describes a model that cannot be built: {exc}") from exc
    load_weights(model, _safetensors_load(weights_path), str(weights_path))
    model.eval()
    settings_path = folder / SETTINGS_FILE
    if settings_path.is_file():
        settings = BundleSettings.from_json(_read_json(settings_path), str(settings_path))
    else:
        n = int(config.get("in_channels", 3))
        settings = BundleSettings(channel_names=[f"channel {i}" for i in range(n)])
    n_in = int(config.get("in_channels", 3))
    if len(settings.channel_names) != n_in:
        raise ModelLoadError(
            f"{settings_path} names {len(settings.channel_names)} channels but the network "
            f"expects {n_in}."
        )
    return ModelBundle(model=model, settings=settings, source=str(folder))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if path.suffix == ".safetensors":
        return _safetensors_load(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch refuses any global (class or function) that is not a tensor type; other
        # unpickling errors mean a damaged file.
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found is None and "global" not in str(exc).lower():
            raise ModelLoadError(
                f"{path} is not a readable PyTorch weights file: {_first_line(exc)}"
            ) from exc
        what = f" ({found.group(1)})" if found else ""
        raise ModelLoadError(
            f"Refused to load {path}: it contains Python objects other than tensors{what}, and "
            "napari-segloop never executes code from a model file. Save a plain state dict "
            "(torch.save(model.state_dict(), ...)) or a bundle."
        ) from exc
    except Exception as exc:  # a damaged file can fail anywhere in the reader (even IndexError)
        raise ModelLoadError(f"{path} is not a readable PyTorch weights file: {_first_line(exc)}") from exc
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ModelLoadError(f"{path} does not contain a state dict (a mapping of tensors).")
    out = {}
    for k, v in obj.items():
        key = str(k)
        out[key[len("module."):] if key.startswith("module.") else key] = v
    return out


def load_state_dict_model(
    path: str | os.PathLike,
    architecture: str,
    encoder: str,
    in_channels: int = 1,
    classes: int = 1,
    settings: BundleSettings | None = None,
    **model_kwargs: Any,
) -> ModelBundle:
    """Load a plain PyTorch state dict into a freshly built smp model.

    Parameters
    ----------
    path : path
        A ``.pt``/``.pth``/``.ckpt``/``.bin`` file (read with
        ``weights_only=True``) or a ``.safetensors`` file.
    architecture, encoder, in_channels, classes, **model_kwargs
        The architecture the weights were trained with.
    settings : BundleSettings, optional
        Settings to attach (defaults otherwise).
    """
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"Model file not found: {p}.")
    state = _read_state_dict(p)
    bundle = create_model(architecture, encoder, in_channels, classes, None, settings, **model_kwargs)
    load_weights(bundle.model, state, str(p))
    bundle.model.eval()
    bundle.source = str(p)
    return bundle


def default_model_path() -> Path:
    """Folder of the built-in default model shipped in the package."""
    return Path(__file__).resolve().parent.parent / "models" / "default"


def load_model(
    spec: str | os.PathLike,
    architecture: str | None = None,
    encoder: str | None = None,
    in_channels: int = 1,
    classes: int = 1,
) -> ModelBundle:
    """Load ``"default"``, a bundle folder, or a state dict file.

    A state dict needs ``architecture`` and ``encoder``.
    """
    if str(spec) == "default":
        path = default_model_path()
        if not (path / WEIGHTS_FILE).is_file():
            raise ModelLoadError(
                "The built-in default model is missing from this installation "
                f"({path}); reinstall napari-segloop."
            )
        bundle = load_bundle(path)
        bundle.source = "default"
        return bundle
    p = Path(spec)
    if not p.exists():
        raise ModelLoadError(f"Model not found: {p} does not exist.")
    if p.is_dir():
        return load_bundle(p)
    if p.suffix.lower() in STATE_DICT_SUFFIXES:
        if not architecture or not encoder:
            raise ModelLoadError(
                f"{p} is a plain state dict: give the architecture and encoder it was "
                "trained with (for example --arch Unet --encoder resnet18)."
            )
        return load_state_dict_model(p, architecture, encoder, in_channels, classes)
    raise ModelLoadError(
        f"{p} is neither a bundle folder nor a state dict file ({', '.join(STATE_DICT_SUFFIXES)})."
    )
