"""The Confusion dock: TP / FP / FN overlay of the mask on screen against ground truth, and its metrics.

The dock is a view of the viewer's evaluation state
(:mod:`napari_segloop.widgets.eval_state`), the same one the Threshold dock
views: what it scores is the mask the user sees (the threshold and
post-processing set in the Threshold dock, or the model's defaults), or a
Labels layer chosen as the prediction (e.g. a hand-corrected mask). The
evaluation engine (:mod:`napari_segloop.widgets.eval_engine`) writes
``<image> confusion`` (codes 0 TN, 1 TP, 2 FP, 3 FN in fixed
colour-blind-safe colours) and computes the metrics in a worker: pixel
metrics come with the overlay, object metrics may follow ("updating").
While the threshold moves, the overlay is drawn by preview layers and the
pixel metrics come from the raw threshold curves in O(1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_segloop.core.errors import SegloopError
from napari_segloop.core.evaluation import (
    CONFUSION_NAMES,
    FN,
    FP,
    TN,
    TP,
    StackEvaluation,
    metrics_csv_text,
    write_metrics_csv,
)
from napari_segloop.widgets import outputs, previews
from napari_segloop.widgets.colors import CONFUSION_HEX
from napari_segloop.widgets.eval_controls import GroundTruthBox, bind_layer_choice, objects_choice
from napari_segloop.widgets.eval_engine import EvaluationEngine, engine_for, export_rows
from napari_segloop.widgets.evaluation import connect_for_lifetime, format_value, notify_once
from napari_segloop.widgets.metrics_table import MetricsTable
from napari_segloop.widgets.pickers import (
    LayerChoice,
    is_prediction_candidate,
    is_probability_layer,
    prediction_rank,
)
from napari_segloop.widgets.session import session_for, unwrap


class Legend(QWidget):
    """Colour swatches of the confusion codes."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        grid = QGridLayout(self)
        grid.setContentsMargins(0, 0, 0, 0)
        self.entries: dict[int, str] = {}
        for col, code in enumerate((TP, FP, FN, TN)):
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            if code == TN:
                swatch.setStyleSheet("border: 1px solid gray;")
                text = "TN: true negative (transparent)"
            else:
                swatch.setStyleSheet(f"background-color: {CONFUSION_HEX[code][:7]}; border: 1px solid gray;")
                text = f"{['TN', 'TP', 'FP', 'FN'][code]}: {CONFUSION_NAMES[code]}"
            label = QLabel(text)
            self.entries[code] = text
            grid.addWidget(swatch, col // 2, (col % 2) * 2)
            grid.addWidget(label, col // 2, (col % 2) * 2 + 1)
        grid.setColumnStretch(1, 1)
        grid.setColumnStretch(3, 1)

    def text(self) -> str:
        """All entries, for tests and screen readers."""
        return "; ".join(self.entries.values())


class ConfusionDock(QWidget):
    """Compare the mask on screen with ground truth: TP / FP / FN overlay and a metrics table.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it when the dock is opened).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self.engine: EvaluationEngine = engine_for(self.session)
        self.state = self.engine.state
        self.curves = self.engine.curves
        self._reported: set[str] = set()
        self._alive = True
        self._build()
        self._connect()
        self.engine.attach(self)
        if self.state.truth is not None and self.state.show == "mask":
            self.state.show = "errors"
        self._render()

    # -- layout --------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.pred_combo = LayerChoice(self.viewer, is_prediction_candidate, prefer=prediction_rank,
                                      parent=self, only_preferred=True)
        self.pred_combo.setToolTip("A probability map (scored as the mask you see: the Threshold dock's "
                                   "threshold and post-processing) or a mask / instance-labels layer.")
        form.addRow("Prediction", self.pred_combo)
        self.scored_label = QLabel("n/a")
        self.scored_label.setWordWrap(True)
        self.scored_label.setToolTip("What is scored; change the threshold and post-processing in the "
                                     "Threshold dock.")
        form.addRow("Scored", self.scored_label)
        self.threshold_label = self.scored_label
        self.objects_combo = objects_choice(self.engine, self)
        self.objects_label = QLabel("Objects")
        form.addRow(self.objects_label, self.objects_combo)
        layout.addLayout(form)
        self.truth_box = GroundTruthBox(self.viewer, self.engine, self)
        self.truth_combo = self.truth_box.truth_combo
        self.region_combo = self.truth_box.region_combo
        layout.addWidget(self.truth_box)
        self.legend = Legend(self)
        layout.addWidget(self.legend)
        self.table = MetricsTable(self)
        layout.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the metrics to the clipboard (CSV).")
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Save the metrics as a CSV file (every scored slice and the "
                                      "whole stack).")
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.export_button)
        layout.addLayout(buttons)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

    def _connect(self) -> None:
        state = self.state
        bind_layer_choice(self.pred_combo, state, "probability", self._write_prediction)
        self.copy_button.clicked.connect(self.copy_metrics)
        self.export_button.clicked.connect(self._export_clicked)
        pairs = [
            (self.engine.changed, self._render),
            (self.engine.ticked, self._on_tick),
            (state.events.labels, self._follow_labels),
            (state.events.truth, self._on_truth),
        ]
        dock = self

        def _destroyed() -> None:
            dock._alive = False

        connect_for_lifetime(self, pairs, _destroyed)
        if state.labels is not None:
            self.pred_combo.follow(state.labels)

    def _write_prediction(self, layer: Any) -> None:
        """A probability layer scores its mask; a Labels layer is scored as it is."""
        state = self.state
        if layer is None:
            state.labels = None
        elif is_probability_layer(layer):
            state.labels = None
            state.probability = unwrap(layer)
        else:
            state.labels = unwrap(layer)

    def _on_truth(self, layer: Any) -> None:
        """A ground truth chosen while this dock is open: show the errors against it."""
        if self._alive and layer is not None and self.state.show == "mask":
            self.state.show = "errors"

    def _follow_labels(self, layer: Any) -> None:
        if not self._alive:
            return
        self.pred_combo.follow(layer if layer is not None else self.state.probability)

    # -- public state ----------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The threshold applied to a probability prediction (None for a Labels prediction)."""
        inp = self.engine.inputs
        if inp is None or inp.kind != "probability":
            return None
        return float(self.state.threshold)

    @property
    def busy(self) -> bool:
        """True while the overlay, previews or curves are being computed."""
        return self.engine.busy

    @property
    def result(self) -> Any:
        """The current evaluation with objects (None until it is computed)."""
        return self.engine.objects.evaluation if self.engine.objects_current else None

    def confusion_layer(self) -> Any:
        """The ``<image> confusion`` Labels layer, or None."""
        inp = self.engine.inputs
        return None if inp is None else outputs.find_output(self.viewer, outputs.CONFUSION_ROLE, inp.base)

    def preview_layers(self) -> tuple[Any, Any]:
        """The two confusion preview layers (true objects, true background), or None each."""
        inp = self.engine.inputs
        if inp is None:
            return None, None
        return (outputs.find_output(self.viewer, previews.TRUTH_PREVIEW_ROLE, inp.base),
                outputs.find_output(self.viewer, previews.BACKGROUND_PREVIEW_ROLE, inp.base))

    def update_inputs(self) -> None:
        """Read the chosen layers and region again."""
        self.engine.read_inputs()

    def refresh(self) -> None:
        """Compute the overlay and metrics now."""
        self.engine.settle()

    # -- rendering -----------------------------------------------------------------
    def _report(self, message: str, level: str = "error") -> None:
        notify_once(self.status, self._reported, message, level)

    def _scored_text(self) -> str:
        engine, state = self.engine, self.state
        inp = engine.inputs
        if inp is None:
            return "n/a"
        if inp.kind == "labels":
            return f"the Labels layer {inp.prediction.name!r} as it is"
        pp = state.effective_postprocess()
        parts = [f"threshold {state.threshold:.6g}"]
        parts += ["raw (no post-processing)"] if pp is None else pp.steps()
        return f"'{inp.base} mask': " + ", ".join(parts)

    def _set_columns(self) -> None:
        inp = self.engine.inputs
        stack = inp is not None and inp.is_stack
        if stack and inp.planes is not None:
            names = ["current slice", f"{len(inp.planes)} predicted slices"]
        elif stack:
            names = ["current slice", "whole stack"]
        else:
            names = ["image"]
        if self.table.columns() != names:
            self.table.set_columns(names)

    def _on_tick(self, value: float) -> None:
        if self._alive:
            text = self._scored_text()
            if text != self.scored_label.text():
                self.scored_label.setText(text)
            self._show_metrics()

    def _render(self) -> None:
        if not self._alive:
            return
        engine = self.engine
        inp = engine.inputs
        self.scored_label.setText(self._scored_text())
        stack = inp is not None and inp.is_stack
        self.objects_combo.setVisible(stack)
        self.objects_label.setVisible(stack)
        self._set_columns()
        if inp is None:
            self.table.clear_values()
            self.status.setText("Choose a prediction: a probability map or a mask.")
            return
        if inp.truth is None:
            self.table.clear_values()
            self.status.setText(inp.problem or "Choose a ground-truth layer to compare with.")
            return
        self._show_metrics()
        notes = []
        if engine.planes_text():
            notes.append(engine.planes_text())
        if engine.failure:
            notes.append(engine.failure)
        if inp.large and not engine.score_current:
            notes.insert(0, f"Scoring block by block…{engine.progress_text()}")
        full = engine.objects.evaluation if engine.objects_current else None
        pix = engine.score.evaluation if engine.score_current else None
        shown = full or pix
        if shown is not None:
            whole = shown.whole if isinstance(shown, StackEvaluation) else shown
            text = f"Dice {format_value(whole.pixel.dice, 3)}"
            if full is not None and whole.objects is not None:
                o = whole.objects
                kind = "3-D " if inp.is_stack and self.state.object_dims == 3 else ""
                text += f", {o.n_matched} of {o.n_true} true {kind}objects matched, {o.spurious} spurious"
            elif full is None:
                text += ", objects updating…"
            notes.insert(0, f"{text} ({inp.region.label}).")
        self.status.setText(" ".join(notes))

    def _show_metrics(self) -> None:
        """Fill the table: the current score if there is one, else live pixel metrics from the curves."""
        engine = self.engine
        inp = engine.inputs
        if inp is None or inp.truth is None:
            return
        stack = inp.is_stack
        plane = engine.current_plane()
        predicted = engine.plane_predicted(plane)
        n_cols = 2 if stack else 1
        result = engine.objects if engine.objects_current else engine.score if engine.score_current else None
        objects_ready = engine.objects_current
        if result is not None:
            ev = result.evaluation
            if isinstance(ev, StackEvaluation):
                planes = list(getattr(ev, "planes", range(len(ev.slices))))
                slice_ev = ev.slices[planes.index(plane)] if plane in planes else None
                scopes = [slice_ev, ev.whole]
            else:
                scopes = [ev]
            for column, e in enumerate(scopes):
                if e is None:
                    self.table.set_pixel(column, None)
                    self.table.set_objects(column, None)
                    continue
                self.table.set_pixel(column, e.pixel)
                if objects_ready:
                    self.table.set_objects(column, e.objects)
                else:
                    self.table.set_objects(column, None, pending=True)
            if stack and not predicted:
                self.table.set_pixel(0, None)
                self.table.set_objects(0, None)
            return
        if inp.kind != "probability":
            for column in range(n_cols):
                self.table.set_pixel(column, None, pending=True)
                self.table.set_objects(column, None, pending=True)
            return
        scopes_live = ["slice", "whole"] if stack else ["whole"]
        for column, scope in enumerate(scopes_live):
            if scope == "slice" and not predicted:
                self.table.set_pixel(column, None)
                self.table.set_objects(column, None)
                continue
            self.table.set_pixel(column, engine.live_pixels(scope))
            self.table.set_objects(column, None, pending=True)

    # -- export ------------------------------------------------------------------------
    def metrics_rows(self) -> list[dict[str, Any]]:
        """Rows for CSV: every slice and the whole stack (or the image), with the inputs named."""
        return export_rows(self.engine)

    def copy_metrics(self) -> bool:
        """Copy the metrics to the clipboard as CSV text; False (with a notice) if there are none."""
        from napari.utils.notifications import show_error

        rows = self.metrics_rows()
        if not rows:
            show_error("No metrics yet: choose a prediction and a ground truth of the same shape.")
            return False
        QApplication.clipboard().setText(metrics_csv_text(rows))
        self.status.setText("Metrics copied to the clipboard.")
        return True

    def protected_inputs(self) -> list[tuple[Path, str]]:
        """Files the export must never replace: every layer opened from a file, and the model."""
        found: list[tuple[Path, str]] = []
        for layer in self.viewer.layers:
            path = getattr(getattr(layer, "source", None), "path", None)
            if path:
                found.append((Path(path), f"the layer {layer.name!r}"))
        bundle = self.session.bundle
        source = None if bundle is None else str(getattr(bundle, "source", "") or "")
        if source and source not in ("new", "default") and Path(source).exists():
            found.append((Path(source), "the model"))
        return found

    def export_csv(self, path: str | Path) -> Path | None:
        """Write the metrics to a CSV file; None (with a notification) if it failed.

        Refused (with a notification, nothing written): a file of an open
        layer or of the model, an image or model suffix, a missing or
        read-only folder (see :mod:`napari_segloop.core.io.guard`).
        """
        from napari.utils.notifications import show_error, show_info

        rows = self.metrics_rows()
        if not rows:
            show_error("No metrics yet: choose a prediction and a ground truth of the same shape.")
            return None
        try:
            out = write_metrics_csv(path, rows, protect=self.protected_inputs())
        except SegloopError as exc:
            show_error(str(exc))
            return None
        show_info(f"Metrics saved to {out}.")
        self.status.setText(f"Metrics saved to {out}.")
        return out

    def _export_clicked(self) -> None:
        inp = self.engine.inputs
        name = "metrics.csv" if inp is None else f"{inp.base}_metrics.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", str(Path.home() / name), "CSV (*.csv)")
        if path:
            self.export_csv(path)
