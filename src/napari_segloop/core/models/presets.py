"""The architectures users know by name, as registry recipes ("Attention VGG-UNet3+" ...).

A preset is only a shortcut: an architecture, an encoder and a few settings
of the registry, shown first in the docks' "New model" sections and in
``segloop train --preset``. Anything a preset builds can also be built by
naming the architecture, encoder and ``--model-option`` settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_segloop.core.errors import ModelLoadError

__all__ = ["PRESETS", "Preset", "find_preset"]


@dataclass(frozen=True)
class Preset:
    """A named recipe for a new model.

    Attributes
    ----------
    label : str
        The name users know (menus, ``--preset``).
    architecture, encoder : str
        Registry name and encoder (``"plain"``: the network's own encoder).
    options : dict
        Further init arguments (``attention``, ``base_channels`` ...).
    note : str
        When to pick it (one line, for tooltips and the docs).
    """

    label: str
    architecture: str
    encoder: str
    options: dict[str, Any] = field(default_factory=dict)
    note: str = ""


PRESETS: tuple[Preset, ...] = (
    Preset("U-Net, light (lcnet, fast on a CPU)", "Unet", "tu-lcnet_075",
           {"decoder_channels": [64, 32, 24, 16, 8]},
           "the built-in default's design: 1 M parameters, quick to train anywhere"),
    Preset("U-Net, classic (2015)", "ClassicUNet", "plain", {"base_channels": 64},
           "the paper's network; set the base width; no pre-trained encoder"),
    Preset("U-Net + VGG16", "Unet", "vgg16", {}, "smp U-Net on a VGG16 encoder (imagenet weights)"),
    Preset("U-Net + VGG19", "Unet", "vgg19", {}, "smp U-Net on a VGG19 encoder"),
    Preset("U-Net + ResNet50", "Unet", "resnet50", {}, "smp U-Net on a ResNet50 encoder"),
    Preset("Attention U-Net", "AttentionUNet", "plain", {"base_channels": 64},
           "attention gates on the skips (Oktay 2018), plain encoder"),
    Preset("Attention U-Net + VGG16", "AttentionUNet", "vgg16", {},
           "attention gates on a VGG16 encoder"),
    Preset("UNet 3+ (VGG16)", "UNet3Plus", "vgg16", {},
           "full-scale skip connections (Huang 2020) on VGG16"),
    Preset("Attention VGG-UNet3+", "UNet3Plus", "vgg16", {"attention": True},
           "UNet 3+ with attention gates on a VGG16 encoder; freeze the encoder for feature "
           "extraction"),
    Preset("DeepLabV3+ Xception65", "DeepLabV3Plus", "tu-xception65", {},
           "atrous spatial pyramid pooling on Xception65 (output stride 16)"),
    Preset("DeepLabV3+ Xception41", "DeepLabV3Plus", "tu-xception41", {},
           "a lighter Xception backbone"),
    Preset("DeepLabV3+ ResNet101", "DeepLabV3Plus", "resnet101", {}, "DeepLabV3+ on ResNet101"),
)


def find_preset(label: str) -> Preset:
    """The preset called ``label`` (case- and space-insensitive; a unique prefix is enough).

    Raises
    ------
    ModelLoadError
        For an unknown or ambiguous name (the message lists the presets).
    """
    def key(text: str) -> str:
        return "".join(ch for ch in text.lower() if ch.isalnum())

    wanted = key(label)
    exact = [p for p in PRESETS if key(p.label) == wanted]
    matches = exact or [p for p in PRESETS if key(p.label).startswith(wanted)] if wanted else []
    if len(matches) == 1:
        return matches[0]
    names = "; ".join(p.label for p in PRESETS)
    what = "is ambiguous" if matches else "is not a preset"
    raise ModelLoadError(f"{label!r} {what}; the presets are: {names}.")
