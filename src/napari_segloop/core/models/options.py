"""The allow-list of what a bundle's ``config.json`` may set: keys, types and ranges.

A bundle is data. Its ``config.json`` names a registered architecture and a
few numbers and words (encoder, depth, decoder widths, channels, classes);
the network is built from them by segloop's own code. Everything else is
refused with one line naming the key: keyword arguments that smp would pass
on to timm (``checkpoint_path``, ``pretrained_cfg_overlay``, ...), encoder
names that point at the Hugging Face hub (``tu-hf-hub:...``) or at files,
and values outside the ranges below. So no bundle can make segloop open a
file, reach the network, or build a network too large to fit in memory.

Semantic mistakes are refused or honoured, never misread:

* ``activation: "sigmoid"`` (common in smp code) is honoured: segloop applies
  the sigmoid itself, so the network is built without it (the weights are the
  same) and the probabilities are what the author meant. Any other activation
  is refused: segloop needs logits.
* ``classes`` is 1 (binary: one sigmoid output) or 3 to ``MAX_CLASSES`` (softmax
  over that many classes, class 0 background); 2 and more than ``MAX_CLASSES``
  are refused (two classes are the binary case, one output).
* ``aux_params`` (a classification head) is refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.text import printable

__all__ = ["MAX_CHANNELS", "MAX_WIDTH", "CheckedConfig", "check_config", "check_encoder_name"]

#: Upper bound of any decoder width in a bundle (the largest smp default is 1024).
MAX_WIDTH = 2048
#: Upper bound of the input channels of a bundle.
MAX_CHANNELS = 64

_NAME = re.compile(r"^[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)?$")

Check = Callable[[str, Any], Any]


class _Bad(ValueError):
    """A value outside what a key allows (the message says what is allowed)."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(low: int, high: int) -> Check:
    def check(key: str, value: Any) -> int:
        if not _is_int(value) or not low <= value <= high:
            raise _Bad(f"must be a whole number from {low} to {high}")
        return int(value)
    return check


def _float(low: float, high: float) -> Check:
    def check(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and low <= value <= high
        ):
            raise _Bad(f"must be a number from {low:g} to {high:g}")
        return float(value)
    return check


def _int_list(low: int, high: int, min_len: int = 1, max_len: int = 8) -> Check:
    def check(key: str, value: Any) -> list[int]:
        if not isinstance(value, (list, tuple)) or not min_len <= len(value) <= max_len or not all(
            _is_int(v) and low <= v <= high for v in value
        ):
            raise _Bad(f"must be a list of {min_len} to {max_len} whole numbers from {low} to {high}")
        return [int(v) for v in value]
    return check


def _width_or_widths(key: str, value: Any) -> int | list[int]:
    if isinstance(value, (list, tuple)):
        return _int_list(1, MAX_WIDTH)(key, value)
    return _int(1, MAX_WIDTH)(key, value)


def _choice(*choices: Any) -> Check:
    def check(key: str, value: Any) -> Any:
        if isinstance(value, bool) and not any(isinstance(c, bool) for c in choices):
            raise _Bad(f"must be one of {', '.join(repr(c) for c in choices)}")
        if value not in choices:
            raise _Bad(f"must be one of {', '.join(repr(c) for c in choices)}")
        return value
    return check


def _optional(inner: Check) -> Check:
    def check(key: str, value: Any) -> Any:
        return None if value is None else inner(key, value)
    return check


def _weights(key: str, value: Any) -> None:
    # Ignored: weights always come from the bundle's file. A name is accepted (smp writes
    # "imagenet" into configs), a path or URL is not.
    if value is None or value is True or (isinstance(value, str) and _NAME.match(value)
                                          and len(value) <= 64):
        return None
    raise _Bad("must be null or the name of a weight set (it is ignored: the weights come "
               "from the bundle)")


def _encoder(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("must be an encoder name")
    if value == "plain":  # segloop's own U-Net encoder (smp architectures refuse it when built)
        return value
    return check_encoder_name(value)


#: The most classes (softmax outputs) a model may have.
MAX_CLASSES = 32


def _classes(key: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise _Bad("must be a whole number >= 1")
    if value > MAX_CLASSES:
        raise _Bad(f"is {value}; segloop models have at most {MAX_CLASSES} classes")
    if value == 2:
        raise _Bad("is 2: a model of objects and background has one output (classes 1, sigmoid); "
                   "softmax models have 3 or more classes")
    return int(value)


def _activation(key: str, value: Any) -> None:
    if value in (None, "identity"):
        return None
    if value == "sigmoid":  # honoured: applied once, by segloop (see the module docstring)
        return None
    raise _Bad(f"'{printable(value)}' is not supported: napari-segloop needs the network's logits "
               "and applies the sigmoid itself (use null, or 'sigmoid' which segloop applies once)")


def _aux(key: str, value: Any) -> None:
    if value is not None:
        raise _Bad("must be null: classification heads are not supported")
    return None


def _norm(key: str, value: Any) -> Any:
    return _choice(True, False, "batchnorm", "identity", "layernorm", "instancenorm",
                   "inplace")(key, value)


#: Every key a bundle may set (for the architectures that take it), with its check.
OPTIONS: dict[str, Check] = {
    "encoder_name": _encoder,
    "encoder_depth": _int(1, 5),
    "encoder_weights": _weights,
    "encoder_output_stride": _choice(8, 16, 32),
    "encoder_output_indices": _optional(_int_list(0, 64)),
    "in_channels": _int(1, MAX_CHANNELS),
    "classes": _classes,
    "activation": _activation,
    "aux_params": _aux,
    "upsampling": _optional(_int(1, 32)),
    "decoder_channels": _width_or_widths,
    "decoder_use_norm": _norm,
    "decoder_use_batchnorm": _choice(True, False, "inplace"),
    "decoder_attention_type": _optional(_choice("scse")),
    "decoder_interpolation": _choice("nearest", "nearest-exact", "bilinear", "bicubic", "area"),
    "decoder_pyramid_channels": _int(1, MAX_WIDTH),
    "decoder_segmentation_channels": _int(1, MAX_WIDTH),
    "decoder_merge_policy": _choice("add", "cat"),
    "decoder_dropout": _float(0.0, 1.0),
    "decoder_atrous_rates": _int_list(1, 64, 3, 3),
    "decoder_aspp_separable": _choice(True, False),
    "decoder_aspp_dropout": _float(0.0, 1.0),
    "decoder_pab_channels": _int(1, MAX_WIDTH),
    "decoder_readout": _choice("cat", "add", "ignore"),
    "decoder_intermediate_channels": _int_list(1, MAX_WIDTH),
    "decoder_fusion_channels": _int(1, MAX_WIDTH),
    "psp_out_channels": _int(1, MAX_WIDTH),
    "psp_use_batchnorm": _choice(True, False, "inplace"),
    "psp_dropout": _float(0.0, 1.0),
    # segloop's own networks (ClassicUNet, AttentionUNet, UNet3Plus)
    "base_channels": _int(1, 128),
    "cat_channels": _int(1, 512),
    "batch_norm": _choice(True, False),
    "dropout": _float(0.0, 1.0),
    "attention": _choice(True, False),
    "deep_supervision": _choice(True, False),
}


def check_encoder_name(name: str) -> str:
    """Return ``name`` if it is an encoder segloop can build offline, else raise.

    Allowed: smp's own encoders (``resnet18``, ``efficientnet-b0``, ...) and
    ``tu-<timm model>`` for a model in timm's registry (an optional
    ``.pretrained_tag`` is allowed: with no pretrained weights it never
    downloads). Hub references (``tu-hf-hub:...``), paths and URLs are not
    encoder names.

    Raises
    ------
    ModelLoadError
    """
    import segmentation_models_pytorch as smp

    shown = printable(name, 80)
    if len(name) > 120 or not _NAME.match(name):
        raise ModelLoadError(
            f"encoder '{shown}' is not an encoder name (a bundle cannot name a file, a URL or a "
            "model on the Hugging Face hub)"
        )
    if name.startswith("tu-"):
        import timm

        base = name[3:]
        if not timm.is_model(base):
            raise ModelLoadError(f"encoder '{shown}' is not a model in the installed timm")
        return name
    if name not in smp.encoders.get_encoder_names():
        raise ModelLoadError(
            f"encoder '{shown}' is unknown (see smp's encoder list, or use 'tu-<timm model>')"
        )
    return name


@dataclass
class CheckedConfig:
    """A ``config.json`` that passed the allow-list.

    Attributes
    ----------
    kwargs : dict
        The init arguments to build the network with (``encoder_weights`` None).
    notes : list of str
        What was honoured rather than taken literally (``activation: sigmoid``).
    """

    kwargs: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def check_config(
    architecture: str, params: Mapping[str, Any], allowed: set[str] | None = None
) -> CheckedConfig:
    """Check a bundle's init arguments against the allow-list.

    Parameters
    ----------
    architecture : str
        The registry name (for messages).
    params : mapping
        ``config.json`` without ``_model_class``.
    allowed : set of str, optional
        The keys this architecture takes (its init parameters); None: any key
        of :data:`OPTIONS`.

    Returns
    -------
    CheckedConfig

    Raises
    ------
    ModelLoadError
        One line naming the first key that is not allowed, or its bad value.
    """
    out: dict[str, Any] = {}
    notes: list[str] = []
    params = dict(params)
    for old in ("decoder_use_batchnorm", "psp_use_batchnorm"):
        # Bundles saved with smp < 0.5 name the decoder's normalisation the old way.
        if old in params and allowed is not None and old not in allowed and "decoder_use_norm" in allowed:
            value = OPTIONS[old](old, params.pop(old))
            params.setdefault("decoder_use_norm", {True: "batchnorm", False: "identity"}.get(value, value))
    for key, value in params.items():
        shown = printable(key, 60)
        check = OPTIONS.get(key) if isinstance(key, str) else None
        if check is None or (allowed is not None and key not in allowed):
            where = f"of {architecture} " if check is not None else ""
            raise ModelLoadError(
                f"the key '{shown}' is not a setting {where}a bundle may make; a bundle sets only "
                "the architecture, encoder, depth, decoder options, channels and classes"
            )
        try:
            out[key] = check(key, value)
        except _Bad as exc:
            raise ModelLoadError(f"{shown} {exc}") from None
        if key == "activation" and value == "sigmoid":
            notes.append("config.json asks for a sigmoid activation: segloop applies it once "
                         "(built without it)")
    out["encoder_weights"] = None
    depth = out.get("encoder_depth")
    widths = out.get("decoder_channels")
    if isinstance(widths, list) and depth is not None and architecture in (
        "Unet", "UnetPlusPlus", "MAnet"
    ) and len(widths) != depth:
        raise ModelLoadError(
            f"decoder_channels has {len(widths)} widths but encoder_depth is {depth}; they must be equal"
        )
    return CheckedConfig(out, notes)
