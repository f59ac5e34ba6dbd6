"""The one layer picker of the plugin: a combo box of layers (and fixed choices) that follows the layer list.

Every dock uses :class:`LayerChoice` with a filter (``accept``) and an
optional preference (``prefer``): the Predict dock's image, the Threshold
dock's probability map, the Confusion dock's prediction, ground truth and
region. magicgui's layer combo boxes rebuild their choices on layer events
too, but cannot keep a choice by identity across renames, prefer one layer
over another automatically, or mix fixed entries ("field of view") with
layers, which the evaluation docks need; so this one class stays, and the
second hand-written picker is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QWidget

from napari_segloop.widgets.outputs import PROBABILITY_ROLE, role_of
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


class LayerChoice(QComboBox):
    """Choose one of a few fixed entries or a layer accepted by ``accept``; follows the layer list.

    The choice is kept by identity when layers are added, moved or renamed.
    Until the user picks an entry, a newly added layer for which ``prefer``
    is true is chosen automatically (e.g. the ground truth opened with the
    sample), and the choice falls back to the first preferred layer when the
    chosen one is removed.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are listed.
    accept : callable
        ``accept(layer) -> bool``: list this layer.
    specials : sequence of (str, str)
        Fixed entries ``(label, key)`` listed first; :meth:`value` returns the key.
    prefer : callable, optional
        ``prefer(layer) -> int`` (or bool): choose the layer ranked highest
        automatically (0: never). By default the first entry (special or
        layer) is the default choice.
    parent : QWidget, optional
    only_preferred : bool
        Never choose a layer that ``prefer`` ranks 0 automatically (the
        choice stays empty until the user picks one).
    """

    #: Emitted with the new value (a layer, a special key, or None) when the choice changes.
    value_changed = Signal(object)

    def __init__(
        self,
        viewer: Any,
        accept: Callable[[Any], bool],
        specials: Sequence[tuple[str, str]] = (),
        prefer: Callable[[Any], bool] | None = None,
        parent: QWidget | None = None,
        only_preferred: bool = False,
    ) -> None:
        super().__init__(parent)
        self._viewer = unwrap(viewer)
        self._accept = accept
        self._specials = list(specials)
        self._prefer = prefer
        self._only_preferred = only_preferred
        self._items: list[Any] = []
        self._value: Any = None
        self._user_chose = False
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.currentIndexChanged.connect(self._on_index_changed)
        self.activated.connect(self._on_activated)
        follow_layer_list(self, self._viewer, self._on_inserted, self._on_removed, self.refresh)
        self.refresh()
        self._set_value(self._default())

    # -- the list --------------------------------------------------------------
    def _layers(self) -> list[Any]:
        return [layer for layer in reversed(self._viewer.layers) if self._accept(layer)]

    def _default(self) -> Any:
        layers = self._layers()
        if self._prefer is not None:
            ranked = [(self._rank(layer), -i, layer) for i, layer in enumerate(layers)]
            best = max(ranked, key=lambda r: r[:2], default=None)
            if best is not None and best[0] > 0:
                return best[2]
        if self._specials:
            return self._specials[0][1]
        if self._only_preferred:
            return None
        return layers[0] if layers else None

    def refresh(self, *_: Any) -> None:
        """Rebuild the entries, keeping the current choice if it is still listed."""
        items: list[Any] = [key for _, key in self._specials] + self._layers()
        labels = [label for label, _ in self._specials] + [
            str(item.name) for item in items[len(self._specials):]
        ]
        value = self._value
        self.blockSignals(True)
        try:
            self.clear()
            self._items = items
            self.addItems(labels)
            index = self._index_of(value)
            self.setCurrentIndex(index)
        finally:
            self.blockSignals(False)
        if index < 0:
            self._set_value(self._default())

    def _index_of(self, value: Any) -> int:
        return next((i for i, item in enumerate(self._items) if _same(item, value)), -1)

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        layer.events.name.connect(self.refresh)
        self.refresh()
        if self._user_chose or not self._accept(layer):
            return
        current = self._value if self._is_layer(self._value) else None
        rank = self._rank(layer)
        if rank > self._rank(current) or (self._value is None and (rank > 0 or not self._only_preferred)):
            self.set_value(layer, user=False)

    def _on_removed(self, event: Any) -> None:
        event.value.events.name.disconnect(self.refresh)
        if event.value is self._value:
            self._user_chose = False
        self.refresh()

    def _rank(self, layer: Any) -> int:
        """How much ``layer`` is preferred (0: not at all; also for None)."""
        if layer is None or self._prefer is None:
            return 0
        return int(self._prefer(layer))

    def _is_layer(self, value: Any) -> bool:
        return value is not None and not isinstance(value, str)

    # -- the choice -------------------------------------------------------------
    def _on_activated(self, *_: Any) -> None:
        self._user_chose = True

    def _on_index_changed(self, index: int) -> None:
        self._set_value(self._items[index] if 0 <= index < len(self._items) else None)

    def _set_value(self, value: Any) -> None:
        index = self._index_of(value)
        if index >= 0 and self.currentIndex() != index:
            self.blockSignals(True)
            self.setCurrentIndex(index)
            self.blockSignals(False)
        if not _same(value, self._value):
            self._value = value
            self.value_changed.emit(value)

    def value(self) -> Any:
        """The chosen layer, special key, or None."""
        return self._value

    def layer(self) -> Any:
        """The chosen layer, or None (also when a special entry is chosen)."""
        return self._value if self._is_layer(self._value) else None

    def set_value(self, value: Any, user: bool = True) -> bool:
        """Choose a layer or special key; False if it is not listed."""
        value = unwrap(value)
        if self._index_of(value) < 0:
            return False
        self._user_chose = self._user_chose or user
        self._set_value(value)
        return True

    def set_layer(self, layer: Any) -> bool:
        """Choose ``layer`` as the user would; False if it is not listed."""
        return self.set_value(layer)

    def choose_default(self) -> None:
        """Choose the preferred entry again, unless the user picked one (``prefer`` may have changed)."""
        if not self._user_chose:
            self._set_value(self._default())

    def follow(self, value: Any) -> None:
        """Show ``value`` (set elsewhere, e.g. by another dock) without counting it as this picker's choice.

        A value that is not listed (None, or a removed layer) falls back to the default entry
        without emitting :attr:`value_changed` for it.
        """
        value = None if value is None else unwrap(value)
        if self._index_of(value) >= 0:
            self._user_chose = self._user_chose or value is not None
            self.blockSignals(True)
            try:
                self._set_value(value)
            finally:
                self.blockSignals(False)
            self._value = value


def _same(a: Any, b: Any) -> bool:
    """Same layer (by identity) or same special key."""
    return a is b or (isinstance(a, str) and isinstance(b, str) and a == b)


# ---------------------------------------------------------------------- filters


def is_probability_layer(layer: Any) -> bool:
    """A floating-point, single-channel Image layer that is not one of the plugin's previews."""
    from napari.layers import Image

    if not isinstance(layer, Image) or getattr(layer, "rgb", False):
        return False
    role = role_of(layer)
    if role is not None and role != PROBABILITY_ROLE:
        return False
    data = layer.data[0] if layer.multiscale else layer.data
    return np.dtype(data.dtype).kind == "f"


def is_plugin_probability(layer: Any) -> bool:
    """A ``<image> probability`` layer made by the Predict dock."""
    return role_of(layer) == PROBABILITY_ROLE


def probability_rank(layer: Any) -> int:
    """How likely a layer is a probability map, to choose one automatically.

    2 for the Predict dock's probability layers, 1 for other floating-point
    images whose value range (as napari measured it when the layer was added)
    lies in [0, 1], else 0 (still listed, never chosen automatically).
    """
    if is_plugin_probability(layer):
        return 2
    if not is_probability_layer(layer):
        return 0
    lo, hi = layer.contrast_limits_range
    return 1 if lo >= -1e-6 and hi <= 1 + 1e-6 else 0


def prediction_rank(layer: Any) -> int:
    """Preference of the Confusion dock's prediction: probability maps, then this plugin's masks."""
    rank = probability_rank(layer)
    if rank:
        return rank + 1
    return 1 if role_of(layer) == "mask" else 0


def is_truth_candidate(layer: Any) -> bool:
    """A user's Labels layer, or a user's (non-RGB) Image layer such as a mask opened as an image."""
    from napari.layers import Image, Labels

    if role_of(layer) is not None:
        return False
    if isinstance(layer, Labels):
        return True
    return isinstance(layer, Image) and not getattr(layer, "rgb", False)


def is_labels(layer: Any) -> bool:
    """A Labels layer."""
    from napari.layers import Labels

    return isinstance(layer, Labels)


def is_prediction_candidate(layer: Any) -> bool:
    """A probability map, or a Labels layer (a mask or instance labels) that is not a confusion image."""
    from napari.layers import Labels

    if isinstance(layer, Labels):
        return role_of(layer) in (None, "mask")
    return is_probability_layer(layer)


def is_user_image(layer: Any) -> bool:
    """An Image layer of the user's (not one the plugin made): what the Predict dock predicts."""
    from napari.layers import Image

    return isinstance(layer, Image) and METADATA_KEY not in getattr(layer, "metadata", {})


def is_shapes(layer: Any) -> bool:
    """A Shapes layer."""
    from napari.layers import Shapes

    return isinstance(layer, Shapes)
