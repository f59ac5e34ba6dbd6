"""A loaded network with its settings: :class:`ModelBundle`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from napari_segloop.core.bundle.settings import BundleSettings
from napari_segloop.core.text import printable

#: What each transfer-learning mode of the last training froze, for ``segloop info``.
TRANSFER_TEXT = {
    "full": "nothing: the whole network was trained",
    "frozen": "the encoder (feature extraction: only the decoder was trained)",
    "frozen_then_unfrozen": "the encoder for the first 30% of training, then nothing",
}


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
    notes : list of str
        What loading honoured rather than took literally (for example a
        ``sigmoid`` activation in ``config.json``, applied once by segloop).
    """

    model: Any
    settings: BundleSettings
    source: str = "new"
    notes: list[str] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        """The smp init kwargs of the network."""
        return dict(getattr(self.model, "config", {}) or {})

    @property
    def architecture(self) -> str:
        """The registry name of the architecture, e.g. ``"Unet"``."""
        from napari_segloop.core.models.registry import spec_name

        return spec_name(self.model)

    @property
    def input_multiple(self) -> int:
        """Input height and width must be multiples of this (from the model registry)."""
        from napari_segloop.core.models.registry import input_multiple

        return input_multiple(self.model)

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

    @property
    def class_names(self) -> list[str]:
        """Names of the K classes of a softmax model, background first (``["foreground"]`` if binary)."""
        if self.classes == 1:
            return ["foreground"]
        names = list(self.settings.class_names or [])
        if len(names) != self.classes:
            names = ["background", *(f"class {c}" for c in range(1, self.classes))]
        return names

    def describe(self) -> dict[str, str]:
        """Return an ordered, human-readable summary (``segloop info``, Model dock).

        Values read from the bundle's files are made printable
        (:func:`napari_segloop.core.text.printable`): control characters are
        escaped and very long values cut.
        """
        s = self.settings
        n_params = sum(p.numel() for p in self.model.parameters())
        norm = s.normalization
        if norm.kind == "percentile":
            norm_text = f"percentile {norm.low:g}-{norm.high:g} per channel"
        elif norm.kind == "zscore":
            norm_text = "zero mean, unit variance per image and channel"
        else:
            norm_text = f"fixed mean {norm.mean} std {norm.std}"
        if s.object_size:
            scale_text = f"objects about {s.object_size:g} px across (factor {s.scale_factor:g})"
        else:
            scale_text = f"factor {s.scale_factor:g}"
        post = s.postprocess.steps()
        encoder = getattr(self.model, "encoder", None)
        n_enc = sum(p.numel() for p in encoder.parameters()) if encoder is not None else 0
        info = {
            "source": self.source,
            "architecture": self.architecture,
            "encoder": self.encoder,
            "parameters": (f"{n_params / 1e6:.2f} M ({n_enc / 1e6:.2f} M in the encoder)"
                           if n_enc else f"{n_params / 1e6:.2f} M (no separate encoder)"),
            "input channels": f"{self.in_channels} ({', '.join(s.channel_names)})",
            "classes": (str(self.classes) if self.classes == 1 else
                        f"{self.classes} ({', '.join(self.class_names)})"),
            "input multiple": f"{self.input_multiple} px",
            "output": f"{s.output_kind} ({'sigmoid' if self.classes == 1 else 'softmax'})",
            "normalization": norm_text,
            "scale": scale_text,
            "tiling": f"{s.tile_size} px tiles, overlap {s.overlap:g}",
            ("threshold" if self.classes == 1 else "minimum confidence"): f"{s.threshold:g}",
            "post-processing": ", ".join(post) or "none",
        }
        prov = s.provenance or {}
        info["encoder weights"] = str(prov.get("encoder_weights", "not recorded"))
        training = prov.get("training")
        config = training.get("config") if isinstance(training, dict) else None
        transfer = config.get("transfer") if isinstance(config, dict) else None
        info["frozen"] = TRANSFER_TEXT.get(str(transfer), "nothing (not trained by segloop)")
        for key in ("note", "script", "seed", "commit", "segloop_version", "torch_version",
                    "smp_version", "saved_at"):
            if key in prov and prov[key] not in (None, ""):
                info[key.replace("_", " ")] = str(prov[key])
        history = prov.get("history")
        if isinstance(history, list) and history:
            info["training history"] = f"{len(history)} entries, last: {history[-1]}"
        if self.notes:
            info["loading notes"] = "; ".join(self.notes)
        # Everything here may come from someone else's file: no control characters, no floods.
        return {key: printable(value) for key, value in info.items()}

