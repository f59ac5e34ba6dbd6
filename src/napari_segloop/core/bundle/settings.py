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
from napari_segloop.core.text import printable

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
    kind : {"percentile", "fixed", "zscore"}
        ``percentile`` maps the ``low`` and ``high`` percentiles of each image
        (per channel) to 0 and 1; ``fixed`` computes ``(x - mean) / std``;
        ``zscore`` computes ``(x - m) / (s + eps)`` with the mean ``m`` and
        standard deviation ``s`` of each image (per channel), bioimage.io's
        ``zero_mean_unit_variance``.
    low, high : float
        Percentiles for ``kind="percentile"``.
    mean, std : list of float
        Per-channel statistics for ``kind="fixed"``.
    clip : bool
        Clip percentile-normalised values to ``[clip_min, clip_max]``.
    eps : float
        Added to the standard deviation for ``kind="zscore"``.
    """

    kind: Literal["percentile", "fixed", "zscore"] = "percentile"
    low: float = 1.0
    high: float = 99.8
    mean: list[float] | None = None
    std: list[float] | None = None
    clip: bool = True
    clip_min: float = -0.5
    clip_max: float = 1.5
    eps: float = 1e-6



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
    output_kind : {"binary", "classes"}
        ``"binary"``: one output channel passed through a sigmoid.
        ``"classes"``: K softmax channels, class 0 background.
    object_polarity : {"bright", "dark", "any"}
        What the objects look like in the images the model was trained on:
        ``bright`` on a dark background (fluorescence; the default model),
        ``dark`` on a bright one, or ``any``. A ``bright`` model warns when an
        image looks inverted (most of it brighter than the middle of its range).
    threshold : float
        Default threshold; foreground is where probability > threshold. For a
        K-class model: the minimum confidence, below which a pixel of the
        class map is left unassigned (0: every pixel gets a class).
    class_names : list of str or None
        K-class models: one name per class, background first (None: "background",
        "class 1", ...).
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
    output_kind: Literal["binary", "classes"] = "binary"
    object_polarity: Literal["bright", "dark", "any"] = "bright"
    threshold: float = 0.5
    postprocess: PostProcess = field(default_factory=PostProcess)
    provenance: dict[str, Any] = field(default_factory=dict)
    class_names: list[str] | None = None

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
        Every value is type- and range-checked (:meth:`validate`): a string
        where a number belongs, an infinite number, ``clip_min > clip_max``
        are refused with one line.
        """
        raw_version = data.get("format_version", 1)
        if not _is_int(raw_version) or raw_version < 1:
            raise ModelLoadError(
                f"{source} is not a valid segloop settings file: format_version "
                f"{printable(repr(raw_version), 40)} is not a whole number >= 1."
            )
        version = int(raw_version)
        if version > FORMAT_VERSION:
            prov = data.get("provenance")
            needed = (prov.get("segloop_version") if isinstance(prov, Mapping) else None) or "a newer version"
            raise ModelLoadError(
                f"{source} uses bundle format {version}, but this napari-segloop reads "
                f"format {FORMAT_VERSION} at most; upgrade napari-segloop (saved with "
                f"{printable(needed, 40)})."
            )
        known = {f for f in cls.__dataclass_fields__}
        kwargs = {k: v for k, v in data.items() if k in known}
        try:
            if "normalization" in kwargs:
                kwargs["normalization"] = Normalization(**_known(Normalization, kwargs["normalization"]))
            if "postprocess" in kwargs:
                kwargs["postprocess"] = PostProcess(**_known(PostProcess, kwargs["postprocess"]))
            settings = cls(**kwargs)
        except (TypeError, ValueError) as exc:  # e.g. an object where a list belongs
            raise ModelLoadError(
                f"{source} is not a valid segloop settings file: {printable(exc, 200)}"
            ) from exc
        settings.validate(source)
        return settings

    def validate(self, source: str = "settings") -> None:
        """Raise :class:`ModelLoadError` if a value has the wrong type or is out of range."""
        problems: list[str] = []
        num = _Numbers(problems)
        names = self.channel_names
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            problems.append("channel_names must be a list of names")
        elif len(names) > 64:
            problems.append(f"channel_names lists {len(names)} channels (at most 64)")
        if not isinstance(self.provenance, dict):
            problems.append("provenance must be a JSON object")
        norm = self.normalization
        if norm.kind not in ("percentile", "fixed", "zscore"):
            problems.append(f"normalization kind {printable(repr(norm.kind), 40)} is unknown")
        num.real("normalization eps", norm.eps, 0, 1, above_low=True)
        low = num.real("normalization low", norm.low, 0, 100)
        high = num.real("normalization high", norm.high, 0, 100)
        if low is not None and high is not None and not low < high:
            problems.append("percentiles must satisfy 0 <= low < high <= 100")
        if not isinstance(norm.clip, bool):
            problems.append("normalization clip must be true or false")
        clip_min = num.real("normalization clip_min", norm.clip_min)
        clip_max = num.real("normalization clip_max", norm.clip_max)
        if clip_min is not None and clip_max is not None and not clip_min < clip_max:
            problems.append(f"normalization clip_min {clip_min:g} must be below clip_max {clip_max:g}")
        for label, values, positive in (("mean", norm.mean, False), ("std", norm.std, True)):
            if values is None:
                continue
            if not isinstance(values, list) or not values or not all(
                _is_real(v) and math.isfinite(v) for v in values
            ):
                problems.append(f"normalization {label} must be a list of finite numbers")
            elif positive and any(v <= 0 for v in values):
                problems.append("fixed normalization needs std > 0")
        if norm.kind == "fixed" and (not norm.mean or not norm.std):
            problems.append("fixed normalization needs mean and std")
        tile = num.whole("tile_size", self.tile_size, 32, 8192)
        if tile is not None and tile % 32:
            problems.append(f"tile_size {tile} is not a multiple of 32")
        num.real("overlap", self.overlap, 0, 0.9)
        num.real("threshold", self.threshold, 0, 1)
        num.real("scale_factor", self.scale_factor, 1e-3, 1e3, above_low=True)
        if self.object_size is not None:
            num.real("object_size", self.object_size, 0, 1e5, above_low=True)
        pp = self.postprocess
        num.real("post-processing min_size", pp.min_size, 0, 1e12)
        for flag in ("fill_holes", "instances", "split_touching"):
            if not isinstance(getattr(pp, flag), bool):
                problems.append(f"post-processing {flag} must be true or false")
        if pp.object_diameter is not None:
            num.real("post-processing object_diameter", pp.object_diameter, 0, 1e5, above_low=True)
        if self.object_polarity not in ("bright", "dark", "any"):
            problems.append(f"object_polarity {printable(repr(self.object_polarity), 40)} is not "
                            "bright, dark or any")
        if self.output_kind not in ("binary", "classes"):
            problems.append(f"output kind {printable(repr(self.output_kind), 40)} is not supported "
                            "(only 'binary' or 'classes')")
        cn = self.class_names
        if cn is not None and (not isinstance(cn, list) or not 2 <= len(cn) <= 32
                               or not all(isinstance(n, str) and n for n in cn)):
            problems.append("class_names must be a list of 2 to 32 names")
        if problems:
            raise ModelLoadError(f"{source}: " + "; ".join(problems) + ".")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Numbers:
    """Type and range checks that collect one problem per bad value."""

    def __init__(self, problems: list[str]):
        self.problems = problems

    def real(self, name: str, value: Any, low: float = -math.inf, high: float = math.inf,
             above_low: bool = False) -> float | None:
        if not _is_real(value) or not math.isfinite(value):
            self.problems.append(f"{name} must be a finite number, not {printable(repr(value), 40)}")
            return None
        if value < low or value > high or (above_low and value <= low):
            rel = ">" if above_low else ">="
            bound = f"{rel} {low:g}" + (f" and <= {high:g}" if math.isfinite(high) else "")
            self.problems.append(f"{name} {value:g} must be {bound}")
            return None
        return float(value)

    def whole(self, name: str, value: Any, low: int, high: int) -> int | None:
        if not _is_int(value):
            self.problems.append(f"{name} must be a whole number, not {printable(repr(value), 40)}")
            return None
        if not low <= value <= high:
            self.problems.append(f"{name} {value} must be from {low} to {high}")
            return None
        return int(value)


def _known(cls: type, data: Any) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise TypeError(f"{cls.__name__} must be a JSON object")
    return {k: v for k, v in data.items() if k in cls.__dataclass_fields__}


