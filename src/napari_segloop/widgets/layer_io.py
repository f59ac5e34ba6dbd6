"""Reading an image layer for inference and writing the ``<image> probability`` layer.

Both run on the main thread. Reading returns plain arrays and options for the
core; writing never touches a layer the user made: the probability layer is
found through the session or by its name *and* this plugin's mark in
``layer.metadata``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from napari_segloop.core.inference.normalize import detect_channel_axis, prepare_input
from napari_segloop.core.inference.predict import PredictOptions
from napari_segloop.widgets.session import METADATA_KEY, ProbabilityMap, Session, unwrap

PROBABILITY_ROLE = "probability"
PROBABILITY_STYLE: dict[str, Any] = {
    "colormap": "magma",
    "contrast_limits": (0.0, 1.0),
    "blending": "additive",
    "opacity": 0.7,
}


def probability_name(image: Any) -> str:
    """Name of the probability layer of ``image``."""
    return f"{image.name} probability"


def layer_array(layer: Any) -> Any:
    """The full-resolution array of an image layer (level 0 of a multiscale layer), not loaded."""
    return layer.data[0] if layer.multiscale else layer.data


def shape_probe(layer: Any) -> np.ndarray:
    """A zero-cost array with the layer's shape and dtype, to check the layout without reading data."""
    data = layer_array(layer)
    return np.broadcast_to(np.zeros((), dtype=np.dtype(data.dtype)), tuple(data.shape))


@dataclass
class Layout:
    """How an image layer maps to the model input and the probability map.

    Attributes
    ----------
    channel_axis : int or None
        Channel axis of the layer's data.
    stack_axes : tuple of int
        Axes processed slice by slice (z, t, ...).
    output_shape : tuple of int
        Shape of the probability map (the data's shape without the channel axis).
    n_channels : int
        Channels in the image.
    scale, translate : tuple of float
        The image's scale and translate for the output's axes.
    """

    channel_axis: int | None
    stack_axes: tuple[int, ...]
    output_shape: tuple[int, ...]
    n_channels: int
    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @property
    def is_stack(self) -> bool:
        """True when the image has axes besides channels and the 2-D plane."""
        return bool(self.stack_axes)


def layout(layer: Any, model_channels: int) -> Layout:
    """Work out channel and stack axes of an image layer for a model with ``model_channels``."""
    shape = tuple(int(s) for s in layer_array(layer).shape)
    rgb = bool(getattr(layer, "rgb", False))
    axis = detect_channel_axis(shape, model_channels, rgb)
    others = [a for a in range(len(shape)) if a != axis]
    output_shape = tuple(shape[a] for a in others)
    scale = tuple(float(s) for s in layer.scale)
    translate = tuple(float(t) for t in layer.translate)
    if axis is not None and not rgb and len(scale) == len(shape):
        scale = tuple(s for i, s in enumerate(scale) if i != axis)
        translate = tuple(t for i, t in enumerate(translate) if i != axis)
    return Layout(
        channel_axis=axis,
        stack_axes=tuple(others[:-2]),
        output_shape=output_shape,
        n_channels=1 if axis is None else shape[axis],
        scale=scale,
        translate=translate,
    )


def current_slice(layer: Any, viewer: Any, lay: Layout) -> tuple[int, ...]:
    """The stack position of ``layer`` shown at the viewer's current dims position."""
    shape = layer_array(layer).shape
    position = layer.world_to_data(viewer.dims.point)
    index = []
    for axis in lay.stack_axes:
        value = float(position[axis]) if axis < len(position) else 0.0
        index.append(int(min(max(round(value), 0), shape[axis] - 1)))
    return tuple(index)


@dataclass
class PredictInput:
    """What the worker needs, read from the layer on the main thread.

    Attributes
    ----------
    data : array
        The image (or the one slice, with its channel axis) to predict.
    options : PredictOptions
        Options with the channel axis and ``rgb`` set for ``data``.
    layout : Layout
        The layer's layout.
    slice_index : tuple of int or None
        The stack position predicted in "current slice" mode.
    """

    data: np.ndarray
    options: PredictOptions
    layout: Layout
    slice_index: tuple[int, ...] | None


def read_input(
    layer: Any,
    viewer: Any,
    options: PredictOptions,
    model_channels: int,
    slice_only: bool,
    probe: bool = False,
) -> PredictInput:
    """Describe the layer's data for a prediction, without reading it.

    ``data`` is the layer's full-resolution array, or in "current slice" mode
    an index into it: for a dask or zarr layer it stays lazy, and
    :func:`materialize` reads it in the worker thread, so that napari never
    waits for a large read. The returned options carry an explicit channel
    axis valid for ``data``.
    With ``probe=True`` nothing is read: ``data`` is a zero-cost stand-in of
    the same shape and dtype, enough for :func:`check_input`.
    """
    lay = layout(layer, model_channels)
    rgb = bool(getattr(layer, "rgb", False))
    source = shape_probe(layer) if probe else layer_array(layer)
    axis = lay.channel_axis
    if slice_only and lay.is_stack:
        index = current_slice(layer, viewer, lay)
        indexer: list[Any] = [slice(None)] * source.ndim
        for a, i in zip(lay.stack_axes, index, strict=True):
            indexer[a] = i
        data = source[tuple(indexer)]
        if axis is not None:
            axis -= sum(1 for a in lay.stack_axes if a < axis)
    else:
        index = None
        data = source
    return PredictInput(data, replace(options, channel_axis=axis, rgb=rgb), lay, index)


def materialize(data: Any) -> np.ndarray:
    """Read lazy layer data (dask, zarr) into memory; call it in a worker, never on the GUI thread."""
    return np.asarray(data)


def check_input(inp: PredictInput, model_channels: int) -> None:
    """Raise :class:`~napari_segloop.core.errors.InputError` if the data cannot fit the model."""
    o = inp.options
    probe = np.broadcast_to(np.zeros((), dtype=inp.data.dtype), inp.data.shape)
    prepare_input(probe, model_channels, o.channel_axis, o.rgb, o.convert, o.channel)


def find_probability_layer(viewer: Any, session: Session, image: Any) -> Any:
    """The probability layer of ``image`` made by this plugin, or None."""
    entry = session.probability(image)
    layers = list(viewer.layers)
    if entry is not None:
        layer = entry.layer()
        if layer is not None and any(lyr is layer for lyr in layers):
            return layer
    name = probability_name(image)
    for layer in layers:
        mark = getattr(layer, "metadata", {}).get(METADATA_KEY)
        if layer.name == name and isinstance(mark, dict) and mark.get("role") == PROBABILITY_ROLE:
            return layer
    return None


def write_probability(
    viewer: Any,
    session: Session,
    image: Any,
    result: np.ndarray,
    inp: PredictInput,
) -> Any:
    """Show ``result`` in the ``<image> probability`` layer, updating it in place if it exists.

    A whole-image result replaces the layer's data. A slice result is written
    into the existing full-size map (created zero-filled if missing or of
    another shape). Returns the probability layer.
    """
    image = unwrap(image)
    lay = inp.layout
    layer = find_probability_layer(viewer, session, image)
    previous = session.probability(image)
    if inp.slice_index is None:
        data = np.asarray(result, dtype=np.float32)
        complete, slices = True, set()
    else:
        current = None if layer is None else layer.data
        reuse = (
            isinstance(current, np.ndarray)
            and current.shape == lay.output_shape
            and current.dtype == np.float32
            and (previous is None or previous.classes is None)  # not a view of K-class probabilities
        )
        data = current if reuse else np.zeros(lay.output_shape, dtype=np.float32)
        data[inp.slice_index] = result
        same_model = previous is not None and previous.model_version == session.model_version
        complete = bool(reuse and same_model and previous.complete)
        slices = (set(previous.slices) if reuse and same_model else set()) | {inp.slice_index}
    if previous is not None and previous.classes is not None:
        _drop_class_outputs(viewer, image, layer)
    if layer is None:
        layer = viewer.add_image(
            data,
            name=probability_name(image),
            scale=lay.scale,
            translate=lay.translate,
            metadata={METADATA_KEY: {"role": PROBABILITY_ROLE, "image": image.name}},
            **PROBABILITY_STYLE,
        )
    else:
        # Also for an array written in place: the setter emits ``events.data`` and redraws.
        layer.data = data
        layer.scale = lay.scale
        layer.translate = lay.translate
        layer.contrast_limits = PROBABILITY_STYLE["contrast_limits"]
    session.set_probability(
        image,
        ProbabilityMap(weakref.ref(layer), data, session.model_version, complete, slices),
    )
    return layer


def write_live_probability(viewer: Any, session: Session, image: Any, output: Any, inp: PredictInput) -> Any:
    """Show a zarr-backed probability map being written (a layer larger than memory) as a multiscale layer.

    An earlier ``<image> probability`` layer (the plugin's own) is replaced:
    a layer cannot turn multiscale in place. Returns the new layer.
    """
    from napari_segloop.widgets.large_layers import levels

    image = unwrap(image)
    old = find_probability_layer(viewer, session, image)
    previous = session.probability(image)
    if previous is not None and previous.classes is not None:
        _drop_class_outputs(viewer, image, old)
    if old is not None:
        viewer.layers.remove(old)
    lay = inp.layout
    data = levels(output)
    layer = viewer.add_image(
        data,
        multiscale=True,
        name=probability_name(image),
        scale=lay.scale,
        translate=lay.translate,
        metadata={METADATA_KEY: {"role": PROBABILITY_ROLE, "image": image.name, "path": str(output.path)}},
        **PROBABILITY_STYLE,
    )
    session.set_probability(
        image, ProbabilityMap(weakref.ref(layer), data[0], session.model_version, False, set()))
    return layer


CLASSES_ROLE = "classes"


def _drop_class_outputs(viewer: Any, image: Any, layer: Any) -> None:
    """A binary prediction replaces a K-class one: remove its class map and class confusion."""
    from napari_segloop.widgets.outputs import find_output, remove_output

    for role in (CLASSES_ROLE, "class confusion"):
        remove_output(viewer, find_output(viewer, role, image.name))
    if layer is not None:
        mark = layer.metadata.get(METADATA_KEY, {})
        if isinstance(mark, dict):
            mark.pop("class", None)


def class_map_colormap(classes: int) -> Any:
    """The colormap of ``<image> classes``: one colour per class, unassigned grey."""
    from napari.utils.colormaps import DirectLabelColormap

    from napari_segloop.widgets.class_state import class_colors

    return DirectLabelColormap(color_dict=class_colors(classes))


def write_class_prediction(
    viewer: Any,
    session: Session,
    image: Any,
    result: Any,
    inp: PredictInput,
    shown: int | None = None,
) -> Any:
    """Show a K-class prediction: ``<image> probability`` (one class) and ``<image> classes``.

    ``result`` is a :class:`~napari_segloop.widgets.class_state.ClassPrediction`
    for the whole image or for ``inp.slice_index`` (written into the previous
    full-size prediction of the same classes). The probability layer shows
    class ``shown`` (by default the one shown before, else class 1) as a view
    of the K-channel array: no copy. Returns the probability layer.
    """
    from napari_segloop.widgets.outputs import write_labels

    image = unwrap(image)
    lay = inp.layout
    previous = session.probability(image)
    before = previous.classes if previous is not None else None
    if inp.slice_index is not None:
        same_model = previous is not None and previous.model_version == session.model_version
        result = result.merged_into(before if same_model else None, lay.output_shape, inp.slice_index)
    k = result.classes
    if shown is None:
        shown = previous.shown if previous is not None and before is not None else 1
    shown = int(min(max(shown, 0), k - 1))
    data = result.probabilities[shown]
    layer = find_probability_layer(viewer, session, image)
    mark = {"role": PROBABILITY_ROLE, "image": image.name, "class": result.names[shown]}
    if layer is None:
        layer = viewer.add_image(data, name=probability_name(image), scale=lay.scale,
                                 translate=lay.translate, metadata={METADATA_KEY: mark},
                                 **PROBABILITY_STYLE)
    else:
        layer.data = data
        layer.scale = lay.scale
        layer.translate = lay.translate
        layer.contrast_limits = PROBABILITY_STYLE["contrast_limits"]
        layer.metadata[METADATA_KEY] = {**layer.metadata.get(METADATA_KEY, {}), **mark}
    session.set_probability(image, ProbabilityMap(weakref.ref(layer), data, session.model_version,
                                                  result.complete, set(result.slices), result, shown))
    write_labels(viewer, CLASSES_ROLE, image.name, result.class_map, layer,
                 colormap=class_map_colormap(k), colormap_key=f"classes-{k}", opacity=0.5)
    return layer


def show_class(viewer: Any, session: Session, image: Any, shown: int) -> Any:
    """Point ``<image> probability`` at class ``shown`` of the image's K-class prediction (no copy)."""
    image = unwrap(image)
    entry = session.probability(image)
    if entry is None or entry.classes is None:
        return None
    layer = entry.layer()
    pred = entry.classes
    shown = int(min(max(shown, 0), pred.classes - 1))
    data = pred.probabilities[shown]
    if layer is not None and layer in unwrap(viewer).layers:
        layer.data = data
        layer.metadata[METADATA_KEY] = {**layer.metadata.get(METADATA_KEY, {}),
                                        "class": pred.names[shown]}
    session.set_probability(image, replace(entry, data=data, shown=shown))  # after the layer: docks see it
    return layer
