"""A combo box of the viewer's layers of one kind, kept in sync with the layer list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QWidget

from napari_segloop.widgets.session import METADATA_KEY, unwrap


def follow_layer_list(
    combo: QComboBox,
    viewer: Any,
    inserted: Callable[..., Any],
    removed: Callable[..., Any],
    refresh: Callable[..., Any],
) -> None:
    """Keep ``combo`` in step with ``viewer.layers`` until the combo box is destroyed.

    ``inserted``/``removed`` receive the layer-list events; ``refresh`` runs on
    reordering and on every layer rename. All connections are undone when the
    widget is destroyed, so closing a dock never leaves the viewer calling into
    a deleted widget.
    """
    events = viewer.layers.events
    events.inserted.connect(inserted)
    events.removed.connect(removed)
    events.reordered.connect(refresh)
    for layer in viewer.layers:
        layer.events.name.connect(refresh)

    def _disconnect(*_: Any) -> None:
        events.inserted.disconnect(inserted)
        events.removed.disconnect(removed)
        events.reordered.disconnect(refresh)
        for layer in viewer.layers:
            layer.events.name.disconnect(refresh)

    combo.destroyed.connect(_disconnect)


class LayerComboBox(QComboBox):
    """Choose a layer of ``layer_type``; follows layers being added, removed, moved and renamed.

    The selection is kept by layer identity, so renaming or reordering layers
    never switches the chosen layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are listed.
    layer_type : type
        The napari layer class to list (e.g. ``napari.layers.Image``).
    exclude_plugin_layers : bool
        Hide layers this plugin made (marked in ``layer.metadata``).
    parent : QWidget, optional
        The parent widget.
    """

    #: Emitted with the chosen layer (or None) whenever the choice changes.
    layer_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        layer_type: type,
        exclude_plugin_layers: bool = True,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = unwrap(viewer)
        self._type = layer_type
        self._exclude = exclude_plugin_layers
        self._layers: list[Any] = []
        self._current: Any = None
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.currentIndexChanged.connect(self._on_index_changed)
        follow_layer_list(self, self._viewer, self._on_inserted, self._on_removed, self.refresh)
        self.refresh()

    def _wanted(self, layer: Any) -> bool:
        if not isinstance(layer, self._type):
            return False
        return not (self._exclude and METADATA_KEY in getattr(layer, "metadata", {}))

    def _on_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()
        if self._current is None and self._wanted(event.value):
            self.set_layer(event.value)

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self.refresh)
        self.refresh()

    def refresh(self, *_: Any) -> None:
        """Rebuild the list from the viewer, keeping the chosen layer if it still exists."""
        layers = [layer for layer in reversed(self._viewer.layers) if self._wanted(layer)]
        current = self._current
        self.blockSignals(True)
        try:
            self.clear()
            self._layers = layers
            for layer in layers:
                self.addItem(layer.name)
            index = next((i for i, lyr in enumerate(layers) if lyr is current), 0 if layers else -1)
            self.setCurrentIndex(index)
        finally:
            self.blockSignals(False)
        self._set_current(layers[index] if index >= 0 else None)

    def _on_index_changed(self, index: int) -> None:
        self._set_current(self._layers[index] if 0 <= index < len(self._layers) else None)

    def _set_current(self, layer: Any) -> None:
        if layer is not self._current:
            self._current = layer
            self.layer_changed.emit(layer)

    def layer(self) -> Any:
        """The chosen layer, or None."""
        return self._current

    def set_layer(self, layer: Any) -> None:
        """Choose ``layer`` (ignored if it is not listed)."""
        layer = unwrap(layer)
        for i, lyr in enumerate(self._layers):
            if lyr is layer:
                self.setCurrentIndex(i)
                return
