"""The layers the threshold and confusion docks make, found again by their mark, updated in place.

Every layer made here carries ``metadata["napari-segloop"] = {"role": ...,
"image": ...}`` and is found again by that mark (never by name alone), so a
user's layer that happens to have the same name is never touched. Each
output is one layer, updated in place (its data replaced, its colormap kept).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_segloop.widgets.session import METADATA_KEY, unwrap

MASK_ROLE = "mask"
CONFUSION_ROLE = "confusion"
PROBABILITY_ROLE = "probability"

_SUFFIXES = (" probability", " mask")


def role_of(layer: Any) -> str | None:
    """The role of a layer this plugin made (``"probability"``, ``"mask"``, ...), or None."""
    mark = getattr(layer, "metadata", {}).get(METADATA_KEY)
    return mark.get("role") if isinstance(mark, dict) else None


def base_name(layer: Any) -> str:
    """The image name that names a layer's outputs (``<image> mask``, ``<image> confusion``).

    The image recorded by the plugin for its own layers; otherwise the layer
    name without a trailing " probability" or " mask".
    """
    mark = getattr(layer, "metadata", {}).get(METADATA_KEY)
    if isinstance(mark, dict) and isinstance(mark.get("image"), str):
        return mark["image"]
    name = str(layer.name)
    for suffix in _SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def find_output(viewer: Any, role: str, image: str) -> Any:
    """The layer with this plugin's ``role`` made for ``image``, or None."""
    for layer in unwrap(viewer).layers:
        mark = getattr(layer, "metadata", {}).get(METADATA_KEY)
        if isinstance(mark, dict) and mark.get("role") == role and mark.get("image") == image:
            return layer
    return None


def _add_keeping_selection(viewer: Any, add: Any) -> Any:
    """Add a layer with ``add()`` without moving the user's selection onto it."""
    selection = viewer.layers.selection
    before = set(selection)
    active = selection.active
    layer = add()
    selection.clear()
    selection.update(lyr for lyr in before if lyr in viewer.layers)
    if active is not None and active in viewer.layers:
        selection.active = active
    return layer


def _place(layer: Any, like: Any) -> None:
    """Give ``layer`` the scale and translate of ``like`` (same number of axes)."""
    if like is None or len(like.scale) != layer.ndim:
        return
    if tuple(layer.scale) != tuple(like.scale):
        layer.scale = like.scale
    if tuple(layer.translate) != tuple(like.translate):
        layer.translate = like.translate


def ensure_image(
    viewer: Any,
    role: str,
    image: str,
    data: np.ndarray,
    like: Any,
    *,
    colormap: Any,
    contrast_limits: tuple[float, float],
    visible: bool = True,
    opacity: float = 0.6,
) -> Any:
    """Create or update the Image layer ``<image> <role>`` showing ``data`` (not copied)."""
    viewer = unwrap(viewer)
    layer = find_output(viewer, role, image)
    if layer is None:
        layer = _add_keeping_selection(viewer, lambda: viewer.add_image(
            data,
            name=f"{image} {role}",
            colormap=colormap,
            contrast_limits=contrast_limits,
            blending="translucent",
            interpolation2d="nearest",
            opacity=opacity,
            visible=visible,
            metadata={METADATA_KEY: {"role": role, "image": image}},
        ))
        _place(layer, like)
        return layer
    if layer.data is not data:
        layer.data = data
    layer.contrast_limits = contrast_limits
    _place(layer, like)
    if layer.visible != visible:
        layer.visible = visible
    return layer


def write_labels(
    viewer: Any,
    role: str,
    image: str,
    data: np.ndarray,
    like: Any,
    *,
    colormap: Any,
    colormap_key: str,
    opacity: float = 0.6,
    visible: bool = True,
) -> Any:
    """Create or update the Labels layer ``<image> <role>`` with ``data``.

    The existing layer is updated in place: its data replaced (napari
    redraws it), never a second layer. ``colormap`` is applied only when
    ``colormap_key`` differs from the one last applied (setting a colormap
    re-maps every pixel). ``visible=True`` shows it; False leaves its
    visibility to the caller (a new layer starts hidden). Adding a layer
    never moves the user's selection.
    """
    viewer = unwrap(viewer)
    layer = find_output(viewer, role, image)
    if layer is None:
        layer = _add_keeping_selection(viewer, lambda: viewer.add_labels(
            data,
            name=f"{image} {role}",
            opacity=opacity,
            colormap=colormap,
            visible=visible,
            metadata={METADATA_KEY: {"role": role, "image": image, "colors": colormap_key}},
        ))
        _place(layer, like)
        return layer
    layer.data = data
    mark = layer.metadata[METADATA_KEY]
    if mark.get("colors") != colormap_key:
        layer.colormap = colormap
        mark["colors"] = colormap_key
    _place(layer, like)
    if visible and not layer.visible:
        layer.visible = True
    return layer


def set_visible(layer: Any, visible: bool) -> None:
    """Show or hide a layer (no event when it is already so)."""
    if layer is not None and layer.visible != visible:
        layer.visible = visible


def remove_output(viewer: Any, layer: Any) -> None:
    """Remove one of this plugin's layers from the viewer if it is still there."""
    viewer = unwrap(viewer)
    if layer is not None and role_of(layer) is not None and layer in viewer.layers:
        viewer.layers.remove(layer)


def mask_labels_colormap(instances: bool) -> Any:
    """The colormap of ``<image> mask``: the mask colour for a binary mask, cycling colours for instances."""
    from napari.utils.colormaps import DirectLabelColormap, label_colormap

    from napari_segloop.widgets.previews import MASK_COLOR, TRANSPARENT

    if instances:
        return label_colormap(49, seed=0.5)
    return DirectLabelColormap(color_dict={0: TRANSPARENT, 1: MASK_COLOR, None: TRANSPARENT})


def confusion_labels_colormap() -> Any:
    """Fixed TP / FP / FN colours (TN transparent) for ``<image> confusion``."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_segloop.widgets.colors import CONFUSION_COLORS
    from napari_segloop.widgets.previews import TRANSPARENT

    colors: dict[Any, Any] = dict(CONFUSION_COLORS)
    colors[None] = TRANSPARENT
    return DirectLabelColormap(color_dict=colors)
