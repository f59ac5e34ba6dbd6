"""The Classes dock: a K-class prediction, its class map, and its scores against ground truth.

A view over :mod:`napari_segloop.widgets.class_state` (Qt-free) and
:mod:`napari_segloop.core.evaluation.multiclass`:

* **Show class** points ``<image> probability`` at one class's probability
  (a view, no copy): the Threshold and Confusion docks then give a binary
  view of that class, unchanged.
* **Minimum confidence** remakes ``<image> classes`` (arg-max; pixels whose
  best probability is lower stay unassigned, grey) in a worker.
* **Ground truth** (a Labels layer of class ids, 0 = background) gives the
  K x K confusion matrix, per-class Dice / IoU / precision / recall and mIoU,
  computed in a worker; ``<image> class confusion`` shows the TP / FP / FN of
  the shown class in the Confusion dock's colours.

The binary docks stay as they are; this dock only appears useful once a
K-class model predicted (it says so otherwise).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QSlider,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_segloop.widgets.class_state import (
    ClassScores,
    class_colors,
    class_map_job,
    class_scores_job,
)
from napari_segloop.widgets.colors import CONFUSION_COLORS
from napari_segloop.widgets.evaluation import LatestRunner, connect_for_lifetime, format_value
from napari_segloop.widgets.jobs import JobFailed
from napari_segloop.widgets.layer_io import CLASSES_ROLE, class_map_colormap, show_class
from napari_segloop.widgets.outputs import (
    confusion_labels_colormap,
    find_output,
    set_visible,
    write_labels,
)
from napari_segloop.widgets.pickers import LayerChoice, is_labels, is_plugin_probability
from napari_segloop.widgets.session import METADATA_KEY, session_for, unwrap

CLASS_CONFUSION_ROLE = "class confusion"
#: Slider steps of the minimum confidence (0.01 apart).
CONFIDENCE_STEPS = 100
SCORE_COLUMNS = ("class", "pixels", "Dice", "IoU", "precision", "recall")


def _swatch(rgba: tuple[float, float, float, float]) -> str:
    r, g, b = (round(255 * v) for v in rgba[:3])
    return f"<span style='color: rgb({r},{g},{b})'>&#9632;</span>"


class ClassesDock(QWidget):
    """Class view, class map and multi-class scores of K-class predictions."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = unwrap(napari_viewer)
        self.session = session_for(self.viewer)
        self.scores: ClassScores | None = None
        self._alive = True
        self._watched: Any = None
        self._prediction_id: int | None = None
        self._maps = LatestRunner(class_map_job, self._on_class_map, self)
        self._scorer = LatestRunner(class_scores_job, self._on_scores, self)
        self._build()
        connect_for_lifetime(self, [(self.session.probabilities_changed, self._on_probabilities)],
                             self._destroyed)
        self._on_prediction(self.prediction_combo.value)

    # -- building ---------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.prediction_combo = LayerChoice(self.viewer, is_plugin_probability, prefer=self._is_classes,
                                            parent=self)
        self.prediction_combo.setToolTip("A probability layer made by the Predict dock with a "
                                         "model of several classes.")
        form.addRow("Prediction", self.prediction_combo)
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        self.legend.setWordWrap(True)
        form.addRow("Classes", self.legend)
        self.class_combo = QComboBox()
        self.class_combo.setToolTip("The class whose probability the probability layer shows, and "
                                    "whose TP / FP / FN the class confusion layer shows.")
        form.addRow("Show class", self.class_combo)
        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, CONFIDENCE_STEPS)
        self.slider.setToolTip("Pixels whose most likely class has a lower probability stay "
                               "unassigned (grey). 0: every pixel gets a class.")
        self.confidence_spin = QDoubleSpinBox()
        self.confidence_spin.setRange(0.0, 1.0)
        self.confidence_spin.setSingleStep(0.01)
        self.confidence_spin.setDecimals(2)
        row.addWidget(self.slider, 1)
        row.addWidget(self.confidence_spin)
        form.addRow("Minimum confidence", row)
        self.truth_combo = LayerChoice(self.viewer, self._is_truth, specials=[("none", "none")],
                                       parent=self)
        self.truth_combo.setToolTip("Ground truth with class ids: 0 = background, 1 to K-1 the classes.")
        form.addRow("Ground truth", self.truth_combo)
        self.show_confusion = QCheckBox("show TP / FP / FN of the shown class")
        self.show_confusion.setChecked(True)
        form.addRow("", self.show_confusion)
        layout.addLayout(form)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.table = QTableWidget(0, len(SCORE_COLUMNS))
        self.table.setHorizontalHeaderLabels(list(SCORE_COLUMNS))
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.table)
        layout.addWidget(QLabel("Confusion matrix (rows: truth, columns: prediction)"))
        self.matrix = QTableWidget(0, 0)
        self.matrix.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        layout.addWidget(self.matrix)
        buttons = QHBoxLayout()
        self.copy_button = QPushButton("Copy scores")
        self.copy_button.setToolTip("Copy the per-class scores and the matrix as tab-separated text.")
        buttons.addWidget(self.copy_button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.prediction_combo.value_changed.connect(self._on_prediction)
        self.class_combo.currentIndexChanged.connect(self._on_class_chosen)
        self.slider.valueChanged.connect(self._on_slider)
        self.confidence_spin.valueChanged.connect(self._on_spin)
        self.truth_combo.value_changed.connect(self._on_truth)
        self.show_confusion.toggled.connect(self._on_show_confusion)
        self.copy_button.clicked.connect(self.copy_scores)

    def _destroyed(self) -> None:
        self._alive = False
        self._maps.cancel()
        self._scorer.cancel()

    # -- what is chosen -----------------------------------------------------------
    def _is_classes(self, layer: Any) -> int:
        entry = self.session.probability_of_layer(layer)
        return 2 if entry is not None and entry.classes is not None else 0

    @staticmethod
    def _is_truth(layer: Any) -> bool:
        return is_labels(layer) and METADATA_KEY not in getattr(layer, "metadata", {})

    def entry(self) -> Any:
        """The session's record of the chosen prediction (None unless it has several classes)."""
        layer = self.prediction_combo.layer()
        entry = self.session.probability_of_layer(layer) if layer is not None else None
        return entry if entry is not None and entry.classes is not None else None

    def image_name(self) -> str | None:
        """The image the chosen prediction was made for."""
        layer = self.prediction_combo.layer()
        mark = getattr(layer, "metadata", {}).get(METADATA_KEY) if layer is not None else None
        return mark.get("image") if isinstance(mark, dict) else None

    def _image_layer(self) -> Any:
        name = self.image_name()
        for layer in self.viewer.layers:
            if layer.name == name and METADATA_KEY not in getattr(layer, "metadata", {}):
                return layer
        return None

    @property
    def min_confidence(self) -> float:
        """The minimum confidence set in the dock."""
        return float(self.confidence_spin.value())

    # -- reactions ----------------------------------------------------------------
    def _on_probabilities(self, image: Any) -> None:
        if not self._alive:
            return
        self.prediction_combo.refresh()
        if self.prediction_combo.layer() is None or self.entry() is None:
            self.prediction_combo.choose_default()
        self._on_prediction(self.prediction_combo.value)

    def _on_prediction(self, value: Any) -> None:
        entry = self.entry()
        enabled = entry is not None
        for w in (self.class_combo, self.slider, self.confidence_spin, self.truth_combo,
                  self.show_confusion, self.copy_button):
            w.setEnabled(enabled)
        if entry is None:
            self.legend.setText("")
            self.status.setText("Predict with a model of several classes (Predict dock) to see its "
                                "classes here. Binary predictions are scored by the Threshold and "
                                "Confusion docks.")
            self._clear_scores()
            return
        pred = entry.classes
        colors = class_colors(pred.classes)
        legend = [f"{_swatch(colors[c])} {c} {name}" for c, name in enumerate(pred.names) if c]
        legend.append(f"{_swatch(colors[pred.classes])} {pred.classes} unassigned")
        self.legend.setText(" &nbsp; ".join(["0 background", *legend]))
        names = [f"{c}: {n}" for c, n in enumerate(pred.names)]
        if [self.class_combo.itemText(i) for i in range(self.class_combo.count())] != names:
            self.class_combo.blockSignals(True)
            self.class_combo.clear()
            self.class_combo.addItems(names)
            self.class_combo.blockSignals(False)
        self.class_combo.blockSignals(True)
        self.class_combo.setCurrentIndex(entry.shown)
        self.class_combo.blockSignals(False)
        if id(pred.probabilities) != self._prediction_id:
            # A new prediction: cancel work on the old one, start from its minimum confidence.
            self._maps.cancel()
            self._scorer.cancel()
            self._prediction_id = id(pred.probabilities)
            self._set_confidence(pred.min_confidence, start=False)
        elif abs(pred.min_confidence - self.min_confidence) > 1e-9:
            # A slice written into this prediction at another minimum confidence: remake the map.
            self._request_map()
        self.status.setText(f"{pred.classes} classes; the class map is '{self.image_name()} classes'.")
        self.rescore()

    def _set_confidence(self, value: float, start: bool = True) -> None:
        self.session.class_confidence = float(value)
        for w in (self.slider, self.confidence_spin):
            w.blockSignals(True)
        self.slider.setValue(round(value * CONFIDENCE_STEPS))
        self.confidence_spin.setValue(value)
        for w in (self.slider, self.confidence_spin):
            w.blockSignals(False)
        if start:
            self._request_map()

    def _on_slider(self, step: int) -> None:
        self._set_confidence(step / CONFIDENCE_STEPS)

    def _on_spin(self, value: float) -> None:
        self._set_confidence(float(value))

    def _request_map(self) -> None:
        entry = self.entry()
        if entry is None:
            return
        self._maps.request(entry.classes.probabilities, self.min_confidence)

    def _on_class_map(self, result: Any) -> None:
        entry = self.entry()
        if not self._alive or entry is None or isinstance(result, JobFailed):
            if isinstance(result, JobFailed):
                self.status.setText(result.message)
            return
        if id(entry.classes.probabilities) != self._prediction_id \
                or result.shape != entry.classes.class_map.shape:
            return  # made for a prediction that has been replaced since
        pred = replace(entry.classes, class_map=result, min_confidence=self.min_confidence)
        write_labels(self.viewer, CLASSES_ROLE, self.image_name(), result, entry.layer(),
                     colormap=class_map_colormap(pred.classes), colormap_key=f"classes-{pred.classes}",
                     opacity=0.5)
        image = self._image_layer()
        if image is not None:
            self.session.set_probability(image, replace(entry, classes=pred))  # rescores (signal)

    def _on_class_chosen(self, index: int) -> None:
        image = self._image_layer()
        if index < 0 or image is None or self.entry() is None:
            return
        show_class(self.viewer, self.session, image, index)
        self.rescore()

    def _on_truth(self, value: Any) -> None:
        if self._watched is not None:
            try:
                self._watched.events.data.disconnect(self._on_truth_edited)
                self._watched.events.paint.disconnect(self._on_truth_edited)
            except (RuntimeError, TypeError, ValueError):
                pass
        self._watched = value if value not in (None, "none") else None
        if self._watched is not None:
            self._watched.events.data.connect(self._on_truth_edited)
            self._watched.events.paint.connect(self._on_truth_edited)
        self.rescore()

    def _on_truth_edited(self, *_: Any) -> None:
        if self._alive:
            self.rescore()

    def _on_show_confusion(self, on: bool) -> None:
        layer = find_output(self.viewer, CLASS_CONFUSION_ROLE, self.image_name() or "")
        set_visible(layer, on)
        if on:
            self.rescore()

    # -- scores ---------------------------------------------------------------------
    def rescore(self) -> None:
        """Score the class map against the chosen ground truth (in a worker)."""
        entry = self.entry()
        truth = self.truth_combo.layer() if self.truth_combo.value not in (None, "none") else None
        if entry is None or truth is None:
            self._clear_scores()
            return
        pred = entry.classes
        if tuple(truth.data.shape) != tuple(pred.class_map.shape):
            self._clear_scores()
            self.status.setText(f"The ground truth {truth.name!r} has shape {tuple(truth.data.shape)}; "
                                f"the prediction {tuple(pred.class_map.shape)}.")
            return
        self._scorer.request(pred.class_map, truth.data, pred.classes, list(pred.names), entry.shown,
                             pred.scored_region())

    def _on_scores(self, result: Any) -> None:
        if not self._alive:
            return
        if isinstance(result, JobFailed):
            self._clear_scores()
            from napari.utils.notifications import show_error

            show_error(result.message)
            self.status.setText(result.message)
            return
        self.scores = result
        self._show(result)
        entry = self.entry()
        if entry is not None and self.show_confusion.isChecked():
            write_labels(self.viewer, CLASS_CONFUSION_ROLE, self.image_name(), result.confusion,
                         entry.layer(), colormap=confusion_labels_colormap(), colormap_key="confusion",
                         opacity=0.7)

    def _clear_scores(self) -> None:
        self._scorer.cancel()
        self.scores = None
        self.summary.setText("")
        self.table.setRowCount(0)
        self.matrix.setRowCount(0)
        self.matrix.setColumnCount(0)

    def _show(self, result: ClassScores) -> None:
        m = result.metrics
        s = m.summary()
        unassigned = f", unassigned {s['unassigned']:.1%}" if m.unassigned else ""
        self.summary.setText(f"mIoU {s['miou']:.3f} · mean Dice of the classes {s['mean_dice']:.3f} · "
                             f"pixel accuracy {s['accuracy']:.3f}{unassigned}")
        rows = m.rows()
        self.table.setRowCount(len(rows))
        for r, row in enumerate(rows):
            values = [f"{row['class']}: {row['name']}", str(row["support"]),
                      *(format_value(row[k], 3) for k in ("dice", "iou", "precision", "recall"))]
            for c, text in enumerate(values):
                item = QTableWidgetItem(text)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                self.table.setItem(r, c, item)
        k = m.classes
        cols = k + (1 if m.unassigned else 0)
        self.matrix.setRowCount(k)
        self.matrix.setColumnCount(cols)
        heads = [str(c) for c in range(k)] + (["unassigned"] if m.unassigned else [])
        self.matrix.setHorizontalHeaderLabels(heads)
        self.matrix.setVerticalHeaderLabels([str(c) for c in range(k)])
        for r in range(k):
            for c in range(cols):
                item = QTableWidgetItem(str(int(m.confusion[r, c])))
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
                if r == c:  # the correct pixels: bold (readable on light and dark themes)
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                self.matrix.setItem(r, c, item)
        self.status.setText(f"TP / FP / FN of class {result.shown} in '{self.image_name()} "
                            f"{CLASS_CONFUSION_ROLE}' ({_legend_text()}).")

    def scores_text(self) -> str:
        """The per-class scores and the confusion matrix, tab-separated ("" without scores)."""
        if self.scores is None:
            return ""
        m = self.scores.metrics
        lines = ["\t".join(("class", "name", "pixels", "dice", "iou", "precision", "recall"))]
        for row in m.rows():
            lines.append("\t".join([str(row["class"]), row["name"], str(row["support"]),
                                    *(format_value(row[k], 4) for k in ("dice", "iou", "precision",
                                                                         "recall"))]))
        s = m.summary()
        lines.append(f"mIoU\t{s['miou']:.4f}\tmean Dice\t{s['mean_dice']:.4f}")
        lines.append("truth \\ prediction\t" + "\t".join(
            [str(c) for c in range(m.classes)] + (["unassigned"] if m.unassigned else [])))
        for r in range(m.classes):
            row_cm = m.confusion[r, :m.classes + (1 if m.unassigned else 0)]
            lines.append(f"{r}\t" + "\t".join(str(int(v)) for v in row_cm))
        return "\n".join(lines)

    def copy_scores(self) -> bool:
        """Copy :meth:`scores_text` to the clipboard; False when there is nothing to copy."""
        text = self.scores_text()
        if text:
            QApplication.clipboard().setText(text)
        return bool(text)


def _legend_text() -> str:
    names = {1: "TP", 2: "FP", 3: "FN"}
    return ", ".join(f"{_swatch(CONFUSION_COLORS[k])} {v}" for k, v in names.items())

