"""The Confusion dock: TP / FP / FN overlay of a prediction against ground truth, and its metrics.

The prediction is a probability layer (thresholded at the session's current
threshold, which the Threshold dock sets) or a Labels layer (a mask or
instance labels, e.g. ``<image> mask``). For a probability layer every
threshold step is followed at once: the overlay is drawn by two preview
layers whose contrast limits follow the threshold (exact, see
:mod:`napari_segloop.widgets.previews`) and the pixel metrics come from
cached threshold curves in O(1). When the threshold pauses, a worker writes
the ``<image> confusion`` Labels layer (codes 0 TN, 1 TP, 2 FP, 3 FN in fixed
colour-blind-safe colours) and computes the object metrics; results for any
threshold but the newest are dropped.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
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

from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.evaluation import (
    CONFUSION_NAMES,
    FN,
    FP,
    TN,
    TP,
    Evaluation,
    StackEvaluation,
    confusion_image,
    evaluate,
    evaluate_stack,
    metrics_csv_text,
    write_metrics_csv,
)
from napari_segloop.widgets import outputs, previews
from napari_segloop.widgets.colors import CONFUSION_HEX
from napari_segloop.widgets.evaluation import (
    REGION_ALL,
    REGION_VIEW,
    CurveStore,
    LatestRunner,
    RegionChoice,
    camera_events,
    connect_for_lifetime,
    flat_index,
    format_value,
    initial_threshold,
    is_instance_labels,
    notify_once,
    read_region,
    slice_index,
    truth_problem,
)
from napari_segloop.widgets.jobs import JobFailed
from napari_segloop.widgets.layer_io import layer_array
from napari_segloop.widgets.metrics_table import MetricsTable
from napari_segloop.widgets.pickers import (
    LayerChoice,
    is_labels,
    is_prediction_candidate,
    is_probability_layer,
    is_shapes,
    is_truth_candidate,
    prediction_rank,
)
from napari_segloop.widgets.session import session_for, unwrap

PAUSE_MS = 200
EDIT_PAUSE_MS = 300
NO_TRUTH = "none"


@dataclass(frozen=True)
class ConfusionResult:
    """The confusion codes and metrics of one prediction, for one threshold."""

    threshold: float | None
    codes: np.ndarray
    evaluation: Evaluation | StackEvaluation


def confusion_job(pred: np.ndarray, truth: np.ndarray, threshold: float | None, region: np.ndarray | None,
                  stack: bool) -> Generator[None, None, ConfusionResult]:
    """Worker job: confusion codes, then pixel and object metrics (per slice and whole stack)."""
    yield None
    codes = confusion_image(pred, truth, threshold, region)
    yield None
    if stack:
        ev: Evaluation | StackEvaluation = evaluate_stack(pred, truth, threshold, region)
    else:
        ev = evaluate(pred, truth, threshold, region)
    return ConfusionResult(threshold, codes, ev)


def preview_job(prob: np.ndarray, truth: np.ndarray, region: np.ndarray | None
                ) -> Generator[None, None, tuple[np.ndarray, np.ndarray]]:
    """Worker job: the two float32 arrays of the confusion preview."""
    yield None
    return previews.confusion_preview_arrays(prob, truth, region)


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
    """Compare a prediction with ground truth: TP / FP / FN overlay and a metrics table.

    Parameters
    ----------
    napari_viewer : napari.viewer.Viewer
        The viewer (napari passes it when the dock is opened).
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self.curves: CurveStore = self.session.shared("curves", CurveStore)
        self._pred: Any = None
        self._truth: Any = None
        self._region = RegionChoice()
        self._kind: str | None = None  # "probability" or "mask"
        self._threshold: float | None = None
        self._index: tuple[int, ...] | None = None
        self._inputs_key: Any = None
        self._whole_curve: Any = None
        self._slice_curve: Any = None
        self._curve_keys: dict[str, Any] = {}
        self._preview_key: Any = None
        self.result: ConfusionResult | None = None
        self._pending_preview_key: Any = None
        self._refresh_key: Any = None
        self._note = ""
        self._reported: set[str] = set()
        self._alive = True
        self.refresh_runner = LatestRunner(confusion_job, self._apply_result, self)
        self.preview_runner = LatestRunner(preview_job, self._apply_previews, self)
        self._pause = QTimer(self)
        self._pause.setSingleShot(True)
        self._pause.setInterval(PAUSE_MS)
        self._pause.timeout.connect(self.refresh)
        self._inputs_timer = QTimer(self)
        self._inputs_timer.setSingleShot(True)
        self._inputs_timer.setInterval(EDIT_PAUSE_MS)
        self._inputs_timer.timeout.connect(self.update_inputs)
        self._build()
        self._connect()
        self.update_inputs()

    # -- layout --------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.pred_combo = LayerChoice(self.viewer, is_prediction_candidate, prefer=prediction_rank,
                                      parent=self, only_preferred=True)
        self.pred_combo.setToolTip("A probability map (thresholded at the Threshold dock's value) or a "
                                   "mask / instance-labels layer such as '<image> mask'.")
        form.addRow("Prediction", self.pred_combo)
        self.truth_combo = LayerChoice(self.viewer, is_truth_candidate, specials=[("(none)", NO_TRUTH)],
                                       prefer=is_labels, parent=self)
        self.truth_combo.setToolTip("The true objects: a mask, or instance ids (foreground where non-zero).")
        form.addRow("Ground truth", self.truth_combo)
        self.region_combo = LayerChoice(
            self.viewer, is_shapes, specials=[("whole image", REGION_ALL), ("field of view", REGION_VIEW)],
            parent=self)
        self.region_combo.setToolTip("Evaluate only inside the shapes of a Shapes layer, or the part of "
                                     "the image shown in the canvas (for partial ground truth).")
        form.addRow("Region", self.region_combo)
        self.threshold_label = QLabel("n/a")
        self.threshold_label.setToolTip("Set it in the Threshold dock.")
        form.addRow("Threshold", self.threshold_label)
        layout.addLayout(form)
        self.legend = Legend(self)
        layout.addWidget(self.legend)
        self.table = MetricsTable(self)
        layout.addWidget(self.table, 1)
        buttons = QHBoxLayout()
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the metrics to the clipboard (CSV).")
        self.export_button = QPushButton("Export CSV…")
        self.export_button.setToolTip("Save the metrics as a CSV file (every slice and the whole stack).")
        buttons.addWidget(self.copy_button)
        buttons.addWidget(self.export_button)
        layout.addLayout(buttons)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)

    def _connect(self) -> None:
        self.pred_combo.value_changed.connect(self._on_choice)
        self.truth_combo.value_changed.connect(self._on_choice)
        self.region_combo.value_changed.connect(self._on_choice)
        self.copy_button.clicked.connect(self.copy_metrics)
        self.export_button.clicked.connect(self._export_clicked)
        camera = camera_events(self.viewer)
        pairs = [
            (self.session.threshold_changed, self._on_session_threshold),
            (self.curves.data_changed, self._on_layer_data),
            (self.curves.exact_ready, self._on_exact_ready),
            (self.viewer.dims.events.current_step, self._on_dims),
            (camera.center, self._on_camera),
            (camera.zoom, self._on_camera),
        ]
        dock = self

        def _on_destroyed() -> None:
            dock._alive = False
            dock.refresh_runner.cancel()
            dock.preview_runner.cancel()

        connect_for_lifetime(self, pairs, _on_destroyed)

    # -- public state ----------------------------------------------------------
    @property
    def threshold(self) -> float | None:
        """The threshold applied to a probability prediction (None for a mask prediction)."""
        return self._threshold

    @property
    def busy(self) -> bool:
        """True while the overlay, previews or curves are being computed."""
        return (self.refresh_runner.busy or self.preview_runner.busy or self._pause.isActive()
                or self._inputs_timer.isActive() or self.curves.building)

    def confusion_layer(self) -> Any:
        """The ``<image> confusion`` Labels layer, or None."""
        return None if self._pred is None else outputs.find_output(
            self.viewer, outputs.CONFUSION_ROLE, outputs.base_name(self._pred))

    def preview_layers(self) -> tuple[Any, Any]:
        """The two confusion preview layers (true objects, true background), or None each."""
        if self._pred is None:
            return None, None
        base = outputs.base_name(self._pred)
        return (outputs.find_output(self.viewer, previews.TRUTH_PREVIEW_ROLE, base),
                outputs.find_output(self.viewer, previews.BACKGROUND_PREVIEW_ROLE, base))

    def _is_stack(self) -> bool:
        return self._pred is not None and layer_array(self._pred).ndim > 2

    # -- inputs ------------------------------------------------------------------
    def _report(self, message: str, level: str = "error") -> None:
        """Status line, and one notification per distinct message (not one per slider step)."""
        notify_once(self.status, self._reported, message, level)

    def _on_choice(self, *_: Any) -> None:
        from napari.utils.notifications import show_info

        layers = list(self.viewer.layers)
        for old, what in ((self._pred, "prediction"), (self._truth, "ground-truth")):
            if old is not None and not any(lyr is old for lyr in layers):
                show_info(f"The {what} layer {old.name!r} was removed; choose another one.")
        self.update_inputs()

    def _clear(self, message: str) -> None:
        self.refresh_runner.cancel()
        self.preview_runner.cancel()
        self._inputs_key = None
        self._whole_curve = self._slice_curve = None
        self._curve_keys = {}
        self.result = None
        self._set_columns()
        self.table.clear_values()
        for layer in self.preview_layers():
            outputs.set_visible(layer, False)
        self.status.setText(message)

    def _set_columns(self) -> None:
        names = ["current slice", "whole stack"] if self._is_stack() else ["image"]
        if self.table.columns() != names:
            self.table.set_columns(names)

    def update_inputs(self) -> None:
        """Read the chosen layers and region; rebuild curves, previews and the overlay."""
        self._inputs_timer.stop()
        old_pred = self._pred
        pred, truth = self.pred_combo.layer(), self.truth_combo.layer()
        if old_pred is not None and old_pred is not pred:
            for layer in self.preview_layers():
                outputs.remove_output(self.viewer, layer)
        self._pred, self._truth = pred, truth
        self._kind = None
        self._threshold = None
        if pred is None:
            self.threshold_label.setText("n/a")
            self._clear("Choose a prediction: a probability map or a mask.")
            return
        self._kind = "probability" if is_probability_layer(pred) else "mask"
        if self._kind == "probability":
            self._threshold = initial_threshold(self.session, pred)
            if self.session.threshold(pred) is None:
                self.session.set_threshold(pred, self._threshold)
        self._show_threshold()
        if truth is None:
            self._clear("Choose a ground-truth layer to compare with.")
            return
        shape = tuple(layer_array(pred).shape)
        problem = truth_problem(truth, shape)
        if problem is None and truth is pred:
            problem = "The prediction and the ground truth are the same layer; choose the true objects."
        region = None
        if problem is None:
            try:
                region = read_region(self.viewer, self.region_combo.value(), pred, shape,
                                     self._region_version())
            except InputError as exc:
                problem = str(exc)
        if problem is not None or region is None:
            self._clear("")
            self._report(problem or "No region.")
            return
        self._region = region
        self.status.setText("")
        self._note = ""
        if is_instance_labels(truth):  # a note, not an error: no notification
            self._note = (f"The ground truth {truth.name!r} holds instance ids: pixels are foreground "
                          "where the id is non-zero; its objects are the ids.")
            self.status.setText(self._note)
        key = (id(pred), self.curves.version(pred), id(truth), self.curves.version(truth), region.key)
        self._set_columns()
        if key != self._inputs_key:
            self._inputs_key = key
            self.result = None
            self._whole_curve = self._slice_curve = None
            self._curve_keys = {}
            self.table.clear_values()
        self._index = slice_index(pred, self.viewer) if self._is_stack() else None
        if self._kind == "probability":
            self._request_curves()
            self._request_previews()
        else:
            for layer in self.preview_layers():
                outputs.remove_output(self.viewer, layer)
        self.refresh()

    def _region_version(self) -> int:
        layer = self.region_combo.layer()
        return 0 if layer is None else self.curves.version(layer)

    def _on_layer_data(self, layer: Any) -> None:
        if not self._alive:
            return
        if layer is self._pred and self._kind == "mask":
            self.result = None
            self.refresh_runner.cancel()
            self._show_metrics()
            self._pause.start()  # the mask layer was rewritten: redo the overlay after a pause
        elif layer is self._pred or layer is self._truth or layer is self.region_combo.layer():
            self._inputs_timer.start()

    def _on_camera(self, *_: Any) -> None:
        if self._alive and self.region_combo.value() == REGION_VIEW:
            self._inputs_timer.start()

    def _on_dims(self, *_: Any) -> None:
        if not self._alive or not self._is_stack() or self._inputs_key is None:
            return
        index = slice_index(self._pred, self.viewer)
        if index == self._index:
            return
        self._index = index
        if self._kind == "probability":
            self._slice_curve = None
            self._request_curves()
        self._show_metrics()

    # -- curves and previews (probability predictions) ------------------------------
    def _request_curves(self) -> None:
        scopes: list[tuple[str, Any]] = [("whole", None)]
        if self._is_stack():
            scopes.append(("slice", self._index))
        for scope, index in scopes:
            key = self.curves.key(self._pred, self._truth, self._region.key, index)
            self._curve_keys[scope] = key
            value = self.curves.request(self._pred, self._truth, self._region, index,
                                        lambda v, s=scope, k=key: self._on_curve(s, k, v))
            if value is not None:
                self._on_curve(scope, key, value)

    def _on_curve(self, scope: str, key: Any, value: Any) -> None:
        if not self._alive or self._curve_keys.get(scope) != key:
            return
        if isinstance(value, JobFailed):
            self._report(value.message)
            return
        if scope == "whole":
            self._whole_curve = value
            if value.n_positive == 0 and self._truth is not None:
                self._report(f"The ground truth {self._truth.name!r} has no foreground pixels in the "
                             f"{self._region.label}: Dice and IoU are 1 only for an empty prediction; "
                             "undefined metrics read n/a.", "warning")
        else:
            self._slice_curve = value
        self._show_metrics()

    def _on_exact_ready(self, curve: Any) -> None:
        if self._alive and curve is not None and curve in (self._whole_curve, self._slice_curve):
            self._show_metrics()

    def _request_previews(self) -> None:
        key = self._inputs_key
        if key == self._preview_key and all(layer is not None for layer in self.preview_layers()):
            self._update_preview_limits()
            return
        self._preview_key = None
        self.preview_runner.request(layer_array(self._pred), layer_array(self._truth),
                                    self._region.mask)
        self._pending_preview_key = key

    def _apply_previews(self, result: Any) -> None:
        if not self._alive or self._pred is None or self._kind != "probability":
            return
        if isinstance(result, JobFailed):
            self._report(result.message)
            return
        if self._pending_preview_key != self._inputs_key:
            return
        on_truth, on_background = result
        base = outputs.base_name(self._pred)
        visible = not self._result_current()
        limits = previews.preview_limits(self._threshold or 0.0)
        outputs.ensure_image(self.viewer, previews.TRUTH_PREVIEW_ROLE, base, on_truth, self._pred,
                             colormap=previews.truth_colormap(), contrast_limits=limits, visible=visible,
                             opacity=0.7)
        outputs.ensure_image(self.viewer, previews.BACKGROUND_PREVIEW_ROLE, base, on_background, self._pred,
                             colormap=previews.background_colormap(), contrast_limits=limits,
                             visible=visible, opacity=0.7)
        self._preview_key = self._inputs_key

    def _update_preview_limits(self) -> None:
        limits = previews.preview_limits(self._threshold or 0.0)
        for layer in self.preview_layers():
            if layer is not None:
                layer.contrast_limits = limits

    # -- threshold ticks ----------------------------------------------------------
    def _show_threshold(self) -> None:
        if self._kind == "probability" and self._threshold is not None:
            self.threshold_label.setText(f"{self._threshold:.6g} (set in the Threshold dock)")
        elif self._kind == "mask":
            self.threshold_label.setText("none: the prediction is a mask")
        else:
            self.threshold_label.setText("n/a")

    def _result_current(self) -> bool:
        r = self.result
        return r is not None and (self._kind != "probability" or r.threshold == self._threshold)

    def _on_session_threshold(self, layer: Any, value: float) -> None:
        """One tick: overlay preview and pixel metrics at once; Labels and objects after a pause."""
        if not self._alive or layer is not self._pred or self._kind != "probability":
            return
        self._threshold = float(value)
        self.refresh_runner.cancel()
        self._show_threshold()
        if self._inputs_key is None:
            return
        confusion = self.confusion_layer()
        if confusion is not None and confusion.visible and not self._result_current():
            confusion.visible = False
        layers = self.preview_layers()
        if any(layer is None for layer in layers) and not self.preview_runner.busy:
            self._request_previews()  # the user deleted a preview layer: make it again
        self._update_preview_limits()
        for preview in layers:
            outputs.set_visible(preview, True)
        self._show_metrics()
        self._pause.start()

    def _pixel_at(self, curve: Any) -> Any:
        if curve is None or self._threshold is None:
            return None
        if curve.step_of(self._threshold) is None and not self.curves.is_exact(curve):
            return None
        return curve.metrics(self._threshold)

    def _show_metrics(self) -> None:
        """Fill the table: the full result if it is current, else pixel metrics from the curves."""
        if self._inputs_key is None:
            return
        stack = self._is_stack()
        if self._result_current():
            ev = self.result.evaluation
            if isinstance(ev, StackEvaluation):
                i = flat_index(self._index, tuple(layer_array(self._pred).shape))
                scopes = [ev.slices[min(i, len(ev.slices) - 1)], ev.whole]
            else:
                scopes = [ev]
            for column, e in enumerate(scopes):
                self.table.set_pixel(column, e.pixel)
                self.table.set_objects(column, e.objects)
            return
        if self._kind != "probability":  # a mask: everything waits for the worker
            for column in range(2 if stack else 1):
                self.table.set_pixel(column, None, pending=True)
                self.table.set_objects(column, None, pending=True)
            return
        curves = [self._slice_curve, self._whole_curve] if stack else [self._whole_curve]
        for column, curve in enumerate(curves):
            self.table.set_pixel(column, self._pixel_at(curve))
            self.table.set_objects(column, None, pending=True)

    # -- the overlay and object metrics -------------------------------------------------
    def refresh(self) -> None:
        """Compute the confusion Labels and all metrics in a worker (the newest request wins)."""
        self._pause.stop()
        if self._pred is None or self._truth is None or self._inputs_key is None:
            return
        if self._kind == "probability" and self._threshold is None:
            return
        self.refresh_runner.request(layer_array(self._pred), layer_array(self._truth),
                                    self._threshold if self._kind == "probability" else None,
                                    self._region.mask, self._is_stack())
        self._refresh_key = self._inputs_key

    def _apply_result(self, result: Any) -> None:
        if not self._alive or self._pred is None:
            return
        if isinstance(result, JobFailed):
            self.table.clear_values()
            self._report(result.message)
            return
        if self._refresh_key != self._inputs_key:
            return
        if self._kind == "probability" and result.threshold != self._threshold:
            return  # stale: a newer request follows
        self.result = result
        outputs.write_labels(
            self.viewer, outputs.CONFUSION_ROLE, outputs.base_name(self._pred), result.codes, self._pred,
            colormap=outputs.confusion_labels_colormap(), colormap_key="confusion", opacity=0.7,
        )
        for preview in self.preview_layers():
            outputs.set_visible(preview, False)
        self._show_metrics()
        ev = result.evaluation
        whole = ev.whole if isinstance(ev, StackEvaluation) else ev
        objects = whole.objects
        text = f"Dice {format_value(whole.pixel.dice, 3)}"
        if objects is not None:
            text += (f", {objects.n_matched} of {objects.n_true} true objects matched, "
                     f"{objects.spurious} spurious")
        self.status.setText(f"{text} ({self._region.label}). {self._note}".strip())

    # -- export ------------------------------------------------------------------------
    def metrics_rows(self) -> list[dict[str, Any]]:
        """Rows for CSV: every slice and the whole stack (or the image), with the inputs named."""
        if self._pred is None or self._truth is None or self._inputs_key is None:
            return []
        extra = {"truth": self._truth.name, "region": self._region.label}
        name = self._pred.name
        if self._result_current():
            ev = self.result.evaluation
            if isinstance(ev, StackEvaluation):
                rows = ev.rows(name)
            else:
                rows = [{"name": name, "slice": None, **ev.to_dict()}]
            return [{**row, **extra} for row in rows]
        m = self._pixel_at(self._whole_curve)
        if m is None:
            return []
        row = Evaluation(m).to_dict()
        return [{"name": name, "slice": "all" if self._is_stack() else None, **row, **extra}]

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

    def export_csv(self, path: str | Path) -> Path | None:
        """Write the metrics to a CSV file; None (with a notification) if it failed."""
        from napari.utils.notifications import show_error, show_info

        rows = self.metrics_rows()
        if not rows:
            show_error("No metrics yet: choose a prediction and a ground truth of the same shape.")
            return None
        try:
            out = write_metrics_csv(path, rows)
        except SegloopError as exc:
            show_error(str(exc))
            return None
        show_info(f"Metrics saved to {out}.")
        self.status.setText(f"Metrics saved to {out}.")
        return out

    def _export_clicked(self) -> None:
        name = "metrics.csv" if self._pred is None else f"{outputs.base_name(self._pred)}_metrics.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export metrics", str(Path.home() / name), "CSV (*.csv)")
        if path:
            self.export_csv(path)
