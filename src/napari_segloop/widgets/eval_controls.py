"""Controls that the Threshold and Confusion docks share, bound to the one evaluation state.

Each control writes one field of
:class:`~napari_segloop.widgets.eval_state.EvaluationState` and follows that
field's event, so the same control in the other dock shows the same value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QWidget,
)

from napari_segloop.widgets.eval_engine import EvaluationEngine
from napari_segloop.widgets.eval_state import REGION_ALL, REGION_VIEW, SHOW_CHOICES
from napari_segloop.widgets.layer_io import layer_array
from napari_segloop.widgets.pickers import LayerChoice, is_labels, is_shapes, is_truth_candidate
from napari_segloop.widgets.session import unwrap

NO_TRUTH = "none"

#: Entries of the objects choice: (label, object_dims).
OBJECT_CHOICES: tuple[tuple[str, int], ...] = (
    ("3-D (connected across z)", 3),
    ("2-D (per slice or frame)", 2),
)


def bind_layer_choice(combo: LayerChoice, state: Any, field: str, write: Callable[[Any], None],
                      special_none: str | None = None) -> None:
    """Keep ``combo`` and ``state.<field>`` in step (the combo writes through ``write``)."""

    def from_combo(value: Any) -> None:
        layer = None if isinstance(value, str) else value
        if isinstance(value, str) and special_none is None:
            layer = value  # a special key is the value itself (region)
        if getattr(state, field) is not layer:
            write(layer)

    def from_state(value: Any) -> None:
        shown = combo.value()
        target = value if value is not None else special_none
        if target is None:
            return
        if shown is not target and not (isinstance(shown, str) and shown == target):
            combo.follow(target)

    combo.value_changed.connect(from_combo)
    getattr(state.events, field).connect(from_state)
    combo.destroyed.connect(lambda *_: _disconnect(getattr(state.events, field), from_state))
    current = getattr(state, field)
    if current is not None and current != REGION_ALL:
        combo.follow(current)
    elif combo.value() is not None and not (isinstance(combo.value(), str) and special_none is not None):
        from_combo(combo.value())


def _disconnect(signal: Any, slot: Callable[..., Any]) -> None:
    try:
        signal.disconnect(slot)
    except (ValueError, RuntimeError):
        pass


def truth_rank(engine: EvaluationEngine) -> Callable[[Any], int]:
    """Ground-truth preference: Labels layers of the prediction's shape (never a mismatched one)."""

    def rank(layer: Any) -> int:
        inp = engine.inputs
        if inp is None or not is_labels(layer):
            return 0
        try:
            shape = tuple(layer_array(layer).shape)
        except (AttributeError, TypeError):
            return 0
        return 1 if shape == tuple(inp.shape) else 0

    return rank


class StateChoice(QComboBox):
    """A combo box bound to one field of the evaluation state (entries: ``(label, value)``)."""

    def __init__(self, engine: EvaluationEngine, field: str, entries: Sequence[tuple[str, Any]],
                 tooltip: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._state = engine.state
        self._field = field
        for label, value in entries:
            self.addItem(label, value)
        self.setToolTip(tooltip)
        self._show(getattr(self._state, field))
        self.currentIndexChanged.connect(self._on_index)
        signal = getattr(self._state.events, field)
        signal.connect(self._show)
        self.destroyed.connect(lambda *_: _disconnect(signal, self._show))

    def _on_index(self, index: int) -> None:
        value = self.itemData(index)
        if value is not None and value != getattr(self._state, self._field):
            setattr(self._state, self._field, value)

    def _show(self, value: Any) -> None:
        index = self.findData(value)
        if index >= 0 and index != self.currentIndex():
            self.blockSignals(True)
            self.setCurrentIndex(index)
            self.blockSignals(False)


def objects_choice(engine: EvaluationEngine, parent: QWidget | None = None) -> StateChoice:
    """2-D or 3-D objects (``state.object_dims``); the docks show it only for stacks."""
    return StateChoice(engine, "object_dims", OBJECT_CHOICES,
                       "How objects are counted in stacks: connected across z (a z-stack: each nucleus "
                       "is one 3-D object) or in each slice on its own (a time-lapse, or separate "
                       "sections). Also used by minimum size and instances.", parent)


def show_choice(engine: EvaluationEngine, parent: QWidget | None = None) -> StateChoice:
    """Which overlay the viewer shows (``state.show``)."""
    return StateChoice(engine, "show", [(label, key) for key, label in SHOW_CHOICES],
                       "One overlay at a time, so the colours you see are those of the legend: the "
                       "mask, the errors against the ground truth, or the probability map.", parent)


class GroundTruthBox(QGroupBox):
    """Ground truth, region and "Use anyway" for a ground truth that is not a Labels layer."""

    def __init__(self, viewer: Any, engine: EvaluationEngine, parent: QWidget | None = None) -> None:
        super().__init__("Compare with ground truth", parent)
        self._engine = engine
        state = engine.state
        form = QFormLayout(self)
        form.setContentsMargins(6, 6, 6, 6)
        self.truth_combo = LayerChoice(viewer, is_truth_candidate, specials=[("(none)", NO_TRUTH)],
                                       prefer=truth_rank(engine), parent=self)
        self.truth_combo.setToolTip("A Labels layer with the true objects (mask or instance ids) of the "
                                    "prediction's shape; other layers are listed but never chosen for you.")
        self.use_anyway = QPushButton("Use anyway")
        self.use_anyway.setToolTip("Score against this image layer although it is not a Labels layer.")
        self.use_anyway.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.truth_combo, 1)
        row.addWidget(self.use_anyway)
        form.addRow("Ground truth", row)
        self.region_combo = LayerChoice(
            viewer, is_shapes, specials=[("whole image", REGION_ALL), ("field of view", REGION_VIEW)],
            parent=self)
        self.region_combo.setToolTip("Evaluate only inside the shapes of a Shapes layer, or the part of "
                                     "the image shown in the canvas (for partial ground truth).")
        form.addRow("Region", self.region_combo)
        self.show_combo = show_choice(engine, self)
        form.addRow("Show", self.show_combo)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setVisible(False)
        form.addRow(self.warning)
        bind_layer_choice(self.truth_combo, state, "truth", state.set_truth, special_none=NO_TRUTH)
        bind_layer_choice(self.region_combo, state, "region", self._write_region)
        self.use_anyway.clicked.connect(state.confirm_truth)
        engine.changed.connect(self.refresh)
        self.destroyed.connect(lambda *_: _disconnect(engine.changed, self.refresh))
        self.refresh()

    def _write_region(self, value: Any) -> None:
        self._engine.state.region = REGION_ALL if value is None else unwrap(value)

    def refresh(self) -> None:
        """Follow the engine: choose a matching ground truth once there is a prediction, show warnings."""
        engine = self._engine
        if engine.state.truth is None:
            self.truth_combo.choose_default()
        truth = engine.state.truth
        needs_ok = truth is not None and not is_labels(truth) and not engine.state.truth_confirmed
        self.use_anyway.setVisible(bool(needs_ok))
        problem = engine.inputs.problem if engine.inputs is not None else None
        self.warning.setText(problem or "")
        self.warning.setVisible(bool(problem))
