"""The evaluation engine of one viewer: the evaluation state turned into layers and metrics.

One engine per viewer (``engine_for(session)``) follows the session's
:class:`~napari_segloop.widgets.eval_state.EvaluationState` and keeps, for
the Threshold and Confusion docks alike:

* the **inputs** read from the layers (prediction, ground truth, region, and
  the predicted planes of a partly predicted stack: only those are scored);
* the **mask on screen** (threshold, then post-processing, 2-D or 3-D),
  written to ``<image> mask``;
* the **score** of that mask (confusion codes, written to ``<image>
  confusion``, and pixel metrics per slice and for the scored planes), and
  then its **object metrics**, which may follow later ("updating");
* the raw threshold curves (:class:`~napari_segloop.widgets.evaluation.CurveStore`)
  and the live previews that follow every slider tick.

All of it runs in one latest-wins worker whose stages arrive in turn: the
mask, then the confusion image with pixel metrics, then the objects. A
threshold tick only moves the previews' contrast limits; the worker starts
when the slider pauses or is released. Every metric the docks show is
computed from the mask the user sees (``make_mask`` with the same
post-processing ``segloop predict --threshold auto`` uses), unless the user
switched post-processing off.

Which layers are visible follows :attr:`EvaluationState.show`: the mask, the
errors (confusion) or the probability map, never two overlays blended, so the
colours on screen are those of the legend. The previews are helper layers,
hidden unless the slider moves, and removed when the last dock closes.
"""

from __future__ import annotations

import weakref
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QObject, QTimer

from napari_segloop.core.errors import InputError
from napari_segloop.core.evaluation import confusion_image, evaluate, evaluate_stack
from napari_segloop.core.evaluation.histograms import BLOCK_NOTE, count_pixels
from napari_segloop.core.evaluation.lazy_views import confusion_levels, mask_levels
from napari_segloop.core.evaluation.results import Evaluation, StackEvaluation
from napari_segloop.core.events import Progress
from napari_segloop.core.masks import PostProcess, make_mask, preload
from napari_segloop.widgets import outputs, previews
from napari_segloop.widgets.eval_state import (
    REGION_ALL,
    REGION_VIEW,
    EvaluationState,
    default_object_dims,
)
from napari_segloop.widgets.evaluation import (
    CurveStore,
    LatestRunner,
    RegionChoice,
    camera_events,
    flat_index,
    model_default,
    read_region,
    slice_index,
    truth_problem,
)
from napari_segloop.widgets.jobs import JobFailed
from napari_segloop.widgets.layer_io import layer_array
from napari_segloop.widgets.pickers import is_labels, is_probability_layer
from napari_segloop.widgets.session import Session

#: What the docks say about a map larger than memory (with its scores).
LARGE_NOTE = ("A map larger than memory: scored block by block from histograms (the whole map, raw "
              "threshold; no objects, regions or post-processing). Best is the best slider step.")

#: Milliseconds without a threshold change after which the mask is made and scored.
PAUSE_MS = 200
#: Milliseconds to wait after a layer is edited (or the camera moves) before reading the inputs again.
EDIT_PAUSE_MS = 300


# ---------------------------------------------------------------------- results


@dataclass(frozen=True)
class Inputs:
    """The layers and region the engine scores, read and checked once.

    Attributes
    ----------
    prediction : napari layer
        The probability layer, or the Labels layer scored instead (``kind``).
    kind : {"probability", "labels"}
    base : str
        Name that names the outputs (``<base> mask``, ``<base> confusion``).
    shape : tuple of int
    truth : napari layer or None
        The ground truth, when it can be scored.
    region : RegionChoice
    planes : tuple of int or None
        Flat indices of the predicted planes of a partly predicted stack (None: all).
    n_planes : int
        Planes of the stack (1 for an image).
    problem : str or None
        Why the ground truth cannot be scored (shown to the user).
    large : bool
        The map is larger than memory: scored block by block from histograms,
        as a whole (no per-slice scores, no region, no post-processing), and
        its mask and confusion image are lazy pyramids.
    """

    prediction: Any
    kind: str
    base: str
    shape: tuple[int, ...]
    truth: Any = None
    region: RegionChoice = field(default_factory=RegionChoice)
    planes: tuple[int, ...] | None = None
    n_planes: int = 1
    problem: str | None = None
    large: bool = False

    @property
    def is_stack(self) -> bool:
        """True for a stack of planes scored slice by slice (a map larger than memory is one whole)."""
        return len(self.shape) > 2 and not self.large

    @property
    def scored_planes(self) -> int:
        """How many planes are scored."""
        return self.n_planes if self.planes is None else len(self.planes)


@dataclass(frozen=True)
class MaskStage:
    """The mask on screen for one threshold, post-processing and object dimension."""

    key: tuple
    threshold: float | None
    postprocess: PostProcess | None
    object_dims: int
    data: np.ndarray


@dataclass(frozen=True)
class ScoreStage:
    """Confusion codes and pixel metrics of a mask against the ground truth."""

    key: tuple
    codes: np.ndarray
    evaluation: Evaluation | StackEvaluation


@dataclass(frozen=True)
class ObjectStage:
    """The full evaluation (pixels and objects) of a mask."""

    key: tuple
    evaluation: Evaluation | StackEvaluation


@dataclass(frozen=True)
class LargeMap:
    """What the worker needs to score a map larger than memory (nothing here is read whole).

    Attributes
    ----------
    levels : tuple of arrays
        The probability layer's levels (one for a single-scale layer).
    truth_levels : tuple of arrays
        The ground truth's levels (one for a single-scale layer); empty without one.
    curve : BinnedCurve or None
        The map's curve, when built: a threshold on a slider step is then
        scored from it without another pass.
    """

    levels: tuple[Any, ...]
    truth_levels: tuple[Any, ...] = ()
    curve: Any = None


def _pyramid(levels: list[Any]) -> Any:
    """A multiscale layer's data (a list), or the one array of a single-scale one."""
    return levels if len(levels) > 1 else levels[0]


def large_evaluation_job(large: LargeMap, threshold: float, mask: Any,
                         keys: tuple[tuple, tuple | None]) -> Generator[Any, None, Any]:
    """Worker job for a map larger than memory: the lazy mask, then the exact pixel counts.

    The mask and confusion pyramids are dask expressions (napari computes the
    tiles it draws); the counts come from the curve at a slider step, else
    from one pass over the blocks (yielding progress). There are no object
    metrics: the returned :class:`ObjectStage` holds the pixel metrics.
    """
    mask_key, score_key = keys
    yield None
    if mask is None:
        yield MaskStage(mask_key, threshold, None, 2, _pyramid(mask_levels(large.levels, threshold)))
    if not large.truth_levels or score_key is None:
        return None
    curve = large.curve
    if curve is not None and curve.known(threshold):  # a slider step, or the refined best
        pixels = curve.metrics(threshold)
    else:
        pixels = yield from count_pixels(large.levels[0], large.truth_levels[0], threshold)
    codes = _pyramid(confusion_levels(large.levels, large.truth_levels[0], threshold,
                                      truth_levels=large.truth_levels))
    evaluation = Evaluation(pixels, None, (BLOCK_NOTE,))
    yield ScoreStage(score_key, codes, evaluation)
    return ObjectStage(score_key, evaluation)


def evaluation_job(
    prediction: Any,
    threshold: float | None,
    postprocess: PostProcess | None,
    object_dims: int,
    mask: np.ndarray | None,
    truth: Any,
    region: np.ndarray | None,
    planes: tuple[int, ...] | None,
    keys: tuple[tuple, tuple | None],
) -> Generator[Any, None, Any]:
    """Worker job: the mask (unless given), then its confusion codes and pixel metrics, then objects.

    Yields :class:`MaskStage` and :class:`ScoreStage` as they are ready and
    returns :class:`ObjectStage` (or None without ground truth), so the mask
    and the overlay are drawn before the slower object metrics.
    """
    if isinstance(prediction, LargeMap):
        return (yield from large_evaluation_job(prediction, float(threshold), mask, keys))
    mask_key, score_key = keys
    yield None
    if mask is None:
        pred = np.asarray(prediction)
        if threshold is None:  # a Labels prediction is scored as it is
            mask = pred
        else:
            mask = make_mask(pred.astype(np.float32, copy=False), threshold, postprocess,
                             object_dims=object_dims)
        yield MaskStage(mask_key, threshold, postprocess, object_dims, mask)
    if truth is None or score_key is None:
        return None
    truth = np.asarray(truth)
    stack = mask.ndim > 2
    codes = confusion_image(mask, truth, None, region, planes=planes)
    yield None
    if stack:
        pixels: Evaluation | StackEvaluation = evaluate_stack(mask, truth, None, region, objects=False,
                                                              planes=planes)
    else:
        pixels = evaluate(mask, truth, None, region, objects=False)
    yield ScoreStage(score_key, codes, pixels)
    if stack:
        full: Evaluation | StackEvaluation = evaluate_stack(
            mask, truth, None, region, objects=True, object_dims=object_dims, planes=planes)
    else:
        full = evaluate(mask, truth, None, region, objects=True)
    return ObjectStage(score_key, full)


def preview_job(prob: Any, truth: Any, region: np.ndarray | None, planes: tuple[int, ...] | None,
                key: tuple) -> Generator[None, None, tuple[tuple, np.ndarray, np.ndarray]]:
    """Worker job: the two float32 arrays of the confusion preview (NaN outside the scored planes)."""
    yield None
    on_truth, on_background = previews.confusion_preview_arrays(np.asarray(prob), np.asarray(truth), region)
    if planes is not None and on_truth.ndim > 2:
        keep = np.zeros(int(np.prod(on_truth.shape[:-2])), dtype=bool)
        keep[list(planes)] = True
        for arr in (on_truth, on_background):
            arr.reshape(-1, *arr.shape[-2:])[~keep] = np.nan
    return key, on_truth, on_background


def _levels(layer: Any) -> list[Any]:
    """The arrays of a layer, largest first (one for a single-scale layer); none is read."""
    return list(layer.data) if getattr(layer, "multiscale", False) else [layer.data]


def predicted_planes(session: Session, prob_layer: Any) -> tuple[int, ...] | None:
    """Flat indices of the predicted planes of a partly predicted stack (None: all planes count)."""
    entry = session.probability_of_layer(prob_layer)
    if entry is None or entry.complete or not entry.slices:
        return None
    shape = tuple(layer_array(prob_layer).shape)
    if len(shape) <= 2:
        return None
    planes = sorted({int(np.ravel_multi_index(tuple(int(i) for i in index), shape[:-2]))
                     for index in entry.slices})
    return tuple(planes)


# ---------------------------------------------------------------------- the engine


class EvaluationEngine(QObject):
    """Turns the session's evaluation state into the mask, confusion layers and metrics.

    Get it with :func:`engine_for`; docks call :meth:`attach` when they
    open (the previews are removed when the last one closes) and read the
    properties below when :attr:`changed` or :attr:`ticked` is emitted.
    """

    #: Emitted after inputs, results, problems or visibility changed: views redraw from the engine.
    changed = Signal()
    #: Emitted with the threshold on every threshold change (views update live read-outs only).
    ticked = Signal(float)

    def __init__(self, session: Session) -> None:
        super().__init__()
        preload()  # before two workers post-process at once (see core.masks.preload)
        self._session = weakref.ref(session)
        self.state: EvaluationState = session.evaluation
        self.curves: CurveStore = session.shared("curves", CurveStore)
        self.runner = LatestRunner(evaluation_job, self._on_returned, self, on_yield=self._on_yielded)
        self.preview_runner = LatestRunner(preview_job, self._on_previews, self)
        self.inputs: Inputs | None = None
        self.message = "Choose a probability map: run the Predict dock, or open a floating-point " \
                       "image with values in [0, 1]."
        self.mask: MaskStage | None = None
        self.score: ScoreStage | None = None
        self.objects: ObjectStage | None = None
        self.failure: str | None = None
        self.whole_curve: Any = None
        self.slice_curve: Any = None
        #: The last progress of a block-by-block pass (a curve, or the counts of a map larger than memory).
        self.progress: Progress | None = None
        self._filling = False  # the map larger than memory is still being predicted
        self.index: tuple[int, ...] | None = None
        self._curve_keys: dict[str, Any] = {}
        self._preview_key: Any = None
        self._requested: tuple[Any, Any] = (None, None)
        self._remembered: weakref.WeakKeyDictionary[Any, tuple] = weakref.WeakKeyDictionary()
        self._views: set[int] = set()
        self._reported: set[str] = set()
        self._confusion_key: Any = None
        self._pause = QTimer(self)
        self._pause.setSingleShot(True)
        self._pause.setInterval(PAUSE_MS)
        self._pause.timeout.connect(self.update)
        self._inputs_timer = QTimer(self)
        self._inputs_timer.setSingleShot(True)
        self._inputs_timer.setInterval(EDIT_PAUSE_MS)
        self._inputs_timer.timeout.connect(self.read_inputs)
        ev = self.state.events
        ev.probability.connect(self._on_probability)
        for name in ("labels", "truth", "truth_confirmed", "region"):
            getattr(ev, name).connect(self._on_inputs)
        ev.threshold.connect(self._on_threshold)
        for name in ("postprocess", "processing", "object_dims"):
            getattr(ev, name).connect(self._on_mask_settings)
        ev.show.connect(self._on_show)
        self.curves.data_changed.connect(self._on_layer_data)
        self.curves.exact_ready.connect(self._on_exact_ready)
        self.curves.progressed.connect(self._on_curve_progress)
        session.probabilities_changed.connect(self._on_probabilities)
        viewer = session.viewer
        if viewer is not None:
            viewer.layers.events.removed.connect(self._on_layer_removed)
            viewer.dims.events.current_step.connect(self._on_dims)
            camera = camera_events(viewer)
            camera.center.connect(self._on_camera)
            camera.zoom.connect(self._on_camera)

    # -- views ---------------------------------------------------------------------
    @property
    def session(self) -> Session | None:
        """The session (None once the viewer is gone)."""
        return self._session()

    @property
    def viewer(self) -> Any:
        """The viewer (None once it is gone)."""
        session = self._session()
        return None if session is None else session.viewer

    def attach(self, view: Any) -> None:
        """Register a dock as a view; when the last one is destroyed, the previews go with it."""
        key = id(view)
        self._views.add(key)
        view.destroyed.connect(lambda *_: self._detach(key))
        if self.inputs is None:
            self.read_inputs()

    def _detach(self, key: int) -> None:
        self._views.discard(key)
        if not self._views:
            self.runner.cancel()
            self.preview_runner.cancel()
            self._pause.stop()
            self._inputs_timer.stop()
            self._remove_previews()

    @property
    def busy(self) -> bool:
        """True while anything is being computed or waits to be."""
        return (self.runner.busy or self.preview_runner.busy or self._pause.isActive()
                or self._inputs_timer.isActive() or self.curves.building)

    # -- what is current -------------------------------------------------------------
    def mask_key(self) -> tuple | None:
        """Identity of the mask the state asks for (None without a prediction)."""
        inp = self.inputs
        if inp is None:
            return None
        pred = inp.prediction
        base = (id(pred), self.curves.version(pred))
        if inp.kind == "labels":
            return ("labels", *base)
        return ("probability", *base, *self.state.mask_key())

    def score_key(self) -> tuple | None:
        """Identity of the score the state asks for (None without a usable ground truth)."""
        inp = self.inputs
        if inp is None or inp.truth is None:
            return None
        return (self.mask_key(), id(inp.truth), self.curves.version(inp.truth), inp.region.key, inp.planes)

    @property
    def mask_current(self) -> bool:
        """True when :attr:`mask` is the mask the state asks for."""
        return self.mask is not None and self.mask.key == self.mask_key()

    @property
    def score_current(self) -> bool:
        """True when :attr:`score` scores the mask and ground truth the state asks for."""
        key = self.score_key()
        return key is not None and self.score is not None and self.score.key == key

    @property
    def objects_current(self) -> bool:
        """True when :attr:`objects` belongs to the current score."""
        key = self.score_key()
        return key is not None and self.objects is not None and self.objects.key == key

    def live_pixels(self, scope: str) -> Any:
        """Pixel metrics of the raw threshold now (``scope`` "whole" or "slice"), from the curves."""
        curve = self.whole_curve if scope == "whole" else self.slice_curve
        t = self.state.threshold
        if curve is None:
            return None
        if not curve.known(t) and not self.curves.is_exact(curve):
            return None  # off the slider steps: wait for the sorted copy (never block the GUI)
        return curve.metrics(t)

    def current_plane(self) -> int | None:
        """Flat index of the slice on screen (None for a 2-D image)."""
        inp = self.inputs
        if inp is None or not inp.is_stack or self.index is None:
            return None
        return flat_index(self.index, inp.shape)

    def plane_predicted(self, plane: int | None) -> bool:
        """True if the plane is scored (always for a 2-D image or a fully predicted stack)."""
        inp = self.inputs
        return inp is None or inp.planes is None or plane is None or plane in inp.planes

    def planes_text(self) -> str:
        """'3 of 60 slices predicted: only those are scored.' for a partly predicted stack, else ''."""
        inp = self.inputs
        if inp is not None and inp.large:
            if self._filling:
                return "Still being predicted: scored again when it is done. " + LARGE_NOTE
            return LARGE_NOTE
        if inp is None or inp.planes is None:
            return ""
        return (f"{len(inp.planes)} of {inp.n_planes} slices predicted: only those are scored "
                "(curve, Best, Otsu, whole stack).")

    # -- inputs --------------------------------------------------------------------------
    def _on_probability(self, layer: Any) -> None:
        """A new probability layer: restore what the user chose for it, else the model's defaults."""
        if layer is not None:
            remembered = self._remembered.get(layer)
            if remembered is None:
                session = self.session
                default = model_default(session) if session is not None else None
                threshold = 0.5 if default is None else default.threshold
                pp = PostProcess() if default is None or default.postprocess is None else default.postprocess
                remembered = (threshold, pp, True, default_object_dims(self.viewer, layer))
            threshold, pp, processing, dims = remembered
            with self.state.events.blocked():  # one read below, not one per field
                self.state.set_threshold(threshold)
                self.state.postprocess = pp
                self.state.processing = processing
                self.state.object_dims = dims
        self.read_inputs()

    def _remember(self) -> None:
        prob = self.state.probability
        if prob is not None:
            s = self.state
            self._remembered[prob] = (s.threshold, s.postprocess, s.processing, s.object_dims)

    def _on_inputs(self, *_: Any) -> None:
        self.read_inputs()

    def read_inputs(self) -> None:
        """Read and check the chosen layers and region, then request curves, previews and the score."""
        self._inputs_timer.stop()
        viewer = self.viewer
        state = self.state
        pred = state.labels if state.labels is not None else state.probability
        if viewer is None or pred is None:
            self.inputs = None
            self.message = ("Choose a probability map: run the Predict dock, or open a floating-point "
                            "image with values in [0, 1].")
            self.runner.cancel()
            self.changed.emit()
            return
        from napari_segloop.widgets.large_layers import is_large

        large = is_large(pred)
        if large and state.labels is not None:
            self.inputs = None
            self.message = (f"{pred.name!r} is a Labels layer larger than memory: the Confusion dock scores "
                            "such masks only as probability maps. Score it with segloop evaluate.")
            self._notify(self.message, "warning")
            self.runner.cancel()
            self.changed.emit()
            return
        if state.raw_only != large:
            state.raw_only = large
        kind = "labels" if state.labels is not None else "probability"
        shape = tuple(layer_array(pred).shape)
        planes = None
        session = self.session
        if kind == "probability" and session is not None and not large:
            planes = predicted_planes(session, pred)
        n_planes = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        truth = state.truth
        problem = None
        region = RegionChoice()
        if truth is not None:
            problem = truth_problem(truth, shape)
            if problem is None and truth is pred:
                problem = "The prediction and the ground truth are the same layer; choose the true objects."
            if problem is None and not is_labels(truth) and not state.truth_confirmed:
                problem = (f"{truth.name!r} is an image layer, not a Labels layer: every non-zero pixel "
                           "would count as a true object. Choose a Labels layer, or click 'Use anyway' if "
                           "it really holds the true objects.")
            if problem is None and large and state.region != REGION_ALL:
                problem = (f"{pred.name!r} is larger than memory: it is scored as a whole (regions need "
                           "the map in memory). Choose 'whole image' as the region.")
            if problem is None:
                try:
                    region = read_region(viewer, state.region, pred, shape, self._region_version())
                except InputError as exc:
                    problem = str(exc)
        usable = truth if truth is not None and problem is None else None
        self.inputs = Inputs(pred, kind, outputs.base_name(pred), shape, usable, region, planes,
                             n_planes, problem, large)
        entry = None if session is None or not large else session.probability_of_layer(pred)
        self._filling = entry is not None and not entry.complete
        self.progress = None
        self.message = problem or ""
        if problem:
            self._notify(problem, "warning" if "not a Labels layer" in problem else "error")
        self.index = slice_index(pred, viewer) if self.inputs.is_stack else None
        self.failure = None
        self._request_curves()
        self._request_previews()
        self.update()

    def _notify(self, message: str, level: str = "error") -> None:
        """A napari notification, once per distinct message (inputs are re-read often)."""
        from napari.utils.notifications import show_error, show_warning

        if message in self._reported:
            return
        self._reported.add(message)
        (show_warning if level == "warning" else show_error)(message)

    def _region_version(self) -> int:
        region = self.state.region
        return 0 if isinstance(region, str) or region is None else self.curves.version(region)

    # -- curves ------------------------------------------------------------------------
    def _request_curves(self) -> None:
        inp = self.inputs
        self.whole_curve = self.slice_curve = None
        self._curve_keys = {}
        if inp is None or inp.truth is None or inp.kind != "probability":
            return
        scopes: list[tuple[str, Any, Any]] = [("whole", None, inp.planes)]
        plane = self.current_plane()
        if inp.is_stack and self.plane_predicted(plane):
            scopes.append(("slice", self.index, None))
        for scope, index, planes in scopes:
            key = self.curves.key(inp.prediction, inp.truth, inp.region.key, index, planes)
            self._curve_keys[scope] = key
            value = self.curves.request(inp.prediction, inp.truth, inp.region, index,
                                        lambda v, s=scope, k=key: self._on_curve(s, k, v), planes=planes)
            if value is not None:
                self._on_curve(scope, key, value, emit=False)

    def _on_curve(self, scope: str, key: Any, value: Any, emit: bool = True) -> None:
        if self._curve_keys.get(scope) != key:
            return
        if isinstance(value, JobFailed):
            self.failure = value.message
        elif scope == "whole":
            self.whole_curve = value
        else:
            self.slice_curve = value
        if emit:
            self.changed.emit()

    def _on_curve_progress(self, progress: Progress) -> None:
        if self.inputs is not None and self.inputs.large and self.whole_curve is None:
            self.progress = progress
            self.changed.emit()

    def progress_text(self) -> str:
        """' (40%)' while a block-by-block pass runs, else ''."""
        p = self.progress
        if p is None or not p.total or p.done >= p.total:
            return ""
        return f" ({100 * p.done // p.total}%)"

    def _on_exact_ready(self, curve: Any) -> None:
        if curve is not None and (curve is self.whole_curve or curve is self.slice_curve):
            self.changed.emit()

    # -- the worker ---------------------------------------------------------------------
    def update(self) -> None:
        """Make and score the mask the state asks for, unless it is already on screen."""
        self._pause.stop()
        inp = self.inputs
        if inp is None:
            return
        mask_key, score_key = self.mask_key(), self.score_key()
        if self.mask_current and (score_key is None or self.objects_current):
            self._requested = (mask_key, score_key)
            self.apply_visibility()
            self.changed.emit()
            return
        mask = self.mask.data if self.mask_current else None
        truth = None if inp.truth is None or inp.large else layer_array(inp.truth)
        if inp.kind == "labels":
            threshold, pp, dims = None, None, int(self.state.object_dims)
        else:
            threshold, pp, dims = self.state.mask_key()
        self._requested = (mask_key, score_key)
        if inp.large:
            truth_levels = () if inp.truth is None else tuple(_levels(inp.truth))
            large = LargeMap(tuple(_levels(inp.prediction)), truth_levels, self.whole_curve)
            self.runner.request(large, threshold, None, 2, mask, None, None, None, (mask_key, score_key))
        else:
            self.runner.request(layer_array(inp.prediction), threshold, pp, dims, mask, truth,
                                inp.region.mask, inp.planes, (mask_key, score_key))
        self.changed.emit()

    def _on_yielded(self, value: Any) -> None:
        if isinstance(value, Progress):
            self.progress = value
            self.changed.emit()
            return
        if isinstance(value, MaskStage):
            if value.key != self.mask_key():
                return
            self.mask = value
            self._write_mask(value)
        elif isinstance(value, ScoreStage):
            if value.key != self.score_key():
                return
            self.score = value
            if self.shown() == "errors":
                self._write_confusion(value)
        self.apply_visibility()
        self.changed.emit()

    def _on_returned(self, value: Any) -> None:
        if isinstance(value, JobFailed):
            self.failure = value.message
        elif isinstance(value, ObjectStage) and value.key == self.score_key():
            self.objects = value
        self.changed.emit()

    def _write_mask(self, result: MaskStage) -> None:
        inp, viewer, session = self.inputs, self.viewer, self.session
        if inp is None or viewer is None or inp.kind != "probability":
            return
        instances = result.postprocess is not None and result.postprocess.instances
        outputs.write_labels(
            viewer, outputs.MASK_ROLE, inp.base, result.data, inp.prediction,
            colormap=outputs.mask_labels_colormap(instances),
            colormap_key="instances" if instances else "binary", visible=False,
        )
        if session is not None and result.threshold is not None:
            session.set_mask_settings(result.threshold, result.postprocess or PostProcess())

    def _write_confusion(self, result: ScoreStage) -> Any:
        inp, viewer = self.inputs, self.viewer
        if inp is None or viewer is None:
            return None
        self._confusion_key = result.key
        return outputs.write_labels(
            viewer, outputs.CONFUSION_ROLE, inp.base, result.codes, inp.prediction,
            colormap=outputs.confusion_labels_colormap(), colormap_key="confusion", opacity=0.8,
            visible=False,
        )

    # -- threshold ticks and settings ------------------------------------------------------
    def _on_threshold(self, value: float) -> None:
        """One tick: previews and live read-outs at once; the mask and its score after a pause."""
        self._remember()
        if self.inputs is None or self.inputs.kind != "probability":
            self.ticked.emit(float(value))
            return
        self.runner.cancel()
        self.apply_visibility()  # the previews to show get the new contrast limits there
        self.ticked.emit(float(value))
        self._pause.start()

    def settle(self) -> None:
        """The slider was released: make the mask now."""
        self._pause.stop()
        self.update()

    def _on_mask_settings(self, *_: Any) -> None:
        self._remember()
        if self.inputs is not None and self.inputs.kind == "probability":
            self.runner.cancel()
            self.apply_visibility()
            self.update()

    def _on_show(self, *_: Any) -> None:
        self._request_previews()
        self.apply_visibility()
        self.changed.emit()

    # -- layer and viewer events --------------------------------------------------------------
    def _on_layer_removed(self, event: Any) -> None:
        layer = getattr(event, "value", None)
        state = self.state
        for name in ("probability", "labels", "truth"):
            if getattr(state, name) is layer:
                if name == "truth":
                    state.set_truth(None)
                else:
                    setattr(state, name, None)
        if state.region is layer:
            state.region = "all"

    def _on_layer_data(self, layer: Any) -> None:
        inp = self.inputs
        if inp is None:
            return
        if layer is inp.prediction or layer is inp.truth or layer is self.state.truth \
                or layer is self.state.region:
            self.runner.cancel()
            self._inputs_timer.start()

    def _on_probabilities(self, *_: Any) -> None:
        prob = self.state.probability
        if prob is not None and self.inputs is not None and self.inputs.large:
            session = self.session
            entry = None if session is None else session.probability_of_layer(prob)
            if entry is None:
                return
            if not entry.complete:
                self._filling = True
                self.changed.emit()
            elif self._filling:
                self._filling = False
                self.curves.bump(prob)  # its blocks were written since it was scored: score it again
            return
        if prob is not None and self.inputs is not None:
            session = self.session
            planes = None if session is None else predicted_planes(session, prob)
            if planes != self.inputs.planes:
                self._inputs_timer.start()

    def _on_camera(self, *_: Any) -> None:
        if self.state.region == REGION_VIEW and self.inputs is not None:
            self._inputs_timer.start()

    def _on_dims(self, *_: Any) -> None:
        inp, viewer = self.inputs, self.viewer
        if inp is None or viewer is None or not inp.is_stack:
            return
        index = slice_index(inp.prediction, viewer)
        if index == self.index:
            return
        self.index = index
        self.slice_curve = None
        self._request_curves()
        self.changed.emit()

    # -- previews and visibility ------------------------------------------------------------
    def _preview_layers(self) -> list[Any]:
        inp, viewer = self.inputs, self.viewer
        if inp is None or viewer is None:
            return []
        return [outputs.find_output(viewer, role, inp.base) for role in previews.PREVIEW_ROLES]

    def _ensure_mask_preview(self) -> Any:
        prob, viewer = self.state.probability, self.viewer
        if prob is None or viewer is None or not is_probability_layer(prob) \
                or (self.inputs is not None and self.inputs.large):
            return None
        return outputs.ensure_image(
            viewer, previews.MASK_PREVIEW_ROLE, outputs.base_name(prob), layer_array(prob), prob,
            colormap=previews.mask_colormap(), contrast_limits=previews.preview_limits(self.state.threshold),
            visible=False,
        )

    def _request_previews(self) -> None:
        inp = self.inputs
        if inp is None or inp.kind != "probability" or inp.truth is None or self.state.show != "errors" \
                or inp.large:  # previews are whole-map arrays: the lazy confusion image follows instead
            return
        key = (id(inp.prediction), self.curves.version(inp.prediction), id(inp.truth),
               self.curves.version(inp.truth), inp.region.key, inp.planes)
        viewer = self.viewer
        present = viewer is not None and all(
            outputs.find_output(viewer, role, inp.base) is not None
            for role in (previews.TRUTH_PREVIEW_ROLE, previews.BACKGROUND_PREVIEW_ROLE))
        if key == self._preview_key and present:
            return
        self._preview_key = None
        self.preview_runner.request(layer_array(inp.prediction), layer_array(inp.truth), inp.region.mask,
                                    inp.planes, key)

    def _on_previews(self, result: Any) -> None:
        inp, viewer = self.inputs, self.viewer
        if isinstance(result, JobFailed) or inp is None or viewer is None or inp.truth is None:
            return
        key, on_truth, on_background = result
        expected = (id(inp.prediction), self.curves.version(inp.prediction), id(inp.truth),
                    self.curves.version(inp.truth), inp.region.key, inp.planes)
        if key != expected:
            return
        limits = previews.preview_limits(self.state.threshold)
        outputs.ensure_image(viewer, previews.TRUTH_PREVIEW_ROLE, inp.base, on_truth, inp.prediction,
                             colormap=previews.truth_colormap(), contrast_limits=limits, visible=False,
                             opacity=0.8)
        outputs.ensure_image(viewer, previews.BACKGROUND_PREVIEW_ROLE, inp.base, on_background,
                             inp.prediction, colormap=previews.background_colormap(), contrast_limits=limits,
                             visible=False, opacity=0.8)
        self._preview_key = key
        self.apply_visibility()

    def _remove_previews(self) -> None:
        viewer = self.viewer
        if viewer is None:
            return
        for layer in list(viewer.layers):
            if outputs.role_of(layer) in previews.PREVIEW_ROLES:
                outputs.remove_output(viewer, layer)
        self._preview_key = None

    def shown(self) -> str:
        """What the viewer shows: the state's choice, or ``mask`` when there is nothing to compare."""
        show = self.state.show
        inp = self.inputs
        if show == "errors" and (inp is None or inp.truth is None):
            return "mask"
        return show

    def apply_visibility(self) -> None:
        """Show the one overlay the user chose (and its preview while the slider moves)."""
        inp, viewer = self.inputs, self.viewer
        if inp is None or viewer is None:
            return
        show = self.shown()
        mask_layer = outputs.find_output(viewer, outputs.MASK_ROLE, inp.base)
        confusion = outputs.find_output(viewer, outputs.CONFUSION_ROLE, inp.base)
        mask_preview, truth_preview, background_preview = self._preview_layers()
        probability = inp.kind == "probability"
        if probability and mask_preview is None and show == "mask" and not self.mask_current:
            mask_preview = self._ensure_mask_preview()
        if probability and outputs.role_of(inp.prediction) == outputs.PROBABILITY_ROLE:
            outputs.set_visible(inp.prediction, show == "probability")
        outputs.set_visible(mask_layer, probability and show == "mask" and self.mask_current)
        outputs.set_visible(mask_preview, probability and show == "mask" and not self.mask_current)
        limits = previews.preview_limits(self.state.threshold)
        wanted = [mask_preview] if probability and show == "mask" and not self.mask_current else []
        errors = show == "errors"
        if errors and probability and not self.score_current:
            wanted += [truth_preview, background_preview]
        for layer in wanted:  # hidden previews keep stale limits (napari redraws thumbnails per change)
            if layer is not None and tuple(layer.contrast_limits) != limits:
                layer.contrast_limits = limits
        if errors and self.score_current and (confusion is None or self._confusion_key != self.score.key):
            confusion = self._write_confusion(self.score)  # written when shown
        outputs.set_visible(confusion, errors and self.score_current)
        live = errors and probability and not self.score_current
        outputs.set_visible(truth_preview, live)
        outputs.set_visible(background_preview, live)
        if errors and probability and not self.score_current and truth_preview is None:
            self._request_previews()


def engine_for(session: Session) -> EvaluationEngine:
    """The evaluation engine of a session (made on first use)."""
    return session.shared("evaluation engine", EvaluationEngine)


def export_rows(engine: EvaluationEngine) -> list[dict[str, Any]]:
    """Metric rows of the current evaluation for CSV (every scored slice and the whole stack)."""
    inp = engine.inputs
    if inp is None or inp.truth is None:
        return []
    result = engine.objects if engine.objects_current else engine.score if engine.score_current else None
    if result is None:
        return []
    name = inp.prediction.name
    extra = {"truth": inp.truth.name, "region": inp.region.label}
    if inp.kind == "probability" and engine.mask is not None:
        pp = engine.mask.postprocess
        extra["threshold"] = engine.mask.threshold
        extra["postprocess"] = "none" if pp is None else ", ".join(pp.steps())
        if inp.is_stack:
            extra["objects"] = f"{engine.mask.object_dims}-D"
    ev = result.evaluation
    if isinstance(ev, StackEvaluation):
        rows = ev.rows(name)
    else:
        rows = [{"name": name, "slice": None, **ev.to_dict()}]
    return [{**row, **extra} for row in rows]
