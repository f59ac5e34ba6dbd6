"""Input preparation: channel layout, conversions, intensity normalisation, NaN policy.

Layout
    Any input is viewed (without copying) as ``stack + (C, H, W)``: the last
    two non-channel axes are the image plane, a channel axis is detected or
    given, and every other axis (z, t, ...) is a stack processed slice by slice.

Channel rules
    * 2-D arrays have one channel.
    * A last axis of size 3 or 4 is RGB(A), as in napari (``rgb=True`` forces it).
    * A last axis of size 1 is the single channel (``(H, W, 1)``, ``(Z, H, W, 1)``:
      the output has no such axis), and a last axis of size 2 is gray + alpha (a
      PNG in mode ``LA``): the alpha channel is dropped with a note, unless the
      model expects 2 channels (then they are its 2 channels).
    * For a multichannel model, another non-spatial axis whose size equals the
      model's channel count is the channel axis (``(C, H, W)``, ``(Z, C, H, W)``).
    * A mismatch is an error naming the expected and found channels, unless the
      user chose an explicit conversion (:data:`CONVERSIONS`): ``gray`` (average
      the channels, alpha dropped), ``repeat`` (copy one channel to every model
      channel), ``invert`` (dark objects on a bright background become bright
      on dark; colour images are averaged to gray first), ``hematoxylin`` (the
      hematoxylin stain of an H&E or IHC colour image, by scikit-image's colour
      deconvolution: nuclei become bright on a dark background) or
      ``channel=k`` (use channel k only). RGBA given to a 3-channel model drops
      alpha with a note. Messages name the conversions as the Predict dock's
      combo box does.

NaN/Inf policy
    Non-finite pixels are replaced by the slice's low percentile (background)
    before normalisation and counted in a warning, so they never reach the
    network, the probabilities, masks or metrics. A slice with no finite pixel
    is an error.

Normalisation
    Per 2-D slice and channel: ``percentile`` maps the ``low``/``high``
    percentiles of the finite pixels to 0/1 (clipped to ``[clip_min,
    clip_max]``); ``fixed`` computes ``(x - mean) / std``. A constant slice
    gives zeros and a warning, never a division by zero. Percentiles of very
    large slices are estimated on a regular subsample of about 500,000
    pixels (exact for smaller slices).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from napari_segloop.core.bundle.settings import Normalization
from napari_segloop.core.errors import InputError

Conversion = Literal["none", "gray", "repeat", "invert", "hematoxylin"]

#: Every explicit conversion, with the label the Predict dock shows and messages use.
CONVERSIONS: dict[str, str] = {
    "none": "as is",
    "gray": "average to gray",
    "repeat": "repeat to the model's channels",
    "invert": "invert (dark objects on a bright background)",
    "hematoxylin": "hematoxylin (H&E / IHC colour images)",
}


def conversion_name(convert: str) -> str:
    """How a conversion is named to the user: ``'average to gray' (--convert gray)``."""
    return f"'{CONVERSIONS.get(convert, convert)}' (--convert {convert})"


#: A model that expects bright objects gets a warning when the background of a slice (its
#: most common intensity, the mode of the normalised histogram) lies above this fraction of
#: the normalised intensity range: the background is brighter than the objects. The mode, not
#: the median: an H&E or IHC image with much dark tissue has a median near the middle but a
#: bright background (measured on scikit-image's IHC image: median 0.49, mode 0.84; fluorescent
#: nuclei: median 0.06, mode 0.03).
INVERTED_BACKGROUND = 0.5
_MODE_BINS = 32
_PERCENTILE_SAMPLE = 500_000


@dataclass
class PreparedInput:
    """A view of the user's array arranged as ``stack + (C, H, W)``.

    Attributes
    ----------
    data : np.ndarray
        View (no copy) with layout ``stack_shape + (C_in, H, W)``.
    channel_axis : int or None
        The channel axis in the original array, or None.
    stack_shape : tuple of int
        Shape of the stack axes (empty for a 2-D image).
    spatial_shape : tuple of int
        ``(H, W)``.
    channel_select : list of int or None
        Channels of ``data`` to use (after dropping alpha or picking one).
    convert : str
        One of :data:`CONVERSIONS`.
    model_channels : int
        Channels the model expects.
    notes : list of str
        Messages for the user (for example "alpha channel dropped").
    """

    data: np.ndarray
    channel_axis: int | None
    stack_shape: tuple[int, ...]
    spatial_shape: tuple[int, int]
    channel_select: list[int] | None
    convert: Conversion
    model_channels: int
    notes: list[str] = field(default_factory=list)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Shape of the probability map: the input's shape without its channel axis."""
        return self.stack_shape + self.spatial_shape

    @property
    def n_slices(self) -> int:
        """Number of 2-D slices in the stack."""
        return int(np.prod(self.stack_shape, dtype=np.int64)) if self.stack_shape else 1

    def slice_chw(self, index: tuple[int, ...]) -> np.ndarray:
        """Return the ``(C_model, H, W)`` raw view/array for stack position ``index``."""
        chw = self.data[index] if index else self.data
        if self.channel_select is not None:
            chw = chw[self.channel_select]
        if self.convert == "hematoxylin":
            return hematoxylin(chw, self.model_channels)
        if self.convert in ("gray", "invert") and chw.shape[0] != self.model_channels:
            chw = chw.astype(np.float32).mean(axis=0, keepdims=True)
        if self.convert == "invert":
            # Negation reverses the order of intensities; percentile normalisation then maps
            # the bright background to 0 and the dark objects to 1.
            chw = np.negative(chw, dtype=np.float32)
        if self.convert == "repeat" and chw.shape[0] != self.model_channels:
            chw = np.broadcast_to(chw[:1], (self.model_channels, *chw.shape[1:]))
        return chw


def detect_channel_axis(
    shape: tuple[int, ...], model_channels: int, rgb: bool | None = None
) -> int | None:
    """Guess the channel axis of an array of ``shape`` for a model.

    Parameters
    ----------
    shape : tuple of int
        The array's shape.
    model_channels : int
        Channels the model expects.
    rgb : bool, optional
        napari's ``layer.rgb`` when known: True forces the last axis.

    Returns
    -------
    int or None
        A non-negative axis index, or None for single-channel data.
    """
    ndim = len(shape)
    if ndim < 2:
        return None
    if rgb:
        return ndim - 1
    if ndim == 2:
        return None
    if rgb is None and shape[-1] in (3, 4):
        return ndim - 1
    if shape[-1] in (1, 2):
        # (H, W, 1) is one channel and (H, W, 2) gray + alpha (a PNG in mode "LA"), never a
        # stack of H images one or two pixels wide.
        return ndim - 1
    if model_channels > 1:
        for axis in range(ndim - 2):
            if shape[axis] == model_channels:
                return axis
    return None


def prepare_input(
    image: np.ndarray,
    model_channels: int,
    channel_axis: int | Literal["auto"] | None = "auto",
    rgb: bool | None = None,
    convert: Conversion = "none",
    channel: int | None = None,
) -> PreparedInput:
    """Check an image against a model and arrange it as ``stack + (C, H, W)``.

    Parameters
    ----------
    image : array-like
        2-D, RGB(A), multichannel or stacked image, any numeric or bool dtype.
    model_channels : int
        Channels the model expects.
    channel_axis : int, "auto" or None
        Channel axis of ``image``; ``"auto"`` detects it, None means none.
    rgb : bool, optional
        napari's ``layer.rgb`` when known.
    convert : {"none", "gray", "repeat", "invert", "hematoxylin"}
        Explicit conversion (see the module's docstring and :data:`CONVERSIONS`).
    channel : int, optional
        Use only this channel of the image (for single-channel models).

    Returns
    -------
    PreparedInput

    Raises
    ------
    InputError
        Empty, 1-D, non-numeric input, or a channel mismatch with no conversion.
    """
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"Images must be numeric or boolean, not {arr.dtype}.")
    if arr.ndim < 2:
        raise InputError(f"Images must have at least 2 dimensions; got shape {arr.shape}.")
    if arr.size == 0:
        raise InputError(f"The image is empty (shape {arr.shape}).")
    if convert not in CONVERSIONS:
        raise InputError(f"Unknown conversion {convert!r}; use one of {', '.join(CONVERSIONS)}.")
    axis = detect_channel_axis(arr.shape, model_channels, rgb) if channel_axis == "auto" else channel_axis
    if axis is not None:
        if not -arr.ndim <= axis < arr.ndim:
            raise InputError(f"Channel axis {axis} does not exist in an image of shape {arr.shape}.")
        axis %= arr.ndim
        if arr.ndim < 3:
            raise InputError(f"An image of shape {arr.shape} has no room for a channel axis.")
        data = np.moveaxis(arr, axis, -3)
    else:
        data = arr[..., np.newaxis, :, :]
    n_found = data.shape[-3]
    if min(data.shape[-2:]) < 1:
        raise InputError(f"The image plane is empty (shape {arr.shape}).")
    notes: list[str] = []
    select: list[int] | None = None
    where = "" if axis is None else f" (axis {axis})"
    if channel is not None:
        if not 0 <= channel < n_found:
            raise InputError(f"Channel {channel} does not exist; the image has {n_found} channel(s).")
        select = [channel]
        n_found = 1
        notes.append(f"Using channel {channel} only.")
    gray_alpha = False
    if (n_found == 2 and axis == arr.ndim - 1 and select is None and not rgb
            and (convert in ("gray", "repeat")
                 or (convert in ("none", "invert") and model_channels != 2))):
        select = [0]
        n_found = 1
        gray_alpha = True
        notes.append("Alpha channel dropped (the image is gray + alpha).")
    if convert == "hematoxylin":
        if n_found == 4 and axis == arr.ndim - 1 and select is None:
            select = [0, 1, 2]
            notes.append("Alpha channel dropped.")
            n_found = 3
        if n_found != 3:
            raise InputError(
                f"The conversion {conversion_name(convert)} needs an RGB colour image, but this one "
                f"has {n_found} channel(s)."
            )
        notes.append("Using the hematoxylin stain (colour deconvolution) as a single channel"
                     + (f", repeated to the model's {model_channels} channels." if model_channels > 1
                        else "."))
    elif convert == "invert":
        if n_found == 4 and axis == arr.ndim - 1 and select is None:
            select = [0, 1, 2]
            notes.append("Alpha channel dropped.")
            n_found = 3
        if n_found != model_channels and model_channels != 1:
            raise InputError(
                f"The conversion {conversion_name(convert)} keeps the image's {n_found} channel(s), "
                f"but the model expects {model_channels}."
            )
        if n_found != model_channels:
            notes.append(f"{n_found} channels averaged to gray, then inverted.")
        else:
            notes.append("Intensities inverted (dark objects become bright).")
    elif convert == "gray":
        if model_channels != 1:
            raise InputError(
                f"The conversion {conversion_name(convert)} makes 1 channel, but the model "
                f"expects {model_channels}."
            )
        if n_found == 4 and axis == arr.ndim - 1 and select is None:
            select = [0, 1, 2]
            notes.append("Alpha channel dropped.")
        if n_found > 1:
            notes.append(f"{n_found if select is None else len(select)} channels averaged to gray.")
    elif convert == "repeat":
        if n_found != 1:
            raise InputError(
                f"The conversion {conversion_name(convert)} needs a single-channel image, but it "
                f"has {n_found} channels."
            )
        if model_channels > 1:
            notes.append(f"The single channel is repeated to the model's {model_channels} channels.")
    elif n_found != model_channels:
        if n_found == 4 and model_channels == 3 and axis == arr.ndim - 1 and select is None:
            select = [0, 1, 2]
            notes.append("Alpha channel dropped.")
        else:
            found = ("1 channel" + (" (gray + alpha)" if gray_alpha else "") if n_found == 1
                     else f"{n_found} channels{where}")
            hint = (
                f"choose the conversion {conversion_name('repeat')}" if n_found == 1
                else f"choose the conversion {conversion_name('gray')}"
                + (f", {conversion_name('hematoxylin')} for H&E or IHC colour images,"
                   if n_found in (3, 4) else "") + " or pick one channel"
                if model_channels == 1
                else "pick the channel axis, or use a model for this image"
            )
            raise InputError(
                f"The model expects {model_channels} input channel(s) but the image "
                f"(shape {arr.shape}) has {found}; {hint}."
            )
    stack_shape = tuple(int(s) for s in data.shape[:-3])
    spatial = (int(data.shape[-2]), int(data.shape[-1]))
    return PreparedInput(
        data=data,
        channel_axis=axis,
        stack_shape=stack_shape,
        spatial_shape=spatial,
        channel_select=select,
        convert=convert,
        model_channels=model_channels,
        notes=notes,
    )


def hematoxylin(chw: np.ndarray, model_channels: int = 1) -> np.ndarray:
    """The hematoxylin stain of an RGB ``(3, H, W)`` slice, as ``(model_channels, H, W)`` float32.

    scikit-image's colour deconvolution (:func:`skimage.color.rgb2hed`, the
    Ruifrok-Johnston stain vectors) separates hematoxylin (nuclei), eosin and
    DAB; the hematoxylin optical density is high in nuclei and about zero in
    the bright background, the polarity of a fluorescence nuclear stain.
    """
    from skimage.color import rgb2hed

    rgb = np.moveaxis(np.asarray(chw), 0, -1)
    if rgb.dtype.kind == "f" and float(np.nanmax(rgb)) > 1.0:
        rgb = rgb / float(np.nanmax(rgb))  # rgb2hed expects floats in [0, 1]
    h = rgb2hed(rgb)[..., 0].astype(np.float32)
    return np.broadcast_to(h[None], (model_channels, *h.shape))


@dataclass
class NormStats:
    """Per-channel normalisation of one slice: ``(x - offset) / scale``, then clip.

    Computed once per slice by :func:`compute_stats` and applied tile by tile
    with :func:`apply_stats`, so no normalised copy of the whole slice is kept.

    Attributes
    ----------
    offset, scale : np.ndarray
        Per-channel values, float64, shape ``(C,)``.
    fill : np.ndarray
        Normalised value given to non-finite pixels (the background level).
    clip : tuple of float or None
        Range to clip to after scaling.
    warnings : list of str
        Non-finite pixels found, constant channels.
    """

    offset: np.ndarray
    scale: np.ndarray
    fill: np.ndarray
    clip: tuple[float, float] | None
    warnings: list[str] = field(default_factory=list)
    background: np.ndarray | None = None

    def looks_inverted(self) -> bool:
        """True when the background (most common intensity) is in the bright half in every channel.

        For a model trained on bright objects on a dark background (fluorescence),
        such an image (brightfield, histology, a negative) is probably inverted.
        Only measured for percentile normalisation (None otherwise).
        """
        return self.background is not None and bool(np.all(self.background > INVERTED_BACKGROUND))


def _finite_sample(channel: np.ndarray) -> np.ndarray:
    """A regular-grid sample of at most about 500,000 finite values of a 2-D channel."""
    h, w = channel.shape
    step = max(1, int(np.ceil(np.sqrt(h * w / _PERCENTILE_SAMPLE))))
    sample = np.asarray(channel[::step, ::step]).ravel()
    if sample.dtype == np.bool_:
        sample = sample.view(np.uint8)
    if sample.dtype.kind == "f":
        sample = sample[np.isfinite(sample)]
    return sample


def _count_nonfinite(channel: np.ndarray) -> int:
    if channel.dtype.kind != "f":
        return 0
    rows = max(1, 1_048_576 // max(1, channel.shape[1]))
    return int(sum(
        channel[r:r + rows].size - np.count_nonzero(np.isfinite(channel[r:r + rows]))
        for r in range(0, channel.shape[0], rows)
    ))


def compute_stats(chw: np.ndarray, norm: Normalization) -> NormStats:
    """Compute the normalisation of one ``(C, H, W)`` slice without copying it.

    Raises
    ------
    InputError
        If a channel has no finite pixel.
    """
    n = chw.shape[0]
    offset = np.zeros(n, dtype=np.float64)
    scale = np.ones(n, dtype=np.float64)
    fill = np.zeros(n, dtype=np.float64)
    background = np.zeros(n, dtype=np.float64)
    warnings: list[str] = []
    for c in range(n):
        sample = _finite_sample(chw[c])
        if sample.size == 0:
            raise InputError("The image has no finite pixel values (all NaN or Inf).")
        n_bad = _count_nonfinite(chw[c])
        if norm.kind == "fixed":
            means, stds = norm.mean or [0.0], norm.std or [1.0]
            offset[c] = float(means[min(c, len(means) - 1)])
            scale[c] = float(stds[min(c, len(stds) - 1)])
            lo = float(np.percentile(sample, norm.low)) if n_bad else offset[c]
        elif norm.kind == "zscore":
            values = sample.astype(np.float64)
            offset[c], scale[c] = float(values.mean()), float(values.std()) + float(norm.eps)
            lo = offset[c]  # NaN/Inf pixels become the mean (0 after normalisation)
        else:
            lo, hi = (float(v) for v in np.percentile(sample, [norm.low, norm.high]))
            span = hi - lo
            if not np.isfinite(span) or span <= 1e-12 * max(1.0, abs(hi)):
                vmin, vmax = float(sample.min()), float(sample.max())
                if vmax > vmin:
                    lo, span = vmin, vmax - vmin
                else:
                    warnings.append(f"Channel {c} is constant ({vmin:g}); it is normalised to zeros.")
                    lo, span = vmin, 1.0
            offset[c], scale[c] = lo, span
        fill[c] = (lo - offset[c]) / scale[c]
        if norm.kind == "percentile":
            unit = np.clip((sample.astype(np.float64) - offset[c]) / scale[c], 0.0, 1.0)
            hist, edges = np.histogram(unit, bins=_MODE_BINS, range=(0.0, 1.0))
            k = int(np.argmax(hist))
            background[c] = 0.5 * (edges[k] + edges[k + 1])
        if n_bad:
            warnings.append(
                f"{n_bad} NaN/Inf pixel(s) in channel {c} were replaced by the background level."
            )
    clip = (norm.clip_min, norm.clip_max) if norm.kind == "percentile" and norm.clip else None
    if clip is not None:
        fill = np.clip(fill, *clip)
    # float64, so that statistics of float64 images beyond float32's range stay finite.
    return NormStats(offset, scale, fill, clip, warnings,
                     background if norm.kind == "percentile" else None)


def apply_stats(tile: np.ndarray, stats: NormStats) -> None:
    """Normalise a float32 (or float64) ``(C, h, w)`` tile of raw values in place."""
    for c in range(tile.shape[0]):
        t = tile[c]
        # Python floats are "weak" scalars: the arithmetic stays in the tile's dtype.
        t -= float(stats.offset[c])
        t /= float(stats.scale[c])
        if not np.isfinite(t).all():
            t[~np.isfinite(t)] = float(stats.fill[c])
        if stats.clip is not None:
            np.clip(t, stats.clip[0], stats.clip[1], out=t)


def normalize_slice(chw: np.ndarray, norm: Normalization) -> tuple[np.ndarray, list[str]]:
    """Normalise one ``(C, H, W)`` slice to a new float32 array.

    Parameters
    ----------
    chw : np.ndarray
        Raw intensities of one slice, any numeric or bool dtype.
    norm : Normalization
        The model's normalisation settings.

    Returns
    -------
    normalised : np.ndarray
        float32 ``(C, H, W)``, all finite.
    warnings : list of str
        Non-finite pixels replaced, constant channels.

    Raises
    ------
    InputError
        If a channel has no finite pixel.
    """
    stats = compute_stats(chw, norm)
    return normalized_copy(chw, stats), stats.warnings


def normalized_copy(chw: np.ndarray, stats: NormStats) -> np.ndarray:
    """A float32 copy of a raw ``(C, H, W)`` slice, normalised with ``stats``."""
    out = np.empty(chw.shape, dtype=np.float32)
    np.copyto(out, chw.view(np.uint8) if chw.dtype == np.bool_ else chw, casting="unsafe")
    apply_stats(out, stats)
    return out
