"""The settings schema of a bundle (``segloop.json``): channels, normalisation, tiling, threshold.

Only plain data: reading a settings file never builds a network, and every
value is checked (:meth:`BundleSettings.validate`) before it is used.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from napari_segloop.core.errors import ModelLoadError
from napari_segloop.core.masks import PostProcess

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "SETTINGS_FILE",
    "STATE_DICT_SUFFIXES",
    "WEIGHTS_FILE",
    "BundleSettings",
    "Normalization",
    "PostProcess",
]

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
    object_polarity : {"bright", "dark", "any"}
        What the objects look like in the images the model was trained on:
        ``bright`` on a dark background (fluorescence; the default model),
        ``dark`` on a bright one, or ``any``. A ``bright`` model warns when an
        image looks inverted (most of it brighter than the middle of its range).
    threshold : float
        Default threshold; foreground is where probability > threshold.
    postprocess : PostProcess
        Default post-processing (its ``object_diameter``, None in older files,
        is the diameter split touching objects works at).
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
    object_polarity: Literal["bright", "dark", "any"] = "bright"
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
        diameter = self.postprocess.object_diameter
        if diameter is not None and (
            isinstance(diameter, bool) or not isinstance(diameter, (int, float))
            or not math.isfinite(diameter) or diameter <= 0
        ):
            problems.append(f"post-processing object_diameter {diameter!r} must be null or a number > 0")
        if self.object_polarity not in ("bright", "dark", "any"):
            problems.append(f"object_polarity {self.object_polarity!r} is not bright, dark or any")
        if self.output_kind != "binary":
            problems.append(f"output kind {self.output_kind!r} is not supported (only 'binary')")
        if problems:
            raise ModelLoadError(f"{source}: " + "; ".join(problems) + ".")


def _known(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be a JSON object")
    return {k: v for k, v in data.items() if k in cls.__dataclass_fields__}


