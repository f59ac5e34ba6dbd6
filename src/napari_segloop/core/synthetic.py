"""Procedural fluorescent-nuclei images with ground-truth instance labels.

The generator draws bright, roughly elliptical objects with irregular outlines
and internal texture on a dark, uneven background, then applies optical blur
and camera noise (Poisson shot noise plus Gaussian read noise). It is used

* to train the built-in default model (``scripts/train_default_model.py``),
* as napari's "Open Sample" synthetic nuclei image with its labels,
* by the tests.

Everything is pure NumPy/SciPy and deterministic for a given ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["BORDER_CLASS_NAMES", "border_classes", "make_nuclei", "make_nuclei_classes", "random_params",
           "simulate_class_scribbles"]


@dataclass(frozen=True)
class _Object:
    """One object to draw: centre, ellipse axes, angle, outline wobble and looks."""

    y: float
    x: float
    a: float  # semi-axis along the object's main direction, px
    b: float  # other semi-axis, px
    angle: float
    harmonics: np.ndarray  # (k, 3): order, amplitude, phase
    intensity: float
    texture: float  # relative strength of the internal texture
    dome: float  # how much brighter the centre is than the rim (0..1)
    edge: float  # width of the intensity ramp at the rim, px


def _draw_objects(
    rng: np.random.Generator,
    shape: tuple[int, int],
    n: int,
    radius: tuple[float, float],
    ellipticity: tuple[float, float],
    irregularity: float,
    separation: tuple[float, float],
    cluster: float,
) -> list[tuple[float, float, float, float, float, np.ndarray]]:
    """Place up to ``n`` objects (centre, axes, angle, outline harmonics).

    Objects are added one by one, either at a uniform random spot or, with
    probability ``cluster``, right next to an already placed object. A
    candidate is rejected when its centre is closer to another centre than
    ``separation * (r_i + r_j)`` (with ``separation`` drawn per pair from
    the given range), so values below 1 produce touching, slightly
    overlapping objects.
    """
    h, w = shape
    placed: list[tuple[float, float, float, float, float, np.ndarray]] = []
    centres = np.empty((0, 2))
    radii = np.empty(0)
    attempts = 0
    max_attempts = 30 * n + 100
    while len(placed) < n and attempts < max_attempts:
        attempts += 1
        r = float(np.exp(rng.uniform(np.log(radius[0]), np.log(radius[1]))))
        ratio = float(rng.uniform(*ellipticity))
        a = r * np.sqrt(ratio)
        b = r / np.sqrt(ratio)
        if len(placed) and rng.random() < cluster:
            j = int(rng.integers(len(placed)))
            theta = rng.uniform(0, 2 * np.pi)
            dist = (radii[j] + r) * rng.uniform(separation[0], max(separation[1], 1.0))
            cy = centres[j, 0] + dist * np.sin(theta)
            cx = centres[j, 1] + dist * np.cos(theta)
        else:
            cy = rng.uniform(-0.5 * r, h + 0.5 * r)
            cx = rng.uniform(-0.5 * r, w + 0.5 * r)
        if len(placed):
            d = np.hypot(centres[:, 0] - cy, centres[:, 1] - cx)
            sep = rng.uniform(*separation)
            if np.any(d < sep * (radii + r)):
                continue
        n_harm = 4
        harmonics = np.stack(
            [
                np.arange(2, 2 + n_harm, dtype=float),
                rng.normal(0, irregularity, n_harm) / np.arange(1, 1 + n_harm),
                rng.uniform(0, 2 * np.pi, n_harm),
            ],
            axis=1,
        )
        angle = float(rng.uniform(0, np.pi))
        placed.append((cy, cx, a, b, angle, harmonics))
        centres = np.vstack([centres, [cy, cx]])
        radii = np.append(radii, r)
    return placed


def _smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], scale: float
) -> np.ndarray:
    """Zero-mean, unit-std noise smoothed over about ``scale`` pixels (fast)."""
    h, w = shape
    factor = max(1, int(scale // 4))
    small = rng.standard_normal((h // factor + 2, w // factor + 2))
    small = ndi.gaussian_filter(small, max(scale / factor, 0.5), mode="wrap")
    out = ndi.zoom(small, factor, order=1)[:h, :w] if factor > 1 else small[:h, :w]
    out = out - out.mean()
    std = out.std()
    return out / std if std > 0 else out


def make_nuclei(
    shape: tuple[int, int] = (512, 512),
    seed: int = 0,
    *,
    n_objects: int | None = None,
    radius: tuple[float, float] = (6.0, 14.0),
    density: float = 0.25,
    ellipticity: tuple[float, float] = (1.0, 1.6),
    irregularity: float = 0.06,
    separation: tuple[float, float] = (0.75, 1.05),
    cluster: float = 0.3,
    overlap_sum: float = 0.5,
    intensity: tuple[float, float] = (0.4, 1.0),
    dim_fraction: float = 0.1,
    bright_fraction: float = 0.03,
    texture: tuple[float, float] = (0.05, 0.3),
    blur: tuple[float, float] = (0.6, 1.6),
    background: float = 0.08,
    gradient: float = 0.05,
    haze: float = 0.1,
    debris: float = 0.0,
    photons: float = 300.0,
    read_noise: float = 0.01,
    max_value: float = 1000.0,
    offset: float = 0.0,
    quantize: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Make a synthetic fluorescent-nuclei image and its instance labels.

    Parameters
    ----------
    shape : tuple of int
        Image shape ``(height, width)``.
    seed : int
        Seed of :func:`numpy.random.default_rng`; the same seed and
        arguments always give the same image and labels.
    n_objects : int, optional
        Number of objects to place. By default it follows from ``density``.
        Fewer objects may be placed if there is no room for them.
    radius : (float, float)
        Range of the objects' mean radius in pixels (sampled log-uniformly).
    density : float
        Target fraction of the image covered by objects when ``n_objects``
        is not given.
    ellipticity : (float, float)
        Range of the ratio of the long to the short axis (1: round).
    irregularity : float
        Amplitude of the random low-order wobble of the outlines.
    separation : (float, float)
        Minimum centre distance as a fraction of the two radii, sampled per
        object from this range; values below 1 make touching objects.
    cluster : float
        Probability that an object is placed next to an existing one.
    overlap_sum : float
        How the light of overlapping objects combines, from 0 (the brighter
        one wins, leaving a dim seam between touching objects) to 1 (they add
        up, so the seam disappears and overlaps glow).
    intensity : (float, float)
        Range of the objects' brightness (before scaling to ``max_value``).
    dim_fraction : float
        Fraction of objects made 3-8 times dimmer than usual.
    bright_fraction : float
        Fraction of small, elongated, very bright objects (like mitotic or
        apoptotic nuclei).
    texture : (float, float)
        Range of the relative strength of the granular texture inside objects.
    blur : (float, float)
        Range of the Gaussian point-spread function's sigma in pixels.
    background : float
        Mean background level, relative to an object brightness of 1.
    gradient : float
        Strength of the uneven (smooth, low-frequency) background.
    haze : float
        Strength of the out-of-focus glow around objects.
    debris : float
        Number of faint, blurry, unlabelled blobs per 10,000 pixels.
    photons : float
        Photons collected at brightness 1; lower values give more shot noise.
    read_noise : float
        Standard deviation of the Gaussian camera noise, relative to
        brightness 1.
    max_value : float
        The image is scaled so that brightness 1 maps to this value.
    offset : float
        Camera offset added to every pixel.
    quantize : bool
        Round to integers and clip to ``[0, offset + 2 * max_value]`` like an
        integer camera (the image is still returned as float32).

    Returns
    -------
    image : numpy.ndarray
        ``float32`` array of ``shape``.
    labels : numpy.ndarray
        ``int32`` array of ``shape``: 0 is background, ``1..N`` are objects.

    Examples
    --------
    >>> image, labels = make_nuclei((256, 256), seed=1, n_objects=20)
    >>> image.shape, image.dtype, labels.dtype
    ((256, 256), dtype('float32'), dtype('int32'))
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be (height, width) with positive sizes, got {shape}")
    if not 0 < radius[0] <= radius[1]:
        raise ValueError(f"radius must satisfy 0 < low <= high, got {radius}")
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng(seed)
    # A separate stream for the placement keeps the layout stable when only
    # the looks (noise, blur, ...) change.
    layout_rng = np.random.default_rng(rng.integers(2**63))
    looks_rng = np.random.default_rng(rng.integers(2**63))

    if n_objects is None:
        mean_area = np.pi * radius[0] * radius[1]
        n_objects = round(density * h * w / mean_area)
    n_objects = max(int(n_objects), 0)
    layout = _draw_objects(
        layout_rng, (h, w), n_objects, radius, ellipticity, irregularity, separation, cluster
    )

    objects: list[_Object] = []
    for cy, cx, a, b, angle, harmonics in layout:
        level = float(looks_rng.uniform(*intensity))
        tex = float(looks_rng.uniform(*texture))
        u = looks_rng.random()
        if u < bright_fraction:
            # Small, elongated, very bright and textured (condensed chromatin).
            a, b = a * 0.75, b * 0.45
            level *= looks_rng.uniform(3.0, 8.0)
            tex = max(tex, 0.3)
        elif u < bright_fraction + dim_fraction:
            level /= looks_rng.uniform(3.0, 8.0)
        objects.append(
            _Object(
                y=cy,
                x=cx,
                a=max(a, 1.0),
                b=max(b, 1.0),
                angle=angle,
                harmonics=harmonics,
                intensity=level,
                texture=tex,
                dome=float(looks_rng.uniform(0.0, 0.4)),
                edge=float(looks_rng.uniform(0.5, 2.0)),
            )
        )

    labels = np.zeros((h, w), dtype=np.int32)
    best = np.full((h, w), np.inf, dtype=np.float32)
    signal = np.zeros((h, w), dtype=np.float32)
    total = np.zeros((h, w), dtype=np.float32) if overlap_sum > 0 else None
    fine = _smooth_noise(looks_rng, (h, w), 1.0) if objects else None
    coarse = _smooth_noise(looks_rng, (h, w), 3.0) if objects else None
    for index, obj in enumerate(objects, start=1):
        _render(obj, index, labels, best, signal, total, fine, coarse)
    # Objects outside the image or hidden by their neighbours leave no pixel:
    # make the ids sequential again.
    present = np.unique(labels)
    if len(present) and present[-1] != len(present) - 1:
        lookup = np.zeros(int(present[-1]) + 1, dtype=np.int32)
        lookup[present] = np.arange(len(present), dtype=np.int32)
        labels = lookup[labels]

    if total is not None:
        signal = signal + overlap_sum * (total - signal)
    image = signal
    if haze > 0 and objects:
        image = image + haze * ndi.gaussian_filter(signal, sigma=float(np.mean(radius)) * 1.5)
    if debris > 0:
        n_debris = looks_rng.poisson(debris * h * w / 1e4)
        spots = np.zeros((h, w), dtype=np.float32)
        ys = looks_rng.integers(0, h, n_debris)
        xs = looks_rng.integers(0, w, n_debris)
        spots[ys, xs] = looks_rng.uniform(0.5, 2.0, n_debris) * np.mean(radius) ** 2
        image = image + 0.3 * ndi.gaussian_filter(spots, sigma=float(np.mean(radius)) * 0.8)
    sigma = float(looks_rng.uniform(*blur))
    if sigma > 0:
        image = ndi.gaussian_filter(image, sigma)
    bg = np.full((h, w), background, dtype=np.float32)
    if gradient > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        theta = looks_rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(theta) * xx + np.sin(theta) * yy) / max(h, w)
        ramp -= ramp.mean()
        blobs = _smooth_noise(looks_rng, (h, w), max(h, w) / 6)
        bg = bg + gradient * (ramp + 0.5 * blobs)
        bg = np.maximum(bg, 0.0)
    image = np.maximum(image + bg, 0.0)
    if photons > 0:
        image = looks_rng.poisson(image * photons).astype(np.float32) / photons
    if read_noise > 0:
        image = image + looks_rng.normal(0.0, read_noise, image.shape).astype(np.float32)
    image = image * max_value + offset
    if quantize:
        image = np.clip(np.round(image), 0, offset + 2 * max_value)
    return image.astype(np.float32), labels


def _render(
    obj: _Object,
    index: int,
    labels: np.ndarray,
    best: np.ndarray,
    signal: np.ndarray,
    total: np.ndarray | None,
    fine: np.ndarray | None,
    coarse: np.ndarray | None,
) -> None:
    """Draw one object into ``labels``, ``signal`` (maximum) and ``total`` (sum), in place."""
    h, w = labels.shape
    amp = float(np.abs(obj.harmonics[:, 1]).sum())
    reach = obj.a * (1 + amp) + 2 * obj.edge + 2
    y0, y1 = max(int(obj.y - reach), 0), min(int(obj.y + reach) + 2, h)
    x0, x1 = max(int(obj.x - reach), 0), min(int(obj.x + reach) + 2, w)
    if y0 >= y1 or x0 >= x1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    dy, dx = yy - obj.y, xx - obj.x
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    phi = np.arctan2(v, u)
    # Normalised radius: < 1 inside the (wobbly) ellipse.
    wobble = 1.0 + sum(
        amp_k * np.cos(order * phi + phase) for order, amp_k, phase in obj.harmonics
    )
    rho = np.sqrt((u / obj.a) ** 2 + (v / obj.b) ** 2) / np.maximum(wobble, 0.3)
    mean_r = np.sqrt(obj.a * obj.b)
    inside = rho < 1.0
    box_best = best[y0:y1, x0:x1]
    take = inside & (rho < box_best)
    box_best[take] = rho[take]
    labels[y0:y1, x0:x1][take] = index
    # Intensity: a soft rim (ramp of ``edge`` px) and a slightly domed centre.
    depth = (1.0 - rho) * mean_r  # approximate distance inside the rim, px
    profile = np.clip(0.5 + depth / obj.edge, 0.0, 1.0) * (1.0 - obj.dome * rho**2)
    if fine is not None and coarse is not None and obj.texture > 0:
        tex = 0.6 * fine[y0:y1, x0:x1] + 0.8 * coarse[y0:y1, x0:x1]
        profile = profile * np.clip(1.0 + obj.texture * tex, 0.2, None)
    box = signal[y0:y1, x0:x1]
    light = obj.intensity * profile
    np.maximum(box, light, out=box)
    if total is not None:
        total[y0:y1, x0:x1] += light


def random_params(rng: np.random.Generator) -> dict[str, object]:
    """Draw varied :func:`make_nuclei` keyword arguments for training data.

    Covers small to large, round to elongated, sparse to crowded and
    clustered objects, dim objects and bright outliers, sharp to blurry,
    clean to noisy images, flat to uneven backgrounds and integer cameras
    with small (8-bit-like) to large (16-bit-like) ranges.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness.

    Returns
    -------
    dict
        Keyword arguments for :func:`make_nuclei` (everything but ``shape``
        and ``seed``).
    """
    r_mid = float(np.exp(rng.uniform(np.log(4.0), np.log(22.0))))
    spread = float(rng.uniform(1.1, 1.8))
    lo = float(rng.uniform(0.2, 0.8))
    max_value = float(np.exp(rng.uniform(np.log(30.0), np.log(20000.0))))
    return {
        "radius": (r_mid / spread, r_mid * spread),
        "density": float(rng.uniform(0.03, 0.5)),
        "ellipticity": (1.0, float(rng.uniform(1.1, 2.2))),
        "irregularity": float(rng.uniform(0.0, 0.12)),
        "separation": (float(rng.uniform(0.55, 0.95)), float(rng.uniform(0.95, 1.4))),
        "cluster": float(rng.uniform(0.0, 0.8)),
        "overlap_sum": float(rng.uniform(0.0, 1.0)),
        "intensity": (lo, float(lo + rng.uniform(0.1, 1.0))),
        "dim_fraction": float(rng.uniform(0.0, 0.25)),
        "bright_fraction": float(rng.choice([0.0, rng.uniform(0.0, 0.1)])),
        "texture": (0.0, float(rng.uniform(0.05, 0.6))),
        "blur": (0.3, float(rng.uniform(0.6, 3.0))),
        "background": float(rng.uniform(0.0, 0.35)),
        "gradient": float(rng.uniform(0.0, 0.25)),
        "haze": float(rng.uniform(0.0, 0.3)),
        "debris": float(rng.choice([0.0, rng.uniform(0.0, 3.0)])),
        "photons": float(np.exp(rng.uniform(np.log(5.0), np.log(3000.0)))),
        "read_noise": float(rng.uniform(0.0, 0.06)),
        "max_value": max_value,
        "offset": float(rng.choice([0.0, rng.uniform(0, 500)])),
        "quantize": bool(rng.random() < 0.7),
    }


def make_phase_contrast(
    shape: tuple[int, int] = (512, 512),
    seed: int = 0,
    *,
    radius: tuple[float, float] = (7.0, 13.0),
    density: float = 0.22,
    halo: float = 0.35,
    granules: float = 0.25,
    photons: float = 400.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A phase-contrast-like image: dark, granular cells in bright halos on a grey background.

    The kind of image the built-in default model (bright fluorescent nuclei on
    a dark background) gets wrong: it marks the bright halos, not the cells,
    and inverting the image turns the halos into dark rings inside which the
    granules still look like objects. The layout of the cells comes from
    :func:`make_nuclei` (same seed, same outlines), so the labels are exact.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``.
    seed : int
        The same seed always gives the same image and labels.
    radius, density :
        Cell size in pixels and the fraction of the image they cover.
    halo : float
        Brightness of the halo around each cell above the background (0.5).
    granules : float
        Strength of the bright granules inside the cells.
    photons : float
        Shot noise: photons at the background level.

    Returns
    -------
    image : numpy.ndarray
        ``float32`` in about ``[0, 1000]``.
    labels : numpy.ndarray
        ``int32`` instance labels.
    """
    from scipy import ndimage as ndi

    _, labels = make_nuclei(shape, seed, radius=radius, density=density, separation=(0.9, 1.2),
                            cluster=0.4, irregularity=0.08)
    rng = np.random.default_rng([seed, 17])
    fg = labels > 0
    outside = ndi.distance_transform_edt(~fg)
    inside = ndi.distance_transform_edt(fg)
    base = 0.5 + 0.08 * _smooth_noise(rng, fg.shape, 0.15 * max(fg.shape))
    ring = halo * np.exp(-((outside - 1.5) / 2.2) ** 2) * (~fg)
    body = -0.28 * np.clip(inside / 3.0, 0, 1) * fg
    spots = ndi.gaussian_filter((rng.random(fg.shape) < 0.02).astype(np.float32), 1.2) * 9.0
    grain = granules * np.clip(spots, 0, 1) * fg
    image = ndi.gaussian_filter(base + ring + body + grain, 0.9)
    image = rng.poisson(np.clip(image, 0.01, None) * photons) / photons * 1000.0
    return image.astype(np.float32), labels.astype(np.int32)


def simulate_scribbles(
    labels: np.ndarray,
    region: tuple[slice, ...] | np.ndarray | None = None,
    fraction: float = 0.01,
    seed: int = 0,
) -> np.ndarray:
    """Scribbles as a user paints them: short strokes inside objects and across the background.

    Strokes keep 2 px away from object boundaries (inside) and 3 px (outside),
    as a careful user would, so they carry no boundary information. About
    half of the painted pixels are object (1), half background (2).

    Parameters
    ----------
    labels : numpy.ndarray
        2-D ground truth (instance ids or a mask).
    region : tuple of slice or bool array, optional
        Where to paint (default: everywhere).
    fraction : float
        Painted pixels as a fraction of the whole image.
    seed : int
        Seed of the strokes.

    Returns
    -------
    numpy.ndarray
        uint8 scribbles: 0 not annotated, 1 object, 2 background.
    """
    from scipy import ndimage as ndi
    from skimage.draw import line

    lab = np.asarray(labels)
    h, w = lab.shape
    rng = np.random.default_rng(seed)
    where = np.ones(lab.shape, bool)
    if region is not None:
        where = np.zeros(lab.shape, bool)
        where[region] = True
    out = np.zeros(lab.shape, np.uint8)
    fg_core = ndi.binary_erosion(lab > 0, iterations=2) & where
    bg_core = ndi.binary_erosion(lab == 0, iterations=3) & where
    goal = fraction * lab.size / 2
    ids = [int(i) for i in np.unique(lab[fg_core]) if i]
    rng.shuffle(ids)
    for i in ids:
        ys, xs = np.nonzero((lab == i) & fg_core)
        if len(ys) < 4:
            continue
        a, b = rng.choice(len(ys), 2, replace=False)
        rr, cc = line(int(ys[a]), int(xs[a]), int(ys[b]), int(xs[b]))
        keep = fg_core[rr, cc]
        out[rr[keep], cc[keep]] = 1
        if (out == 1).sum() >= goal:
            break
    ys, xs = np.nonzero(bg_core)
    for _ in range(10_000):
        if (out == 2).sum() >= goal or not len(ys):
            break
        k = int(rng.integers(len(ys)))
        angle, length = rng.uniform(0, np.pi), int(rng.integers(10, 40))
        y1 = int(np.clip(ys[k] + length * np.sin(angle), 0, h - 1))
        x1 = int(np.clip(xs[k] + length * np.cos(angle), 0, w - 1))
        rr, cc = line(int(ys[k]), int(xs[k]), y1, x1)
        keep = bg_core[rr, cc]
        out[rr[keep], cc[keep]] = 2
    return out


#: Class names of :func:`border_classes` (class index order).
BORDER_CLASS_NAMES = ("background", "interior", "border")


def border_classes(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """Instance labels as a 3-class map: 0 background, 1 object interior, 2 object border.

    The "touching-object borders as a class" set-up of nuclear segmentation
    (Caicedo et al. 2019): a model that finds the border class separates
    touching objects that a binary mask merges. Works on any instance labels,
    synthetic or real.

    Parameters
    ----------
    labels : numpy.ndarray
        2-D instance ids (0 background).
    width : int
        Border width in pixels, inside each object.

    Returns
    -------
    numpy.ndarray
        uint8 class map.
    """
    from skimage.segmentation import find_boundaries

    lab = np.asarray(labels)
    border = find_boundaries(lab, mode="inner")
    if width > 1:
        border = ndi.binary_dilation(border, iterations=width - 1) & (lab > 0)
    out = (lab > 0).astype(np.uint8)
    out[border] = 2
    return out


def make_nuclei_classes(shape: tuple[int, int] = (256, 256), seed: int = 0,
                        **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
    """A :func:`make_nuclei` image with its :func:`border_classes` map (the multi-class sample).

    Returns
    -------
    image : numpy.ndarray
        float32 image.
    classes : numpy.ndarray
        uint8: 0 background, 1 interior, 2 border.
    """
    image, labels = make_nuclei(shape, seed, **kwargs)  # type: ignore[arg-type]
    return image, border_classes(labels)


def simulate_class_scribbles(classes: np.ndarray, n_classes: int, fraction: float = 0.02,
                             seed: int = 0) -> np.ndarray:
    """Scribbles for K classes (0 not annotated, 1..K-1 the classes, K background) from a class map.

    Short strokes inside each class (one pixel away from its edges, unless the
    class is too thin for that), about the same number of pixels per class.
    """
    from skimage.draw import line

    cls = np.asarray(classes)
    rng = np.random.default_rng(seed)
    h, w = cls.shape
    out = np.zeros(cls.shape, np.uint8)
    goal = fraction * cls.size / n_classes
    for c in range(n_classes):
        core = ndi.binary_erosion(cls == c, iterations=1)
        if core.sum() < 20:  # a thin class (borders): paint on it, not inside it
            core = cls == c
        ys, xs = np.nonzero(core)
        value = n_classes if c == 0 else c
        painted = 0
        for _ in range(5_000):
            if painted >= goal or not len(ys):
                break
            k = int(rng.integers(len(ys)))
            angle, length = rng.uniform(0, np.pi), int(rng.integers(4, 20))
            y1 = int(np.clip(ys[k] + length * np.sin(angle), 0, h - 1))
            x1 = int(np.clip(xs[k] + length * np.cos(angle), 0, w - 1))
            rr, cc = line(int(ys[k]), int(xs[k]), y1, x1)
            keep = core[rr, cc] & (out[rr, cc] == 0)
            out[rr[keep], cc[keep]] = value
            painted += int(keep.sum())
    return out
