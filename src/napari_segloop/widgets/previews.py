"""Live previews of ``prob > t`` drawn by napari's shader: a slider tick only sets contrast limits.

A threshold preview is an Image layer whose colormap is transparent at and
below the lower contrast limit and coloured above it. With contrast limits
``(t, t + PREVIEW_WIDTH)`` the GPU computes, per pixel,
``u = (clamp(p, t, t + w) - t) / w``:

* ``p <= t`` clamps to exactly ``t``, so ``u == 0`` exactly and the colormap's
  ``low_color`` is used (the shader tests ``u <= 1e-12``);
* ``p > t`` (in float32, the precision of the texture and of the uniform
  ``t``) gives ``p - t >= spacing(t)`` exactly, so ``u >= spacing(t) / w``,
  about 1e-3 for ``t`` near 0.5 and above 1e-12 for every ``t >= 5e-10``;
  every colour of the colormap other than ``low_color`` is the foreground
  colour, so where ``u`` lands in the lookup table does not matter.

The preview is therefore exactly ``prob > t`` (no lookup-table quantisation,
ties ``p == t`` are background, as everywhere in the product), except for
probabilities below ``1e-16`` at ``t = 0``, which the GPU may show as
background. The width ``w = 2**-14`` is the smallest power of two that napari
accepts without rescaling the data on the CPU (it rescales when the contrast
range is narrower than 256 float32 steps of its ends), so setting the limits
costs the same at any image size.

The confusion preview needs four colours from two boundaries, which one
affine contrast mapping cannot place exactly; it uses two layers of the same
kind instead: the probabilities of true-foreground pixels (``low_color`` =
false negative, above = true positive) and of true-background pixels
(``low_color`` transparent, above = false positive), NaN elsewhere and outside
the evaluation region (NaN is drawn transparent).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_segloop.core.evaluation import FN, FP, TP, truth_foreground
from napari_segloop.widgets.colors import CONFUSION_COLORS

#: Width of the contrast window of a preview (see the module docstring).
PREVIEW_WIDTH = 2.0**-14

TRANSPARENT = (0.0, 0.0, 0.0, 0.0)
#: Colour of the mask (preview and binary ``<image> mask`` layer): Okabe-Ito bluish green.
MASK_COLOR = (0.0, 158 / 255, 115 / 255, 1.0)

MASK_PREVIEW_ROLE = "mask preview"
TRUTH_PREVIEW_ROLE = "confusion preview (true objects)"
BACKGROUND_PREVIEW_ROLE = "confusion preview (true background)"
PREVIEW_ROLES = (MASK_PREVIEW_ROLE, TRUTH_PREVIEW_ROLE, BACKGROUND_PREVIEW_ROLE)

_CHUNK = 1 << 22


def threshold32(threshold: float) -> float:
    """``threshold`` rounded to float32 (the precision every comparison uses), as a Python float."""
    return float(np.float32(threshold))


def preview_limits(threshold: float) -> tuple[float, float]:
    """Contrast limits that make a preview layer show exactly ``prob > threshold``."""
    t = threshold32(threshold)
    return (t, t + PREVIEW_WIDTH)


def step_colormap(below: tuple[float, ...], above: tuple[float, ...], name: str) -> Any:
    """A napari colormap: ``below`` at and under the lower contrast limit, ``above`` elsewhere.

    NaN is transparent.
    """
    from napari.utils.colormaps import Colormap

    return Colormap(
        colors=[above, above],
        controls=[0.0, 0.5, 1.0],
        interpolation="zero",
        low_color=below,
        nan_color=TRANSPARENT,
        name=name,
        display_name=name,
    )


def mask_colormap() -> Any:
    """Colormap of the mask preview."""
    return step_colormap(TRANSPARENT, MASK_COLOR, "segloop mask")


def truth_colormap() -> Any:
    """Colormap of the true-foreground preview: false negative at or below, true positive above."""
    return step_colormap(CONFUSION_COLORS[FN], CONFUSION_COLORS[TP], "segloop true objects")


def background_colormap() -> Any:
    """Colormap of the true-background preview: transparent at or below, false positive above."""
    return step_colormap(TRANSPARENT, CONFUSION_COLORS[FP], "segloop true background")


def shader_colors(values: np.ndarray, colormap: Any, contrast_limits: tuple[float, float]) -> np.ndarray:
    """RGBA that napari's shader gives ``values`` (float32 arithmetic, as on the GPU).

    Used to check previews without a screenshot: clamp to the limits,
    normalise, then the colormap (``u <= 1e-12`` takes ``low_color``).
    """
    v = np.asarray(values, dtype=np.float32)
    lo, hi = np.float32(contrast_limits[0]), np.float32(contrast_limits[1])
    with np.errstate(invalid="ignore"):
        u = (np.clip(v, lo, hi) - lo) / (hi - lo)
    u = np.where(np.isnan(v), np.nan, np.where(u <= 1e-12, 0.0, u)).astype(np.float64)
    return np.asarray(colormap.map(u.ravel())).reshape(*v.shape, 4)


def confusion_preview_arrays(
    prob: np.ndarray, truth: np.ndarray, region: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The two float32 arrays of the confusion preview.

    Parameters
    ----------
    prob : ndarray of float
        Probability map.
    truth : ndarray of int or bool
        Ground truth of the same shape (foreground where non-zero).
    region : ndarray of bool, optional
        Evaluated pixels (the shape of ``prob`` or of one slice).

    Returns
    -------
    on_truth, on_background : ndarray of float32
        ``prob`` where the truth is foreground (respectively background)
        inside the region, NaN elsewhere.
    """
    prob = np.asarray(prob)
    shape = prob.shape
    on_truth = np.full(shape, np.nan, dtype=np.float32)
    on_background = np.full(shape, np.nan, dtype=np.float32)
    p2 = prob.reshape(-1, *shape[-2:]) if prob.ndim > 2 else prob[None]
    t2 = np.asarray(truth).reshape(p2.shape)
    a2, b2 = on_truth.reshape(p2.shape), on_background.reshape(p2.shape)
    r = None if region is None else np.asarray(region, dtype=bool)
    rows = max(1, _CHUNK // max(1, shape[-1]))
    for i in range(p2.shape[0]):
        ri = None if r is None else (r if r.ndim == 2 else r.reshape(p2.shape)[i])
        for y in range(0, shape[-2], rows):
            sl = slice(y, y + rows)
            fg = truth_foreground(t2[i, sl])
            bg = ~fg
            if ri is not None:
                fg = fg & ri[sl]
                bg &= ri[sl]
            np.copyto(a2[i, sl], p2[i, sl], where=fg)
            np.copyto(b2[i, sl], p2[i, sl], where=bg)
    return on_truth, on_background
