"""The Threshold dock: a live threshold over a probability map, post-processing, automatic thresholds.

The dock is a view of the viewer's evaluation state
(:mod:`napari_segloop.widgets.eval_state`): the slider writes the
threshold, the post-processing controls write the post-processing, and the
evaluation engine (:mod:`napari_segloop.widgets.eval_engine`) makes the mask
on screen and its metrics in a worker. While the slider moves, napari's
shader draws the raw ``probability > t`` preview (see
:mod:`napari_segloop.widgets.previews`) and the read-out follows the raw
threshold curve in O(1); when it is released or pauses, ``<image> mask`` is
made with the post-processing and the read-out describes that mask. The
Confusion dock views the same state, so both always agree.
"""

from __future__ import annotations

from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import Qt
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
from napari_segloop.core.errors import SegloopError
from napari_segloop.core.evaluation.curve import ThresholdCurve, otsu_threshold
from napari_segloop.core.evaluation.histograms import BinnedCurve, binned_curve
from napari_segloop.core.evaluation.planes import select_planes
from napari_segloop.core.evaluation.processed import ProcessedBest, best_processed_threshold, processed_curve
from napari_segloop.core.evaluation.refine import exact_best_threshold
from napari_segloop.widgets import outputs, previews
from napari_segloop.widgets.curve_plot import CurvePlot
from napari_segloop.widgets.eval_controls import GroundTruthBox, bind_layer_choice, objects_choice
from napari_segloop.widgets.eval_engine import EvaluationEngine, engine_for
from napari_segloop.widgets.eval_state import postprocess_active
from napari_segloop.widgets.evaluation import (
    SLIDER_STEPS,
    LatestRunner,
    Unread,
    connect_for_lifetime,
    format_value,
    model_default,
    notify_once,
    slider_step,
    slider_threshold,
)
from napari_segloop.widgets.jobs import JobFailed
from napari_segloop.widgets.layer_io import layer_array
from napari_segloop.widgets.pickers import LayerChoice, is_probability_layer, probability_rank
from napari_segloop.widgets.session import session_for, unwrap


def best_job(curve: ThresholdCurve) -> Generator[None, None, Any]:
    """Worker job: the exact best-Dice threshold of a curve (sorts it if needed)."""
    yield None
    return curve.best_threshold("dice")


def large_best_job(curve: BinnedCurve, prob: Unread, truth: Unread) -> Generator[Any, None, Any]:
    """Worker job: the exact best-Dice threshold of a map larger than memory (one refining pass)."""
    best = yield from exact_best_threshold(prob.array, truth.array, curve, "dice")
    curve.remember(best.metrics)  # its counts are known now: no counting pass when it is set
    return best


def best_processed_job(prob: Any, truth: Any, pp: PostProcess, region: Any, planes: Any, object_dims: int,
                       curve: ThresholdCurve | None) -> Generator[Any, None, ProcessedBest]:
    """Worker job: the best-Dice threshold of the post-processed mask (a search over thresholds).

    The raw curve's exact optimum (computed here, in the worker) is one of the candidates.
    """
    yield None
    start = None if curve is None else curve.best_threshold("dice").threshold
    return (yield from best_processed_threshold(np.asarray(prob), np.asarray(truth), pp, region=region,
                                                planes=planes, object_dims=object_dims, start=start))


def points_job(prob: Any, truth: Any, pp: PostProcess, region: Any, planes: Any, object_dims: int,
               key: Any) -> Generator[Any, None, tuple[Any, list[tuple[float, float]]]]:
    """Worker job: the post-processed mask's Dice at the coarse thresholds (the plot's curve)."""
    yield None
    points = yield from processed_curve(np.asarray(prob), np.asarray(truth), pp, region=region,
                                        planes=planes, object_dims=object_dims)
    return key, [(t, m.dice) for t, m in points]


def otsu_job(prob: np.ndarray, region: np.ndarray | None,
             planes: tuple[int, ...] | None = None) -> Generator[None, None, float]:
    """Worker job: Otsu's threshold of the probabilities (in the region and the predicted planes)."""
    yield None
    prob = np.asarray(prob)
    if planes is not None:
        prob = select_planes(prob, planes)
        if region is not None and region.ndim > 2:
            region = select_planes(region, planes)
    return otsu_threshold(prob, region)


def large_otsu_job(prob: Unread) -> Generator[Any, None, float]:
    """Worker job: Otsu's threshold of a map larger than memory, from its histogram (block by block)."""
    curve = yield from binned_curve(prob.array, steps=SLIDER_STEPS)
    return curve.otsu()


def _range_text(lower: float, upper: float) -> str:
    """``any threshold in [a, b)``, or ``only this threshold`` when the range is one value."""
    if not np.isfinite(upper):
        return f"any threshold in [{lower:.6g}, 1] gives this mask"
    if float(np.float32(upper)) <= float(np.nextafter(np.float32(lower), np.float32(2))) \
            or f"{lower:.6g}" == f"{upper:.6g}":
        return "the next probability value is just above it"
    return f"any threshold in [{lower:.6g}, {upper:.6g}) gives this mask"


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
        self.engine: EvaluationEngine = engine_for(self.session)
        self.state = self.engine.state
        self.curves = self.engine.curves
        self._reported: set[str] = set()
        self._alive = True
        self._want_best = False
        self.best: Any = None
        self.aux_runner = LatestRunner(lambda job, *a: job(*a), self._apply_aux, self)
        self.points_runner = LatestRunner(points_job, self._apply_points, self)
        self._points_key: Any = None
        self._build()
        self._connect()
        self.engine.attach(self)
        self._render_controls()
        self._render()

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
        self.slider.setToolTip("Foreground where probability > threshold. The raw mask follows while you "
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
        self.best_button.setToolTip("The threshold with the highest Dice of the mask you see against the "
                                    "ground truth (exact over every probability value without "
                                    "post-processing; searched over thresholds with it).")
        self.otsu_button = QPushButton("Otsu")
        self.otsu_button.setToolTip("Otsu's threshold of the probabilities (no ground truth needed).")
        self.default_button = QPushButton("Model default")
        self.default_button.setToolTip("The threshold and post-processing stored with the model.")
        for button in (self.best_button, self.otsu_button, self.default_button):
            auto.addWidget(button)
        form.addRow("Automatic", auto)
        layout.addLayout(form)

        self.pp_box = QGroupBox("Post-processing (applied on release)")
        self.pp_box.setCheckable(True)
        self.pp_box.setToolTip("Untick to see and score the raw mask (probability > threshold).")
        pp_form = QFormLayout(self.pp_box)
        pp_form.setContentsMargins(6, 6, 6, 6)
        self.min_size_spin = QSpinBox()
        self.min_size_spin.setRange(0, 10_000_000)
        self.min_size_spin.setSuffix(" px")
        self.min_size_spin.setSpecialValueText("off")
        self.min_size_spin.setKeyboardTracking(False)
        self.min_size_spin.setToolTip("Remove objects smaller than this many pixels "
                                      "(voxels for 3-D objects).")
        pp_form.addRow("Remove smaller than", self.min_size_spin)
        checks = QHBoxLayout()
        self.fill_holes_check = QCheckBox("Fill holes")
        self.split_check = QCheckBox("Split touching")
        self.split_check.setToolTip("Separate touching roundish objects (distance-transform watershed; "
                                    "seeds at least half an object diameter apart).")
        self.instances_check = QCheckBox("Instances")
        self.instances_check.setToolTip("Give every object its own label (connected components).")
        for check in (self.fill_holes_check, self.split_check, self.instances_check):
            checks.addWidget(check)
        pp_form.addRow(checks)
        self.diameter_spin = QDoubleSpinBox()
        self.diameter_spin.setRange(0.0, 10_000.0)
        self.diameter_spin.setDecimals(1)
        self.diameter_spin.setSuffix(" px")
        self.diameter_spin.setSpecialValueText("auto")
        self.diameter_spin.setKeyboardTracking(False)
        self.diameter_spin.setToolTip("Typical object diameter for 'Split touching': seeds closer than "
                                      "about half of it merge, so one oval object is not cut in two. "
                                      "auto: the model's object size, else measured on the mask.")
        pp_form.addRow("Object diameter", self.diameter_spin)
        self.objects_combo = objects_choice(self.engine, self)
        self.objects_label = QLabel("Objects")
        pp_form.addRow(self.objects_label, self.objects_combo)
        layout.addWidget(self.pp_box)

        self.truth_box = GroundTruthBox(self.viewer, self.engine, self)
        self.truth_combo = self.truth_box.truth_combo
        self.region_combo = self.truth_box.region_combo
        self.plot = CurvePlot(self)
        self.truth_box.layout().addRow(self.plot)
        self.readout = QLabel()
        self.readout.setToolTip("Pixel metrics of the mask on screen. '(raw)': while the slider moves, "
                                "of the raw threshold the preview shows; the post-processed mask's "
                                "follow when you release or pause.")
        self.readout.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.truth_box.layout().addRow(self.readout)
        layout.addWidget(self.truth_box)

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
        state = self.state
        bind_layer_choice(self.prob_combo, state, "probability",
                          lambda layer: setattr(state, "probability", layer))
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(self.engine.settle)
        self.spin.valueChanged.connect(self._on_spin)
        self.best_button.clicked.connect(self.best_threshold)
        self.otsu_button.clicked.connect(self.otsu)
        self.default_button.clicked.connect(self.model_default)
        self.save_button.clicked.connect(self.save_to_model)
        self.pp_box.toggled.connect(self._on_processing)
        self.min_size_spin.valueChanged.connect(lambda v: state.set_postprocess(min_size=int(v)))
        self.fill_holes_check.toggled.connect(lambda v: state.set_postprocess(fill_holes=bool(v)))
        self.split_check.toggled.connect(lambda v: state.set_postprocess(split_touching=bool(v)))
        self.instances_check.toggled.connect(lambda v: state.set_postprocess(instances=bool(v)))
        self.diameter_spin.valueChanged.connect(
            lambda v: state.set_postprocess(object_diameter=float(v) if v > 0 else None))
        self.plot.threshold_picked.connect(self.set_threshold)
        pairs = [
            (self.engine.changed, self._render),
            (self.engine.ticked, self._on_tick),
            (state.events, self._on_state),
        ]
        dock = self

        def _destroyed() -> None:
            dock._alive = False
            dock.aux_runner.cancel()
            dock.points_runner.cancel()

        connect_for_lifetime(self, pairs, _destroyed)

    # -- state ---------------------------------------------------------------
    @property
    def threshold(self) -> float:
        """The current threshold (exact; foreground where probability > threshold)."""
        return float(self.state.threshold)

    @property
    def probability_layer(self) -> Any:
        """The probability layer the dock is bound to, or None."""
        return self.state.probability

    @property
    def curve(self) -> ThresholdCurve | None:
        """The raw threshold curve against the ground truth, once built."""
        return self.engine.whole_curve

    def postprocess(self) -> PostProcess:
        """The post-processing of the mask on screen (all off when post-processing is unticked)."""
        return self.state.effective_postprocess() or PostProcess()

    def set_postprocess(self, pp: PostProcess) -> None:
        """Use ``pp`` (and tick post-processing)."""
        with self.state.events.blocked():
            self.state.processing = True
        self.state.postprocess = pp
        self._render_controls()

    def mask_layer(self) -> Any:
        """The ``<image> mask`` Labels layer of the bound probability layer, or None."""
        prob = self.state.probability
        if prob is None:
            return None
        return outputs.find_output(self.viewer, outputs.MASK_ROLE, outputs.base_name(prob))

    def preview_layer(self) -> Any:
        """The ``<image> mask preview`` layer of the bound probability layer, or None."""
        prob = self.state.probability
        if prob is None:
            return None
        return outputs.find_output(self.viewer, previews.MASK_PREVIEW_ROLE, outputs.base_name(prob))

    @property
    def busy(self) -> bool:
        """True while a mask, curve or automatic threshold is being computed."""
        return self.aux_runner.busy or self.points_runner.busy or self.engine.busy

    # -- controls ---------------------------------------------------------------
    def set_threshold(self, value: float) -> None:
        """Make ``value`` (clipped to [0, 1]) the threshold."""
        self.state.set_threshold(value)

    def refresh_mask(self) -> None:
        """Make the mask now (as when the slider is released)."""
        self.engine.settle()

    def _on_slider(self, step: int) -> None:
        self.set_threshold(slider_threshold(step))

    def _on_spin(self, value: float) -> None:
        if abs(value - self.state.threshold) > 0.5e-6:  # not the rounded display of the current value
            self.set_threshold(value)

    def _on_processing(self, on: bool) -> None:
        self.state.processing = bool(on)

    def _on_state(self, info: Any) -> None:
        name = getattr(getattr(info, "signal", None), "name", "")
        if self._alive and name != "threshold":  # threshold ticks: see _on_tick (the hot path)
            self._render_controls()

    def _render_controls(self) -> None:
        """Show the state's threshold and post-processing in the controls (no signals back)."""
        state = self.state
        pp = state.postprocess
        widgets = (self.slider, self.spin, self.pp_box, self.min_size_spin, self.fill_holes_check,
                   self.split_check, self.instances_check, self.diameter_spin)
        for w in widgets:
            w.blockSignals(True)
        try:
            self.slider.setValue(slider_step(state.threshold))
            self.spin.setValue(state.threshold)
            self.pp_box.setChecked(bool(state.processing))
            self.min_size_spin.setValue(int(pp.min_size))
            self.fill_holes_check.setChecked(bool(pp.fill_holes))
            self.split_check.setChecked(bool(pp.split_touching))
            self.instances_check.setChecked(bool(pp.instances))
            diameter = getattr(pp, "object_diameter", None)
            self.diameter_spin.setValue(float(diameter or 0.0))
        finally:
            for w in widgets:
                w.blockSignals(False)
        self.diameter_spin.setEnabled(bool(pp.split_touching))
        self.pp_box.setEnabled(not state.raw_only)
        self.pp_box.setToolTip(
            "A map larger than memory is thresholded raw: post-processing needs whole objects. "
            "segloop predict --threshold T post-processes it block by block." if state.raw_only else
            "Untick to see and score the raw mask (probability > threshold).")
        inp = self.engine.inputs
        stack = inp is not None and inp.is_stack
        self.objects_combo.setVisible(stack)
        self.objects_label.setVisible(stack)
        self.min_size_spin.setSuffix(" voxels" if stack and state.object_dims == 3 else " px")

    # -- read-outs -----------------------------------------------------------------
    def _report(self, message: str, level: str = "error") -> None:
        """Status line, and one notification per distinct message (not one per slider step)."""
        notify_once(self.status, self._reported, message, level)

    def _on_tick(self, value: float) -> None:
        if not self._alive:
            return
        self._show_threshold(value)
        self._show_metrics()

    def _show_threshold(self, value: float) -> None:
        """Only the slider and the number field (every tick)."""
        step = slider_step(value)
        if self.slider.value() != step:
            self.slider.blockSignals(True)
            self.slider.setValue(step)
            self.slider.blockSignals(False)
        if abs(self.spin.value() - value) > 0.5e-6:
            self.spin.blockSignals(True)
            self.spin.setValue(value)
            self.spin.blockSignals(False)

    def _render(self) -> None:
        """Redraw from the engine (inputs, curve, mask, score)."""
        if not self._alive:
            return
        engine, state = self.engine, self.state
        inp = engine.inputs
        prob = state.probability
        enabled = prob is not None
        for w in (self.slider, self.spin, self.otsu_button, self.default_button, self.save_button):
            w.setEnabled(enabled)
        self.best_button.setEnabled(enabled and inp is not None and inp.truth is not None)
        self._render_controls()
        if prob is None:
            self._show_note(engine.message)
            self.plot.set_curve(None, "Choose a probability map.")
            self.readout.setText("")
            self.mask_info.setText("")
            return
        curve = engine.whole_curve
        if inp is None or inp.truth is None:
            self.plot.set_curve(None, "Choose a ground truth to see Dice, precision and recall "
                                      "against the threshold.")
            self.readout.setText("")
        elif curve is None:
            self.plot.set_curve(None, f"Computing the curve…{engine.progress_text()}")
        elif self.plot_curve_source() is not curve:
            self.plot.set_curve(curve.curve())
            self._plotted = curve
            if curve.n_positive == 0:
                self._report(f"The ground truth {inp.truth.name!r} has no foreground pixels in the "
                             f"{inp.region.label}: Dice and IoU are 1 only for an empty mask, "
                             "precision and recall read n/a where undefined.", "warning")
        notes = [engine.planes_text()] if engine.planes_text() else []
        if engine.failure:
            notes.append(engine.failure)
        self._show_note(" ".join(notes))
        self._show_metrics()
        mask = engine.mask
        if mask is not None and engine.mask_current and inp is not None and inp.kind == "probability":
            steps = [f"threshold {mask.threshold:.6g}"]
            pp = mask.postprocess
            if pp is None:
                steps.append("no post-processing" if postprocess_active(state.postprocess) else "raw")
            else:
                steps.append("post-processed")
                if pp.instances:
                    steps.append(f"{int(mask.data.max(initial=0))} objects")
            if inp.is_stack and state.object_dims == 3:
                steps.append("3-D objects")
            self.mask_info.setText(f"Layer '{inp.base} mask': " + ", ".join(steps) + ".")
        self._request_points()
        if self._want_best and curve is not None:
            self.best_threshold()

    def _points_wanted(self) -> Any:
        """Identity of the post-processed curve to plot now (None: no post-processing or no truth)."""
        engine, state = self.engine, self.state
        inp = engine.inputs
        pp = state.effective_postprocess()
        if inp is None or inp.truth is None or inp.kind != "probability" or pp is None:
            return None
        return (id(inp.prediction), self.curves.version(inp.prediction), pp, int(state.object_dims),
                id(inp.truth), self.curves.version(inp.truth), inp.region.key, inp.planes)

    def _request_points(self) -> None:
        """Plot the post-processed mask's Dice (made in a worker when inputs or post-processing change)."""
        key = self._points_wanted()
        if key == self._points_key:
            return
        self._points_key = key
        self.plot.set_processed(None)
        if key is None:
            self.points_runner.cancel()
            return
        inp, state = self.engine.inputs, self.state
        self.points_runner.request(layer_array(inp.prediction), layer_array(inp.truth),
                                   state.effective_postprocess(), inp.region.mask, inp.planes,
                                   int(state.object_dims), key)

    def _apply_points(self, result: Any) -> None:
        if not self._alive or isinstance(result, JobFailed):
            return
        key, points = result
        if key == self._points_key:
            self.plot.set_processed(points)

    def _show_note(self, note: str) -> None:
        """Show the engine's note in the status line, unless a newer message of the dock's is there."""
        previous = getattr(self, "_note", "")
        if note != previous and (self.status.text() in ("", previous) or note):
            self.status.setText(note)
        self._note = note

    def plot_curve_source(self) -> Any:
        """The curve the plot shows (None if none)."""
        return getattr(self, "_plotted", None) if self.plot.has_curve else None

    def _show_metrics(self) -> None:
        engine = self.engine
        self.plot.set_threshold(self.state.threshold)
        inp = engine.inputs
        if inp is None or inp.truth is None:
            return
        if engine.score_current:
            ev = engine.score.evaluation
            m = getattr(ev, "whole", None) or ev
            m = m.pixel
            what = "" if engine.mask is None or engine.mask.postprocess is None else " (post-processed)"
        else:
            m = engine.live_pixels("whole")
            what = " (raw)" if self.state.effective_postprocess() else ""
            if m is None:
                self.readout.setText("Dice … · IoU … · precision … · recall …")
                return
        self.readout.setText(
            f"Dice {format_value(m.dice, 3)} · IoU {format_value(m.iou, 3)} · "
            f"precision {format_value(m.precision, 3)} · recall {format_value(m.recall, 3)}{what}"
        )

    # -- automatic thresholds ---------------------------------------------------
    def best_threshold(self) -> None:
        """Set the best-Dice threshold of the mask on screen against the ground truth (in a worker).

        Without post-processing it is the exact optimum over every probability
        value (from the sorted curve); with post-processing, the mask's Dice is
        searched over thresholds (the post-processing changes with each).
        """
        self._want_best = False
        engine, state = self.engine, self.state
        inp = engine.inputs
        if state.probability is None:
            self._report("Choose a probability map first.")
            return
        if inp is None or inp.truth is None:
            self._report("Choose a ground-truth layer first: the best threshold is the one with the "
                         "highest Dice against it.")
            return
        curve = engine.whole_curve
        if curve is None:
            self._want_best = True
            self.status.setText("Computing the best threshold…")
            return
        pp = state.effective_postprocess()
        if pp is None and isinstance(curve, BinnedCurve):
            self.status.setText("Computing the exact best threshold (one more pass over the map)…")
            self.aux_runner.request(large_best_job, curve, Unread(layer_array(inp.prediction)),
                                    Unread(layer_array(inp.truth)))
            return
        if pp is None:
            self.status.setText("Computing the best threshold…")
            self.aux_runner.request(best_job, curve)
            return
        self.status.setText("Computing the best threshold of the post-processed mask…")
        self.aux_runner.request(best_processed_job, layer_array(inp.prediction), layer_array(inp.truth), pp,
                                inp.region.mask, inp.planes, int(state.object_dims), curve)

    def otsu(self) -> None:
        """Set Otsu's threshold of the probabilities (in the region and the predicted planes)."""
        inp = self.engine.inputs
        if self.state.probability is None or inp is None or inp.kind != "probability":
            self._report("Choose a probability map first.")
            return
        curve = self.engine.whole_curve
        if isinstance(curve, BinnedCurve):  # a map larger than memory: Otsu of its histogram, at once
            self._apply_aux(curve.otsu())
            return
        self.status.setText("Computing Otsu's threshold…")
        if inp.large:
            self.aux_runner.request(large_otsu_job, Unread(layer_array(inp.prediction)))
            return
        self.aux_runner.request(otsu_job, layer_array(inp.prediction), inp.region.mask, inp.planes)

    def _apply_aux(self, result: Any) -> None:
        if not self._alive or self.state.probability is None:
            return
        if isinstance(result, JobFailed):
            self._report(result.message)
            return
        if isinstance(result, float):
            self.set_threshold(result)
            self.status.setText(f"Otsu's threshold: {result:.6g}.")
            return
        if isinstance(result, ProcessedBest):
            self.best = result
            self.plot.set_best(result.threshold)
            self.set_threshold(result.threshold)
            self.status.setText(
                f"Best Dice {result.score:.4f} of the post-processed mask at threshold "
                f"{result.threshold:.6g} (searched over {len(result.points)} thresholds; without "
                "post-processing Best is exact).")
            return
        self.best = result
        self.plot.set_best(result.threshold)
        self.set_threshold(result.threshold)
        if not result.exact:
            self.status.setText(
                f"Best Dice {result.score:.4f} at threshold {result.threshold:.6g}: too many probabilities "
                "lie near the optimum to refine them in memory, so this is the best of those refined and "
                "of the slider's steps (the exact optimum may score slightly higher).")
            return
        self.status.setText(
            f"Best Dice {result.score:.4f} at threshold {result.threshold:.6g} (exact optimum over every "
            f"probability value; {_range_text(result.threshold, result.upper)})."
        )

    def model_default(self) -> None:
        """Set the threshold and post-processing stored with the model."""
        default = model_default(self.session)
        if default.postprocess is not None:
            self.set_postprocess(default.postprocess)
        self.set_threshold(default.threshold)
        self.engine.settle()
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
            settings = set_bundle_threshold(source, self.threshold, pp)
        except SegloopError as exc:
            show_error(str(exc))
            self.status.setText(str(exc))
            return False
        bundle.settings = settings
        self.session.model_changed.emit(bundle)
        text = (f"Saved threshold {self.threshold:.6g} and post-processing to {source}. "
                f"`segloop predict --model {source} --threshold auto` gives this mask.")
        show_info(text)
        self.status.setText(text)
        return True
