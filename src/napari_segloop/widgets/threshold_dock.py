"""The Threshold dock: a live threshold over a probability map, post-processing, automatic thresholds.

What the user sees while dragging the slider is drawn by napari's shader:
the ``<image> mask preview`` layer shares the probability array and only its
contrast limits change per step (see :mod:`napari_segloop.widgets.previews`),
and the pixel metrics come from a cached
:class:`~napari_segloop.core.evaluation.ThresholdCurve` in O(1). When the
slider is released or pauses, a worker thresholds and post-processes the map
and the ``<image> mask`` Labels layer is updated in place; a result for any
threshold but the newest is dropped.

The threshold lives in the session (``session.set_threshold``), so the
Confusion dock and any later dock follow the same value.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSlider,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_segloop.core.bundle import PostProcess, set_bundle_threshold
from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.evaluation.curve import ThresholdCurve, otsu_threshold
from napari_segloop.core.masks import apply_threshold, postprocess_2d
from napari_segloop.widgets import outputs, previews
from napari_segloop.widgets.curve_plot import CurvePlot
from napari_segloop.widgets.evaluation import (
    REGION_ALL,
    REGION_VIEW,
    SLIDER_STEPS,
    CurveStore,
    LatestRunner,
    RegionChoice,
    camera_events,
    connect_for_lifetime,
    format_value,
    initial_threshold,
    model_default,
    notify_once,
    read_region,
    slider_step,
    slider_threshold,
    truth_problem,
)
from napari_segloop.widgets.jobs import JobFailed
from napari_segloop.widgets.layer_io import layer_array
from napari_segloop.widgets.pickers import (
    LayerChoice,
    is_labels,
    is_probability_layer,
    is_shapes,
    is_truth_candidate,
    probability_rank,
)
from napari_segloop.widgets.session import session_for, unwrap

#: Milliseconds without a slider move after which the mask layer is written.
PAUSE_MS = 200
#: Milliseconds to wait after a layer is edited before rebuilding the curve.
EDIT_PAUSE_MS = 300
NO_TRUTH = "none"


@dataclass(frozen=True)
class MaskResult:
    """The mask written to ``<image> mask`` for one threshold and post-processing."""

    threshold: float
    postprocess: PostProcess
    data: np.ndarray


def postprocess_active(pp: PostProcess) -> bool:
    """True if ``pp`` changes a thresholded mask."""
    return bool(pp.min_size > 0 or pp.fill_holes or pp.instances or pp.split_touching)


def mask_job(prob: np.ndarray, threshold: float, pp: PostProcess) -> Generator[None, None, MaskResult]:
    """Worker job: ``prob > threshold`` (float32), then post-processing, slice by slice.

    Yields after every slice, so a newer request stops it early.
    """
    prob = np.asarray(prob)
    planes = prob.reshape(-1, *prob.shape[-2:])
    binary = np.empty(planes.shape, dtype=np.uint8)
    for i, plane in enumerate(planes):
        apply_threshold(plane.astype(np.float32, copy=False), threshold, out=binary[i])
        yield None
    if not postprocess_active(pp):
        return MaskResult(threshold, pp, binary.reshape(prob.shape))
    out = np.zeros(planes.shape, dtype=np.int32 if pp.instances else np.uint8)
    offset = 0
    for i in range(binary.shape[0]):
        result = postprocess_2d(binary[i], pp)
        if pp.instances:
            result = result.astype(np.int32, copy=False)
            result[result > 0] += offset
            offset = max(offset, int(result.max(initial=0)))
        out[i] = result
        yield None
    return MaskResult(threshold, pp, out.reshape(prob.shape))


def best_job(curve: ThresholdCurve) -> Generator[None, None, Any]:
    """Worker job: the exact best-Dice threshold of a curve (sorts it if needed)."""
    yield None
    return curve.best_threshold("dice")


def otsu_job(prob: np.ndarray, region: np.ndarray | None) -> Generator[None, None, float]:
    """Worker job: Otsu's threshold of the probabilities (in the region)."""
    yield None
    return otsu_threshold(prob, region)


class ThresholdDock(QWidget):
    """Threshold a probability layer live, post-process it, and pick or save a threshold.

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
        self._prob: Any = None
        self._threshold = 0.5
        self._curve: ThresholdCurve | None = None
        self._curve_key: Any = None
        self._region = RegionChoice()
        self._applied: tuple[float, PostProcess] | None = None
        self._want_best = False
        self._reported: set[str] = set()
        self._alive = True
        self.best: Any = None
        self.mask_runner = LatestRunner(mask_job, self._apply_mask, self)
        self.aux_runner = LatestRunner(lambda job, *a: job(*a), self._apply_aux, self)
        self._pause = QTimer(self)
        self._pause.setSingleShot(True)
        self._pause.setInterval(PAUSE_MS)
        self._pause.timeout.connect(self.refresh_mask)
        self._inputs_timer = QTimer(self)
        self._inputs_timer.setSingleShot(True)
        self._inputs_timer.setInterval(EDIT_PAUSE_MS)
        self._inputs_timer.timeout.connect(self._update_curve)
        self._build()
        self._connect()
        self._bind(self.prob_combo.layer(), force=True)

    # -- layout --------------------------------------------------------------
    def _build(self) -> None:
        layout = QVBoxLayout(self)
        form = QFormLayout()
        self.prob_combo = LayerChoice(self.viewer, is_probability_layer, prefer=probability_rank,
                                      parent=self, only_preferred=True)
        self.prob_combo.setToolTip("The probability map to threshold (from the Predict dock, or any "
                                   "floating-point image with values in [0, 1]).")
        form.addRow("Probability", self.prob_combo)

        row = QHBoxLayout()
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(0, SLIDER_STEPS - 1)
        self.slider.setSingleStep(1)
        self.slider.setPageStep(50)
        self.slider.setToolTip("Foreground where probability > threshold. The mask follows while you "
                               "drag; post-processing is applied when you release or pause.")
        self.spin = QDoubleSpinBox()
        self.spin.setRange(0.0, 1.0)
        self.spin.setDecimals(6)
        self.spin.setSingleStep(0.001)
        self.spin.setKeyboardTracking(False)
        self.spin.setToolTip("The exact threshold (foreground where probability > threshold).")
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        form.addRow("Threshold", row)

        auto = QHBoxLayout()
        self.best_button = QPushButton("Best")
        self.best_button.setToolTip("The threshold with the highest Dice against the ground truth "
                                    "(exact, over every probability value).")
        self.otsu_button = QPushButton("Otsu")
        self.otsu_button.setToolTip("Otsu's threshold of the probabilities (no ground truth needed).")
        self.default_button = QPushButton("Model default")
        self.default_button.setToolTip("The threshold and post-processing stored with the model.")
        for button in (self.best_button, self.otsu_button, self.default_button):
            auto.addWidget(button)
        form.addRow("Automatic", auto)
        layout.addLayout(form)

        pp_box = QGroupBox("Post-processing (applied on release)")
        pp_form = QFormLayout(pp_box)
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 10_000_000)
        self.min_size_spin.setSuffix(" px")
        self.min_size_spin.setSpecialValueText("off")
        self.min_size_spin.setKeyboardTracking(False)
        self.min_size_spin.setToolTip("Remove objects smaller than this many pixels.")
        pp_form.addRow("Remove smaller than", self.min_size_spin)
        checks = QHBoxLayout()
        self.fill_holes_check = QCheckBox("Fill holes")
        self.split_check = QCheckBox("Split touching")
        self.split_check.setToolTip("Separate touching roundish objects (distance-transform watershed).")
        self.instances_check = QCheckBox("Instances")
        self.instances_check.setToolTip("Give every object its own label (connected components).")
        for check in (self.fill_holes_check, self.split_check, self.instances_check):
            checks.addWidget(check)
        pp_form.addRow(checks)
        layout.addWidget(pp_box)

        gt_box = QGroupBox("Compare with ground truth")
        gt_form = QFormLayout(gt_box)
        self.truth_combo = LayerChoice(self.viewer, is_truth_candidate, specials=[("(none)", NO_TRUTH)],
                                       prefer=is_labels, parent=self)
        self.truth_combo.setToolTip("A Labels layer with the true objects (mask or instance ids).")
        gt_form.addRow("Ground truth", self.truth_combo)
        self.region_combo = LayerChoice(
            self.viewer, is_shapes, specials=[("whole image", REGION_ALL), ("field of view", REGION_VIEW)],
            parent=self)
        self.region_combo.setToolTip("Evaluate only inside the shapes of a Shapes layer, or the part of "
                                     "the image shown in the canvas (for partial ground truth).")
        gt_form.addRow("Region", self.region_combo)
        self.plot = CurvePlot(self)
        gt_form.addRow(self.plot)
        self.readout = QLabel()
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        gt_form.addRow(self.readout)
        layout.addWidget(gt_box)

        self.save_button = QPushButton("Save threshold to model")
        self.save_button.setToolTip("Store this threshold and post-processing in the loaded model's "
                                    "bundle, so that `segloop predict --threshold auto` gives this mask.")
        layout.addWidget(self.save_button)
        self.mask_info = QLabel()
        self.mask_info.setWordWrap(True)
        layout.addWidget(self.mask_info)
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _connect(self) -> None:
        self.prob_combo.value_changed.connect(self._bind)
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self._on_released)
        self.spin.valueChanged.connect(self._on_spin)
        self.best_button.clicked.connect(self.best_threshold)
        self.otsu_button.clicked.connect(self.otsu)
        self.default_button.clicked.connect(self.model_default)
        self.save_button.clicked.connect(self.save_to_model)
        self.min_size_spin.valueChanged.connect(self._on_postprocess_changed)
        for check in (self.fill_holes_check, self.split_check, self.instances_check):
            check.toggled.connect(self._on_postprocess_changed)
        self.truth_combo.value_changed.connect(self._on_inputs_changed)
        self.region_combo.value_changed.connect(self._on_inputs_changed)
        self.plot.threshold_picked.connect(self.set_threshold)
        camera = camera_events(self.viewer)
        pairs = [
            (self.session.threshold_changed, self._on_session_threshold),
            (self.curves.data_changed, self._on_layer_data),
            (self.curves.exact_ready, self._on_exact_ready),
            (camera.center, self._on_camera),
            (camera.zoom, self._on_camera),
        ]
        dock = self

        def _on_destroyed() -> None:
            dock._alive = False
            dock.mask_runner.cancel()
            dock.aux_runner.cancel()

        connect_for_lifetime(self, pairs, _on_destroyed)

    # -- state ---------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The current threshold (exact; foreground where probability > threshold)."""
        return self._threshold

    @property
    def probability_layer(self) -> Any:
        """The probability layer the dock is bound to, or None."""
        return self._prob

    @property
    def curve(self) -> ThresholdCurve | None:
        """The threshold curve against the ground truth, once built."""
        return self._curve

    def postprocess(self) -> PostProcess:
        """The post-processing chosen in the dock."""
        return PostProcess(
            min_size=int(self.min_size_spin.value()),
            fill_holes=self.fill_holes_check.isChecked(),
            instances=self.instances_check.isChecked(),
            split_touching=self.split_check.isChecked(),
        )

    def set_postprocess(self, pp: PostProcess) -> None:
        """Show ``pp`` in the dock (refreshes the mask once)."""
        widgets = (self.min_size_spin, self.fill_holes_check, self.split_check, self.instances_check)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.min_size_spin.setValue(int(pp.min_size))
            self.fill_holes_check.setChecked(bool(pp.fill_holes))
            self.split_check.setChecked(bool(getattr(pp, "split_touching", False)))
            self.instances_check.setChecked(bool(pp.instances))
        finally:
            for w in widgets:
                w.blockSignals(False)
        self._on_postprocess_changed()

    def mask_layer(self) -> Any:
        """The ``<image> mask`` Labels layer of the bound probability layer, or None."""
        if self._prob is None:
            return None
        return outputs.find_output(self.viewer, outputs.MASK_ROLE, outputs.base_name(self._prob))

    def preview_layer(self) -> Any:
        """The ``<image> mask preview`` layer of the bound probability layer, or None."""
        if self._prob is None:
            return None
        return outputs.find_output(self.viewer, previews.MASK_PREVIEW_ROLE, outputs.base_name(self._prob))

    @property
    def busy(self) -> bool:
        """True while a mask, curve or automatic threshold is being computed."""
        return (self.mask_runner.busy or self.aux_runner.busy or self._pause.isActive()
                or self._inputs_timer.isActive() or self.curves.building)

    # -- binding -------------------------------------------------------------
    def _bind(self, layer: Any, force: bool = False) -> None:
        """Follow another probability layer (or none)."""
        layer = unwrap(layer) if layer is not None else None
        old = self._prob
        if layer is old and not force:
            return
        self.mask_runner.cancel()
        self.aux_runner.cancel()
        if old is not None:
            outputs.remove_output(self.viewer, self.preview_layer())
        self._prob = layer
        self._applied = None
        self.best = None
        self.plot.set_best(None)
        enabled = layer is not None
        for w in (self.slider, self.spin, self.best_button, self.otsu_button, self.default_button,
                  self.save_button):
            w.setEnabled(enabled)
        if layer is None:
            self.status.setText("Choose a probability map: run the Predict dock, or open a "
                                "floating-point image with values in [0, 1].")
            self._update_curve()
            return
        self.status.setText("")
        self._threshold = initial_threshold(self.session, layer)
        self._show_controls(self._threshold)
        self._ensure_preview(visible=True)
        self._update_curve()
        if self.session.threshold(layer) is None:
            self.session.set_threshold(layer, self._threshold)
        self.refresh_mask()

    def _ensure_preview(self, visible: bool) -> Any:
        prob = self._prob
        if prob is None:
            return None
        return outputs.ensure_image(
            self.viewer, previews.MASK_PREVIEW_ROLE, outputs.base_name(prob), layer_array(prob), prob,
            colormap=previews.mask_colormap(), contrast_limits=previews.preview_limits(self._threshold),
            visible=visible,
        )

    # -- threshold changes ----------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Make ``value`` (clipped to [0, 1]) the threshold of the bound probability layer."""
        value = float(min(max(float(value), 0.0), 1.0))
        if self._prob is None:
            self._threshold = value
            self._show_controls(value)
            return
        self.session.set_threshold(self._prob, value)

    def _on_slider(self, step: int) -> None:
        self.set_threshold(slider_threshold(step))

    def _on_spin(self, value: float) -> None:
        if abs(value - self._threshold) > 0.5e-6:  # not the rounded display of the current value
            self.set_threshold(value)

    def _on_released(self) -> None:
        self._pause.stop()
        self.refresh_mask()

    def _show_controls(self, value: float) -> None:
        self.slider.blockSignals(True)
        self.spin.blockSignals(True)
        try:
            self.slider.setValue(slider_step(value))
            self.spin.setValue(value)
        finally:
            self.slider.blockSignals(False)
            self.spin.blockSignals(False)

    def _on_session_threshold(self, layer: Any, value: float) -> None:
        """One tick: everything the user sees follows at once, the mask layer after a pause."""
        if layer is not self._prob or not self._alive:
            return
        self._threshold = float(value)
        self._show_controls(self._threshold)
        self.mask_runner.cancel()  # a result for an older threshold is never drawn
        preview = self.preview_layer()
        if preview is None:
            preview = self._ensure_preview(visible=True)
        else:
            preview.contrast_limits = previews.preview_limits(self._threshold)
        mask = self.mask_layer()
        if mask is not None and mask.visible and self._applied != (self._threshold, self.postprocess()):
            mask.visible = False
        outputs.set_visible(preview, True)
        self._show_metrics()
        self._pause.start()

    def _on_postprocess_changed(self, *_: Any) -> None:
        self.refresh_mask()

    # -- the mask layer -------------------------------------------------------
    def refresh_mask(self) -> None:
        """Threshold and post-process in a worker, then update ``<image> mask`` (newest request wins)."""
        self._pause.stop()
        if self._prob is None:
            return
        self.mask_runner.request(layer_array(self._prob), self._threshold, self.postprocess())

    def _apply_mask(self, result: Any) -> None:
        from napari.utils.notifications import show_error

        if not self._alive or self._prob is None:
            return
        if isinstance(result, JobFailed):
            show_error(f"{self._prob.name}: {result.message}")
            self.status.setText(result.message)
            return
        if result.threshold != self._threshold or result.postprocess != self.postprocess():
            return  # stale: a newer request follows
        self.session.set_mask_settings(result.threshold, result.postprocess)
        prob = self._prob
        pp = result.postprocess
        outputs.write_labels(
            self.viewer, outputs.MASK_ROLE, outputs.base_name(prob), result.data, prob,
            colormap=outputs.mask_labels_colormap(pp.instances),
            colormap_key="instances" if pp.instances else "binary",
        )
        outputs.set_visible(self.preview_layer(), False)
        self._applied = (result.threshold, pp)
        steps = [f"threshold {result.threshold:.6g}"]
        if postprocess_active(pp):
            steps.append("post-processed")
        if pp.instances:
            steps.append(f"{int(result.data.max(initial=0))} objects")
        self.mask_info.setText(f"Layer '{outputs.base_name(prob)} mask': " + ", ".join(steps) + ".")

    # -- ground truth, curve, metrics -----------------------------------------
    def _on_inputs_changed(self, *_: Any) -> None:
        self._update_curve()

    def _on_layer_data(self, layer: Any) -> None:
        if not self._alive:
            return
        if layer is self._prob:
            self._ensure_preview(visible=self.preview_layer() is None or self.preview_layer().visible)
            self._inputs_timer.start()
            self._pause.start()
        elif layer is self.truth_combo.layer() or layer is self.region_combo.layer():
            self._inputs_timer.start()

    def _on_camera(self, *_: Any) -> None:
        if self._alive and self.region_combo.value() == REGION_VIEW:
            self._inputs_timer.start()

    def _report(self, message: str, level: str = "error") -> None:
        """Status line, and one notification per distinct message (not one per slider step)."""
        notify_once(self.status, self._reported, message, level)

    def _update_curve(self) -> None:
        """Ask for the curve of the probability map against the ground truth (built in a worker)."""
        self._inputs_timer.stop()
        prob, truth = self._prob, self.truth_combo.layer()
        self._curve = None
        self._curve_key = None
        self.best_button.setEnabled(prob is not None and truth is not None)
        if prob is None or truth is None:
            self.plot.set_curve(None, "Choose a ground truth to see Dice, precision and recall "
                                      "against the threshold.")
            self.readout.setText("")
            return
        shape = tuple(layer_array(prob).shape)
        problem = truth_problem(truth, shape)
        if problem is None:
            try:
                self._region = read_region(self.viewer, self.region_combo.value(), prob, shape,
                                           self._region_version())
            except InputError as exc:
                problem = str(exc)
        if problem is not None:
            self._report(problem)
            self.plot.set_curve(None, "No curve: see the message below.")
            self.readout.setText("Dice n/a · IoU n/a · precision n/a · recall n/a")
            self.best_button.setEnabled(False)
            return
        key = self.curves.key(prob, truth, self._region.key, None)
        self._curve_key = key
        result = self.curves.request(prob, truth, self._region, None,
                                     lambda value: self._on_curve(key, value))
        if result is None:
            self.plot.set_curve(None, "Computing the curve…")
            self.readout.setText("Dice … · IoU … · precision … · recall …")
        else:
            self._on_curve(key, result)

    def _region_version(self) -> int:
        layer = self.region_combo.layer()
        return 0 if layer is None else self.curves.version(layer)

    def _on_curve(self, key: Any, value: Any) -> None:
        if not self._alive or key != self._curve_key:
            return
        if isinstance(value, JobFailed):
            self._report(value.message)
            self.plot.set_curve(None, "No curve: see the message below.")
            return
        self._curve = value
        truth = self.truth_combo.layer()
        if value.n_positive == 0 and truth is not None:
            self._report(f"The ground truth {truth.name!r} has no foreground pixels in the "
                         f"{self._region.label}: Dice and IoU are 1 only for an empty mask, "
                         "precision and recall read n/a where undefined.", "warning")
        self.plot.set_curve(value.curve())
        self._show_metrics()
        if self._want_best:
            self.best_threshold()

    def _on_exact_ready(self, curve: Any) -> None:
        if self._alive and curve is self._curve:
            self._show_metrics()

    def _curve_metrics(self) -> Any:
        curve = self._curve
        if curve is None:
            return None
        if curve.step_of(self._threshold) is None and not self.curves.is_exact(curve):
            return None  # off the slider steps: wait for the sorted copy (never block the GUI)
        return curve.metrics(self._threshold)

    def _show_metrics(self) -> None:
        self.plot.set_threshold(self._threshold)
        if self._curve is None:
            return
        m = self._curve_metrics()
        if m is None:
            self.readout.setText("Dice … · IoU … · precision … · recall …")
            return
        self.readout.setText(
            f"Dice {format_value(m.dice, 3)} · IoU {format_value(m.iou, 3)} · "
            f"precision {format_value(m.precision, 3)} · recall {format_value(m.recall, 3)}"
        )

    # -- automatic thresholds ---------------------------------------------------
    def best_threshold(self) -> None:
        """Set the exact best-Dice threshold against the ground truth (computed in a worker)."""
        self._want_best = False
        if self._prob is None:
            self._report("Choose a probability map first.")
            return
        if self.truth_combo.layer() is None:
            self._report("Choose a ground-truth layer first: the best threshold is the one with the "
                         "highest Dice against it.")
            return
        if self._curve is None:
            if self._curve_key is None:
                self._update_curve()
            if self._curve_key is not None:
                self._want_best = True
                self.status.setText("Computing the best threshold…")
            return
        self.status.setText("Computing the best threshold…")
        self.aux_runner.request(best_job, self._curve)

    def otsu(self) -> None:
        """Set Otsu's threshold of the probabilities (in the region, if one is chosen)."""
        if self._prob is None:
            self._report("Choose a probability map first.")
            return
        shape = tuple(layer_array(self._prob).shape)
        try:
            region = read_region(self.viewer, self.region_combo.value(), self._prob, shape,
                                 self._region_version())
        except InputError as exc:
            self._report(str(exc))
            return
        self.status.setText("Computing Otsu's threshold…")
        self.aux_runner.request(otsu_job, layer_array(self._prob), region.mask)

    def _apply_aux(self, result: Any) -> None:
        if not self._alive or self._prob is None:
            return
        if isinstance(result, JobFailed):
            self._report(result.message)
            return
        if isinstance(result, float):
            self.set_threshold(result)
            self.status.setText(f"Otsu's threshold: {result:.6g}.")
            return
        self.best = result
        self.plot.set_best(result.threshold)
        self.set_threshold(result.threshold)
        upper = "1" if not np.isfinite(result.upper) else f"{result.upper:.6g}"
        self.status.setText(
            f"Best Dice {result.score:.4f} at threshold {result.threshold:.6g} (exact optimum over every "
            f"probability value; any threshold in [{result.threshold:.6g}, {upper}) gives this mask)."
        )

    def model_default(self) -> None:
        """Set the threshold and post-processing stored with the model."""
        default = model_default(self.session)
        if default.postprocess is not None:
            self.set_postprocess(default.postprocess)
        self.set_threshold(default.threshold)
        self.status.setText(f"Threshold {default.threshold:.6g} from {default.source}.")

    def save_to_model(self) -> bool:
        """Store the threshold and post-processing in the loaded model's bundle (``segloop.json``).

        Returns
        -------
        bool
            True if saved; otherwise a notification says why.
        """
        from napari.utils.notifications import show_error, show_info

        bundle = self.session.bundle
        if bundle is None:
            show_error("No model is loaded: load a model bundle in the Model dock, then save the "
                       "threshold into it.")
            return False
        source = str(bundle.source)
        if source in ("new", "default") or not Path(source).is_dir():
            what = "The built-in default model is read-only" if source == "default" else \
                "This model is not saved as a bundle folder yet"
            show_error(f"{what}: use 'Save model as…' in the Model dock; it saves the model with "
                       "the threshold and post-processing shown here.")
            return False
        pp = self.postprocess()
        try:
            settings = set_bundle_threshold(source, self._threshold, pp)
        except SegloopError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return False
        bundle.settings = settings
        self.session.model_changed.emit(bundle)
        text = (f"Saved threshold {self._threshold:.6g} and post-processing to {source}. "
                f"`segloop predict --model {source} --threshold auto` gives this mask.")
        show_info(text)
        self.status.setText(text)
        return True
