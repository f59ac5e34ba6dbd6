"""The allow-listed model registry: which networks segloop builds, their input multiple and output head.

Everything that depends on *which* network a bundle holds goes through here,
so that the tiler, the trainer and the exporters never look at a class name:

* :func:`build_model` builds a registered architecture from plain keyword
  arguments (a bundle's ``config.json``), never downloading weights;
* :func:`input_multiple` says which multiple of pixels the network's input
  sides must be (the tiler pads its tiles to it);
* :func:`probabilities` turns logits into probabilities: a sigmoid for one
  output channel, a softmax over the channels for several.

Only architectures registered in this module (or by code calling
:func:`register`) can be built: a bundle names one by its registry name and
cannot bring code of its own. Loading therefore stays as safe as before: no
code from model files and no network.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.text import printable

if TYPE_CHECKING:
    import torch

    from napari_segloop.core.bundle.model import ModelBundle
    from napari_segloop.core.bundle.settings import BundleSettings

__all__ = [
    "ModelSpec",
    "allowed_options",
    "architectures",
    "build_model",
    "create_model",
    "get_spec",
    "input_multiple",
    "probabilities",
    "register",
    "spec_name",
    "trainable_reason",
]

#: smp architectures segloop may build (those present in the installed smp are registered).
SMP_ARCHITECTURES = (
    "Unet", "UnetPlusPlus", "FPN", "PSPNet", "DeepLabV3", "DeepLabV3Plus", "Linknet", "MAnet",
    "PAN", "UPerNet", "Segformer", "DPT",
)


@dataclass(frozen=True)
class ModelSpec:
    """One buildable architecture.

    Attributes
    ----------
    name : str
        Registry name, stored in a bundle's ``config.json`` as ``_model_class``.
    family : str
        Where the implementation comes from (``"smp"``, or ``"segloop"`` for
        architectures of our own).
    build : callable
        ``build(**kwargs) -> torch.nn.Module``; must not download anything
        when ``encoder_weights`` is None.
    cls : type
        The module class (to recognise a model's architecture).
    description : str
        One line for menus and ``segloop info``.
    default_encoder : str
        The encoder a new model gets when none is named (``"plain"`` for
        networks with their own encoder).
    encoders : tuple of str
        Encoders to suggest in menus (any smp encoder is accepted where
        ``"plain"`` is not the only one).
    """

    name: str
    family: str
    build: Callable[..., Any]
    cls: type
    description: str = ""
    default_encoder: str = "resnet34"
    encoders: tuple[str, ...] = ()


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add an architecture to the registry (code only: never from a file).

    Raises
    ------
    ValueError
        If another architecture has the same name (case-insensitive).
    """
    key = spec.name.lower()
    if key in _REGISTRY and _REGISTRY[key] is not spec:
        raise ValueError(f"An architecture named {spec.name!r} is already registered.")
    _REGISTRY[key] = spec
    return spec


def _register_smp() -> None:
    if any(s.family == "smp" for s in _REGISTRY.values()):
        return
    import segmentation_models_pytorch as smp

    for name in SMP_ARCHITECTURES:
        cls = getattr(smp, name, None)
        if isinstance(cls, type):
            encoders = (("tu-xception65", "tu-xception41", "resnet101", "resnet50", "resnet34")
                        if name == "DeepLabV3Plus" else
                        ("resnet34", "resnet18", "resnet50", "vgg16", "vgg19", "efficientnet-b0",
                         "tu-lcnet_050"))
            register(ModelSpec(name, "smp", cls, cls, f"{name} (segmentation-models-pytorch)",
                               encoders[0], encoders))


def _register_own() -> None:
    if any(s.family == "segloop" for s in _REGISTRY.values()):
        return
    from napari_segloop.core.models.unet3plus import UNet3Plus
    from napari_segloop.core.models.unets import AttentionUNet, ClassicUNet

    register(ModelSpec("ClassicUNet", "segloop", ClassicUNet, ClassicUNet,
                       "the classic U-Net (Ronneberger 2015): 4 poolings, base width 64, no "
                       "pre-trained encoder", "plain", ("plain",)))
    register(ModelSpec("AttentionUNet", "segloop", AttentionUNet, AttentionUNet,
                       "U-Net with attention gates on the skips (Oktay 2018), plain or VGG encoder",
                       "plain", ("plain", "vgg16", "vgg19", "vgg16_bn", "resnet34", "resnet50")))
    register(ModelSpec("UNet3Plus", "segloop", UNet3Plus, UNet3Plus,
                       "UNet 3+ with full-scale skips (Huang 2020); attention=True gives the "
                       "Attention VGG-UNet3+", "vgg16", ("vgg16", "vgg19", "vgg16_bn", "plain",
                                                        "resnet34")))


def _specs() -> dict[str, ModelSpec]:
    _register_smp()
    _register_own()
    return _REGISTRY


def architectures() -> list[str]:
    """Names of the architectures that can be created or loaded, sorted."""
    return sorted(spec.name for spec in _specs().values())


def get_spec(name: str) -> ModelSpec:
    """The registered architecture called ``name`` (case-insensitive).

    Raises
    ------
    ModelLoadError
        For a name that is not registered.
    """
    spec = _specs().get(str(name).lower())
    if spec is None:
        raise ModelLoadError(
            f"Unknown architecture {name!r}; choose one of: {', '.join(architectures())}."
        )
    return spec


def spec_name(model: Any) -> str:
    """Registry name of a built model (its own ``architecture`` text, or class name, when not registered)."""
    for spec in _specs().values():
        if type(model) is spec.cls:
            return spec.name
    own = getattr(model, "architecture", None)
    return own if isinstance(own, str) and own else type(model).__name__


def allowed_options(spec: ModelSpec) -> set[str]:
    """The init arguments of ``spec`` that a bundle may set (its named parameters).

    Keyword arguments an architecture passes on (smp gives them to the timm
    encoder) are never allowed from a file.
    """
    import inspect

    target = spec.build.__init__ if isinstance(spec.build, type) else spec.build
    params = inspect.signature(target).parameters.values()
    return {p.name for p in params
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def build_model(
    name: str,
    kwargs: Mapping[str, Any],
    *,
    expected: Callable[[Any], None] | None = None,
    notes: list[str] | None = None,
) -> Any:
    """Build architecture ``name`` from a bundle's keyword arguments, with no pretrained weights.

    The arguments pass the allow-list first
    (:func:`napari_segloop.core.models.options.check_config`): only known keys
    with values in range; ``encoder_weights`` is forced to None, so weights
    come from a file, never from the network. Lists of numbers become tuples
    (JSON has no tuples).

    Parameters
    ----------
    name : str
        Registry name.
    kwargs : mapping
        Init arguments (a bundle's ``config.json`` without ``_model_class``).
    expected : callable, optional
        Called with a network built on PyTorch's ``meta`` device (shapes, no
        memory) before the real one is built: the weight file's shapes are
        compared there, so a config that does not fit its weights (or asks
        for a huge network) fails before anything is allocated. Architectures
        that cannot be built on ``meta`` skip this step (their sizes are
        still bounded by the allow-list).
    notes : list of str, optional
        Receives what was honoured rather than taken literally.

    Raises
    ------
    ModelLoadError
        Unknown architecture, a key or value the allow-list refuses, or
        arguments it cannot be built with.
    """
    from napari_segloop.core.models.options import check_config

    spec = get_spec(name)
    checked = check_config(spec.name, kwargs, allowed_options(spec))
    if notes is not None:
        notes.extend(checked.notes)
    kw = dict(checked.kwargs)
    for key in ("decoder_channels", "upsampling", "encoder_output_stride",
                "decoder_atrous_rates", "decoder_intermediate_channels"):
        if isinstance(kw.get(key), list):
            kw[key] = tuple(kw[key])
    if expected is not None:
        import torch

        try:
            with torch.device("meta"):
                shell = spec.build(**kw)
        except Exception:  # e.g. .item() during init: compare after the real build instead
            shell = None
        if shell is not None:
            expected(shell)
            del shell
    try:
        return spec.build(**kw)
    except Exception as exc:
        raise ModelLoadError(
            f"{spec.name} cannot be built with these settings: {printable(exc, 200)}"
        ) from exc


def trainable_reason(model: Any) -> str:
    """Why ``model`` cannot be fine-tuned ("" when it can): ONNX and TorchScript graphs have no
    trainable PyTorch parameters segloop can update."""
    import torch

    net = getattr(model, "inner", model)  # a wrapper around an imported network
    if isinstance(net, torch.jit.ScriptModule) or getattr(net, "session", None) is not None:
        kind = "a TorchScript" if isinstance(net, torch.jit.ScriptModule) else "an ONNX"
        return (f"This is {kind} model, which segloop can run but not fine-tune; import a "
                "bioimage.io package with PyTorch state-dict weights of an architecture segloop "
                "knows to fine-tune it.")
    if not any(p.requires_grad for p in model.parameters()):
        return "This model has no trainable parameters."
    return ""


def input_multiple(model: Any) -> int:
    """The multiple of pixels the network's input height and width must be.

    A model of our own declares ``input_multiple``; an smp model's multiple
    is its encoder's output stride (32 for five downsamplings, 16 for
    DeepLabV3+ at output stride 16 ...).
    """
    own = getattr(model, "input_multiple", None)
    if isinstance(own, int) and own >= 1:
        return own
    encoder = getattr(model, "encoder", None)
    stride = getattr(encoder, "output_stride", None)
    if isinstance(stride, int) and stride >= 1:
        return stride
    return 32


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Probabilities from ``(B, C, H, W)`` logits: sigmoid for ``C == 1``, softmax over C otherwise."""
    import torch

    logits = logits.float()
    if logits.shape[1] == 1:
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=1)


# ----------------------------------------------------------------------------- new models


def _network_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _build_offline(build, encoder, weights, in_channels, classes, model_kwargs):
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return build(encoder_name=encoder, encoder_weights=weights, in_channels=in_channels,
                     classes=classes, **model_kwargs)
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def create_model(
    architecture: str = "Unet",
    encoder: str | None = "resnet18",
    in_channels: int = 1,
    classes: int = 1,
    encoder_weights: str | None = None,
    settings: BundleSettings | None = None,
    **model_kwargs: Any,
) -> ModelBundle:
    """Create a new, untrained model of a registered architecture, wrapped in a bundle.

    Parameters
    ----------
    architecture : str
        Registry name (``Unet``, ``UnetPlusPlus``, ``FPN``, ``DeepLabV3Plus``, ...).
    encoder : str or None
        smp encoder name (``resnet18``, ``vgg16``, ``tu-lcnet_050``, ...), or
        ``"plain"`` for segloop's own plain U-Net encoder; None: the
        architecture's default (:attr:`ModelSpec.default_encoder`).
    in_channels, classes : int
        Input and output channels.
    encoder_weights : {None, "none", "imagenet"}
        ``"imagenet"`` downloads pre-trained encoder weights (needs the network
        unless they are cached); offline this fails at once with guidance.
    settings : BundleSettings, optional
        Settings to attach; defaults match ``in_channels``.
    **model_kwargs
        Further init arguments (``decoder_channels``, ...).

    Returns
    -------
    ModelBundle
        In eval mode, on the CPU, with ``source="new"``.
    """
    from napari_segloop.core.bundle.model import ModelBundle
    from napari_segloop.core.bundle.settings import BundleSettings, Normalization

    if in_channels < 1 or classes < 1:
        raise ModelLoadError("in_channels and classes must be at least 1.")
    from napari_segloop.core.models.options import MAX_CLASSES

    if classes > MAX_CLASSES:
        raise ModelLoadError(f"A model has at most {MAX_CLASSES} classes; got {classes}.")
    weights = None if encoder_weights in (None, "", "none", "None") else str(encoder_weights)
    spec = get_spec(architecture)
    if encoder in (None, ""):
        encoder = spec.default_encoder
    from napari_segloop.core.models.options import check_config, check_encoder_name

    try:
        if encoder != "plain":
            check_encoder_name(str(encoder))
        # What is saved must load again: the same allow-list as bundles.
        check_config(spec.name, {"in_channels": in_channels, "classes": classes, **model_kwargs},
                     allowed_options(spec))
    except ModelLoadError as exc:
        text = str(exc)
        raise ModelLoadError(text[0].upper() + text[1:] + ".") from None
    if weights is not None and not _network_reachable():
        # The weights may already be in the local cache: try offline first.
        try:
            model = _build_offline(spec.build, encoder, weights, in_channels, classes, model_kwargs)
        except Exception as exc:
            raise ModelLoadError(
                f"Cannot get {weights} weights for encoder {encoder!r}: no network connection "
                "and they are not cached. Create the model with encoder weights 'none', or load "
                "a local model file."
            ) from exc
    else:
        try:
            model = spec.build(encoder_name=encoder, encoder_weights=weights,
                               in_channels=in_channels, classes=classes, **model_kwargs)
        except KeyError as exc:
            raise ModelLoadError(f"Encoder {encoder!r} has no {weights!r} weights: {exc}") from exc
        except (OSError, RuntimeError, ValueError, TypeError) as exc:
            raise ModelLoadError(f"Could not create {architecture} with {encoder}: {exc}") from exc
    model.eval()
    if settings is None:
        settings = BundleSettings(channel_names=[f"channel {i}" for i in range(in_channels)])
        if weights == "imagenet":
            settings.normalization = Normalization(kind="percentile", low=1.0, high=99.8)
    if len(settings.channel_names) != in_channels:
        settings.channel_names = [f"channel {i}" for i in range(in_channels)]
    if classes > 1 and settings.output_kind != "classes":
        # K softmax classes: the arg-max decides, and no pixel is left unassigned by default.
        settings.output_kind, settings.threshold = "classes", 0.0
    settings.provenance.setdefault("encoder_weights", weights or "none")
    return ModelBundle(model=model, settings=settings, source="new")


def write_model_files(model: Any, folder: os.PathLike | str) -> None:
    """Write ``config.json`` (registry name + init kwargs) and ``model.safetensors`` into ``folder``.

    smp models use smp's own ``save_pretrained`` (which adds a model card);
    the format is the same for every architecture.
    """
    saver = getattr(model, "save_pretrained", None)
    if callable(saver):
        saver(folder)
        return
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    config = {"_model_class": spec_name(model), **dict(getattr(model, "config", {}) or {})}
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "model.safetensors"))
