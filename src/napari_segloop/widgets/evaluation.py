"""What the threshold and confusion docks share: latest-wins workers, cached threshold curves,
evaluation regions, input checks and the model's default threshold.

Nothing here computes on the main thread beyond O(1) look-ups: curves are
built in napari workers (:class:`CurveStore`), and refreshes run through
:class:`LatestRunner`, which keeps at most one worker per dock and drops
every result that is not the newest request's.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from psygnal import Signal
from qtpy.QtCore import QObject

from napari_segloop.core.errors import InputError, SegloopError
from napari_segloop.core.evaluation import check_region, check_truth
from napari_segloop.core.evaluation.curve import DEFAULT_STEPS, ThresholdCurve
from napari_segloop.core.evaluation.histograms import BinnedCurve, binned_curve
from napari_segloop.core.evaluation.planes import select_planes
from napari_segloop.core.events import Progress
from napari_segloop.widgets.eval_state import REGION_ALL, REGION_VIEW
from napari_segloop.widgets.jobs import JobFailed, guarded
from napari_segloop.widgets.layer_io import layer_array, shape_probe
from napari_segloop.widgets.session import Session, camera_of, unwrap

#: Slider positions over [0, 1]: the thresholds of :class:`ThresholdCurve`'s steps (O(1) metrics).
SLIDER_STEPS = DEFAULT_STEPS
_SLIDER_VALUES = np.linspace(0.0, 1.0, SLIDER_STEPS).astype(np.float32)



def slider_threshold(step: int) -> float:
    """The threshold of slider position ``step`` (the curve's step, exactly)."""
    return float(_SLIDER_VALUES[int(step)])


def slider_step(threshold: float) -> int:
    """The slider position nearest to ``threshold``."""
    return int(np.clip(round(float(threshold) * (SLIDER_STEPS - 1)), 0, SLIDER_STEPS - 1))


def format_value(value: Any, digits: int = 4) -> str:
    """A metric for display: ``n/a`` for undefined (None or NaN), integers in full."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        return "n/a"
    return f"{v:.{digits}f}"


# ---------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Unread:
    """An array a worker job reads itself, block by block (:func:`start_worker` leaves it unread).

    Lazy arguments of a job are read whole before it starts; a map larger
    than memory is passed in this wrapper instead.
    """

    array: Any


def is_lazy_array(value: Any) -> bool:
    """An array-like that is not in memory yet (a dask or zarr array, a napari layer's lazy data)."""
    return (not isinstance(value, np.ndarray) and hasattr(value, "__array__")
            and hasattr(value, "shape") and hasattr(value, "dtype"))


def read_lazy(value: Any) -> Any:
    """``np.asarray`` of a lazy array (call it in a worker thread); anything else unchanged."""
    return np.asarray(value) if is_lazy_array(value) else value


def _run(job: Callable[..., Generator[Any, None, Any]], args: tuple, kwargs: dict
         ) -> Generator[Any, None, Any]:
    # This body runs in the worker thread: lazy layer data is read here, never on the GUI thread.
    args = tuple(read_lazy(a) for a in args)
    kwargs = {k: read_lazy(v) for k, v in kwargs.items()}
    return (yield from guarded(job(*args, **kwargs)))


def start_worker(job: Callable[..., Generator[Any, None, Any]], *args: Any, **kwargs: Any) -> Any:
    """Create a napari worker running ``job(*args, **kwargs)`` (a generator function); not started.

    User errors come back as :class:`~napari_segloop.widgets.jobs.JobFailed`. Lazy
    arrays among the arguments (dask, zarr: what ``layer.data`` may be) are read
    in the worker thread before ``job`` starts, so callers pass ``layer.data``
    as it is and the GUI thread never waits for a large read.
    """
    from napari.qt.threading import create_worker

    return create_worker(_run, job, args, kwargs, _start_thread=False)


class LatestRunner(QObject):
    """Run a generator job in a worker, at most one at a time; only the newest request counts.

    A request while a worker runs asks that worker to stop at its next
    ``yield`` and remembers only the newest arguments; when the worker ends,
    the newest request starts. A result is delivered to ``on_result`` only if
    no request came after the one that produced it, so a stale result is
    never applied over a newer one and no backlog builds up.

    Parameters
    ----------
    job : callable
        A generator function run in the worker thread; it must not touch layers or widgets.
    on_result : callable
        Called on the main thread with the job's return value (possibly a
        :class:`JobFailed`).
    parent : QObject or None
        Owner (the dock); when it is deleted, results are no longer delivered.
    on_yield : callable, optional
        Called on the main thread with every value the job yields (except
        None) while its request is still the newest: staged results, such as
        a mask before the metrics that follow it.
    """

    def __init__(self, job: Callable[..., Generator[Any, None, Any]], on_result: Callable[[Any], None],
                 parent: QObject | None, on_yield: Callable[[Any], None] | None = None) -> None:
        super().__init__(parent)
        self._job = job
        self._on_result = on_result
        self._on_yield = on_yield
        self.generation = 0
        self._worker: Any = None
        self._worker_generation = -1
        self._pending: tuple[int, tuple, dict] | None = None

    @property
    def busy(self) -> bool:
        """True while a worker runs or a request waits."""
        return self._worker is not None or self._pending is not None

    def request(self, *args: Any, **kwargs: Any) -> int:
        """Ask for a run with these arguments; returns its generation number."""
        self.generation += 1
        self._pending = (self.generation, args, kwargs)
        if self._worker is None:
            self._start_pending()
        else:
            self._worker.quit()
        return self.generation

    def cancel(self) -> None:
        """Forget the waiting request and stop the running worker at its next step."""
        self.generation += 1
        self._pending = None
        if self._worker is not None:
            self._worker.quit()

    def _start_pending(self) -> None:
        if self._pending is None:
            return
        generation, args, kwargs = self._pending
        self._pending = None
        worker = start_worker(self._job, *args, **kwargs)
        worker.returned.connect(self._on_returned)
        worker.finished.connect(self._on_finished)
        if self._on_yield is not None:
            worker.yielded.connect(self._on_yielded)
        self._worker = worker
        self._worker_generation = generation
        worker.start()

    def _on_returned(self, result: Any) -> None:
        if self._worker_generation == self.generation:
            self._on_result(result)

    def _on_yielded(self, value: Any) -> None:
        if value is not None and self._worker_generation == self.generation and self._on_yield is not None:
            self._on_yield(value)

    def _on_finished(self) -> None:
        self._worker = None
        self._start_pending()


# ---------------------------------------------------------------------- curves


def build_curve(prob: Any, truth: Any, region: np.ndarray | None,
                index: tuple[int, ...] | None = None,
                planes: tuple[int, ...] | None = None) -> Generator[Any, None, ThresholdCurve]:
    """Worker job: build a :class:`ThresholdCurve`, yield it, then sort it for exact queries.

    ``prob`` and ``truth`` are the layers' data (read in the worker); ``index``
    selects one slice of a stack; ``planes`` (flat plane indices) keeps only
    the predicted planes of a partly predicted stack.
    """
    yield None
    if index is not None:
        prob, truth = np.asarray(prob[index]), np.asarray(truth[index])
        if region is not None and region.ndim > 2:
            region = region[index]
    elif planes is not None:
        prob, truth = select_planes(prob, planes), select_planes(truth, planes)
        if region is not None and region.ndim > 2:
            region = select_planes(region, planes)
    curve = ThresholdCurve(prob, truth, region, steps=SLIDER_STEPS)
    yield curve
    curve.prepare_exact()
    return curve


def build_binned_curve(prob: Unread, truth: Unread) -> Generator[Any, None, BinnedCurve]:
    """Worker job: the curve of a map larger than memory, block by block (yields progress, then it).

    Yielded like :func:`build_curve`'s, so the store hands both out the same
    way; it is never sorted, so it is never "exact" (only at the slider's steps).
    """
    curve = yield from binned_curve(prob.array, truth.array, steps=SLIDER_STEPS)
    yield curve
    return curve


@dataclass
class _Entry:
    prob: weakref.ref
    truth: weakref.ref
    curve: ThresholdCurve | BinnedCurve | None = None
    exact: bool = False
    failed: JobFailed | None = None
    callbacks: list[Callable[[Any], None]] = field(default_factory=list)
    worker: Any = None


class CurveStore:
    """Threshold curves of a session, shared by its docks, built in workers.

    Keyed by the probability and ground-truth layers (and their data
    versions), the region and the stack slice; a few are kept (each holds a
    sorted copy of the evaluated probabilities). Get it with
    ``session.shared("curves", CurveStore)``.
    """

    #: Emitted with a layer whose data changed (set or painted): curves of it are rebuilt on request.
    data_changed = Signal(object)
    #: Emitted with a curve once it is sorted: thresholds off the slider steps are then O(log n).
    exact_ready = Signal(object)
    #: Emitted with the :class:`~napari_segloop.core.events.Progress` of a curve built block by block.
    progressed = Signal(object)

    MAX_ENTRIES = 4

    def __init__(self, session: Session) -> None:
        self._session = weakref.ref(session)
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._versions: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()

    # -- data versions --------------------------------------------------------
    def version(self, layer: Any) -> int:
        """A counter that changes whenever ``layer``'s data is set or painted."""
        layer = unwrap(layer)
        if layer not in self._versions:
            self._versions[layer] = 0
            ref = weakref.ref(layer)
            store = weakref.ref(self)

            def bump(*_: Any) -> None:
                lyr, st = ref(), store()
                if lyr is not None and st is not None:
                    st._versions[lyr] = st._versions.get(lyr, 0) + 1
                    st.data_changed.emit(lyr)

            for name in ("data", "paint"):
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    emitter.connect(bump)
        return self._versions[layer]

    def bump(self, layer: Any) -> None:
        """Count ``layer``'s data as changed (its blocks were written behind napari's events)."""
        layer = unwrap(layer)
        self.version(layer)
        self._versions[layer] = self._versions.get(layer, 0) + 1
        self.data_changed.emit(layer)

    def key(self, prob: Any, truth: Any, region_key: Hashable, index: tuple[int, ...] | None,
            planes: tuple[int, ...] | None = None) -> Hashable:
        """Cache key of a curve."""
        prob, truth = unwrap(prob), unwrap(truth)
        return (id(prob), self.version(prob), id(truth), self.version(truth), region_key, index, planes)

    # -- curves ---------------------------------------------------------------
    def cached(self, key: Hashable) -> ThresholdCurve | None:
        """The built curve for ``key``, or None."""
        entry = self._entries.get(key)
        return None if entry is None else entry.curve

    def is_exact(self, curve: ThresholdCurve | None) -> bool:
        """True once ``curve`` is sorted (queries off the slider steps are then safe on the main thread)."""
        return curve is not None and any(e.curve is curve and e.exact for e in self._entries.values())

    def request(
        self,
        prob_layer: Any,
        truth_layer: Any,
        region: RegionChoice,
        index: tuple[int, ...] | None,
        callback: Callable[[Any], None],
        planes: tuple[int, ...] | None = None,
    ) -> ThresholdCurve | JobFailed | None:
        """The curve of these inputs: returned at once if built, else built in a worker.

        Parameters
        ----------
        prob_layer, truth_layer : napari layers
            The probability map and the ground truth (checked by the caller).
        region : RegionChoice
            Evaluation region (the prediction's shape or one slice's).
        index : tuple of int, optional
            Only this slice of a stack.
        callback : callable
            Called on the main thread with the curve (or a :class:`JobFailed`)
            when a worker finishes building it; not called when returning at once.
        planes : tuple of int, optional
            Only these planes of a stack (flat indices; None: all).

        Returns
        -------
        ThresholdCurve, JobFailed or None
            None while it is being built.
        """
        key = self.key(prob_layer, truth_layer, region.key, index, planes)
        entry = self._entries.get(key)
        if entry is not None and (entry.prob() is not unwrap(prob_layer)
                                  or entry.truth() is not unwrap(truth_layer)):
            del self._entries[key]  # ids reused by new layers
            entry = None
        if entry is not None:
            self._entries.move_to_end(key)
            if entry.curve is not None:
                return entry.curve
            if entry.failed is not None:
                return entry.failed
            entry.callbacks.append(callback)
            return None
        prob, truth = layer_array(prob_layer), layer_array(truth_layer)  # read in the worker
        entry = _Entry(weakref.ref(unwrap(prob_layer)), weakref.ref(unwrap(truth_layer)),
                       callbacks=[callback])
        self._entries[key] = entry
        while len(self._entries) > self.MAX_ENTRIES:
            old_key, old = next(iter(self._entries.items()))
            if old.worker is not None:
                old.worker.quit()
            del self._entries[old_key]
        from napari_segloop.widgets.large_layers import is_large

        if is_large(prob_layer):  # larger than memory: histograms, block by block (whole map only)
            worker = start_worker(build_binned_curve, Unread(prob), Unread(truth))
        else:
            worker = start_worker(build_curve, prob, truth, region.mask, index, planes)
        entry.worker = worker
        worker.yielded.connect(lambda value: self._on_yielded(entry, value))
        worker.returned.connect(lambda value: self._on_returned(entry, value))
        worker.finished.connect(lambda: setattr(entry, "worker", None))
        worker.start()
        return None

    def _on_yielded(self, entry: _Entry, value: Any) -> None:
        if isinstance(value, Progress):
            self.progressed.emit(value)
            return
        if isinstance(value, ThresholdCurve | BinnedCurve) and entry.curve is None:
            entry.curve = value
            callbacks, entry.callbacks = entry.callbacks, []
            for callback in callbacks:
                callback(value)

    def _on_returned(self, entry: _Entry, value: Any) -> None:
        if isinstance(value, JobFailed):
            entry.failed = value
            callbacks, entry.callbacks = entry.callbacks, []
            for key, e in list(self._entries.items()):
                if e is entry:  # do not cache failures: the user may fix the input
                    del self._entries[key]
            for callback in callbacks:
                callback(value)
            return
        if isinstance(value, ThresholdCurve):
            entry.exact = True
            self.exact_ready.emit(value)

    def cancel_all(self) -> None:
        """Stop every build (the session's viewer is closing)."""
        for entry in self._entries.values():
            if entry.worker is not None:
                entry.worker.quit()
        self._entries.clear()

    @property
    def building(self) -> bool:
        """True while a worker builds or sorts a curve."""
        return any(e.worker is not None for e in self._entries.values())


# ---------------------------------------------------------------------- regions and checks


@dataclass(frozen=True)
class RegionChoice:
    """An evaluation region read from the viewer.

    Attributes
    ----------
    mask : ndarray of bool or None
        The pixels evaluated (the prediction's shape, or one slice's shape
        for every slice); None: all.
    key : hashable
        Identity for caches.
    label : str
        What it is, for the status line and the CSV.
    """

    mask: np.ndarray | None = None
    key: Hashable = None
    label: str = "whole image"


WHOLE_IMAGE = RegionChoice()


def read_region(viewer: Any, choice: Any, like: Any, shape: tuple[int, ...],
                shapes_version: int = 0) -> RegionChoice:
    """Rasterise the region the user chose, in the pixel grid of the layer ``like``.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    choice : str or napari Shapes layer
        :data:`REGION_ALL`, :data:`REGION_VIEW` (the part of ``like`` shown in
        the canvas) or a Shapes layer (inside any of its shapes).
    like : napari layer
        The prediction layer whose pixels are evaluated.
    shape : tuple of int
        Its data shape.
    shapes_version : int
        Data version of the Shapes layer (part of the cache key).

    Raises
    ------
    InputError
        If the region holds no pixel of the image.
    """
    viewer = unwrap(viewer)
    if choice is None or choice == REGION_ALL:
        return WHOLE_IMAGE
    plane = tuple(shape[-2:])
    if choice == REGION_VIEW:
        corners = np.asarray(like.corner_pixels)
        lo = np.clip(corners[0, -2:], 0, np.array(plane) - 1).astype(int)
        hi = np.clip(corners[1, -2:], 0, np.array(plane) - 1).astype(int)
        if (hi < lo).any() or not corners.any():
            raise InputError("The field of view is not known yet or shows none of the image; "
                             "pan or zoom the canvas onto it.")
        mask = np.zeros(plane, dtype=bool)
        mask[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1] = True
        bounds = (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1]))
        return RegionChoice(mask, ("view", bounds),
                            f"field of view (rows {bounds[0]}-{bounds[2]}, columns {bounds[1]}-{bounds[3]})")
    shapes = unwrap(choice)
    if len(shapes.data) == 0:
        raise InputError(f"The Shapes layer {shapes.name!r} has no shapes: draw the evaluated "
                         "area as rectangles or polygons.")
    mask = _rasterise(shapes, like, shape)
    check_region(mask, shape)  # raises for an empty region
    return RegionChoice(mask, ("shapes", id(shapes), shapes_version), f"inside the shapes of {shapes.name!r}")


def _rasterise(shapes: Any, like: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Pixels of ``like`` inside any shape (a 2-D region when the shapes are 2-D)."""
    from napari.layers import Shapes

    same_ndim = shapes.ndim == len(shape)
    target = tuple(shape) if same_ndim else tuple(shape[-2:])
    same_place = (np.allclose(shapes.scale[-2:], like.scale[-2:])
                  and np.allclose(shapes.translate[-2:], like.translate[-2:]))
    if same_place:
        layer = shapes
    else:  # map the vertices into the pixel grid of ``like``
        def to_like(vertices: np.ndarray) -> np.ndarray:
            v = np.asarray(vertices, dtype=float)
            world = v * np.asarray(shapes.scale)[-v.shape[1]:] + np.asarray(shapes.translate)[-v.shape[1]:]
            return (world - np.asarray(like.translate)[-v.shape[1]:]) / np.asarray(like.scale)[-v.shape[1]:]

        layer = Shapes([to_like(v) for v in shapes.data], shape_type=list(shapes.shape_type),
                       ndim=shapes.ndim)
    labels = layer.to_labels(labels_shape=target)
    return np.asarray(labels) > 0


def truth_problem(truth_layer: Any, shape: tuple[int, ...]) -> str | None:
    """Why ``truth_layer`` cannot be compared with a prediction of ``shape`` (None if it can)."""
    if truth_layer is None:
        return "Choose a ground-truth layer (a Labels layer with the true objects)."
    try:
        check_truth(shape_probe(truth_layer), tuple(shape), name=f"ground truth {truth_layer.name!r}")
    except SegloopError as exc:
        return str(exc)
    return None


def is_instance_labels(truth_layer: Any) -> bool:
    """True if a Labels layer holds more than one object id (read as foreground where non-zero)."""
    data = layer_array(truth_layer)
    if np.dtype(data.dtype) == bool or is_lazy_array(data):
        return False  # only a note: never read a lazy layer on the GUI thread for it
    arr = np.asarray(data)
    return bool(arr.size) and int(arr.max(initial=0)) > 1


def connect_for_lifetime(widget: Any, pairs: list[tuple[Any, Callable[..., Any]]],
                         on_destroyed: Callable[[], None]) -> None:
    """Connect ``(signal, slot)`` pairs until ``widget`` is destroyed, then disconnect them.

    ``on_destroyed`` runs first (mark the dock dead, cancel its workers), so no
    slot touches a deleted widget when the viewer or session outlives the dock.
    """
    for signal, slot in pairs:
        signal.connect(slot)

    def _destroyed(*_: Any) -> None:
        on_destroyed()
        for signal, slot in pairs:
            signal.disconnect(slot)

    widget.destroyed.connect(_destroyed)


def notify_once(status: Any, reported: set[str], message: str, level: str = "error") -> None:
    """Show ``message`` in the ``status`` label, and as a napari notification once per text.

    Slider ticks can repeat the same problem many times a second; the user sees it once.
    """
    from napari.utils.notifications import show_error, show_info, show_warning

    status.setText(message)
    if message in reported:
        return
    reported.add(message)
    {"error": show_error, "warning": show_warning}.get(level, show_info)(message)


def camera_events(viewer: Any) -> Any:
    """The viewer camera's events (``viewer.scene.camera`` in napari >= 0.9, ``viewer.camera`` before)."""
    return camera_of(viewer).events


def slice_index(layer: Any, viewer: Any) -> tuple[int, ...] | None:
    """The stack position of ``layer`` at the viewer's current dims (None for a 2-D layer)."""
    viewer = unwrap(viewer)
    shape = layer_array(layer).shape
    if len(shape) <= 2:
        return None
    position = layer.world_to_data(viewer.dims.point)
    index = []
    for axis in range(len(shape) - 2):
        value = float(position[axis]) if axis < len(position) else 0.0
        index.append(int(min(max(round(value), 0), shape[axis] - 1)))
    return tuple(index)


def flat_index(index: tuple[int, ...] | None, shape: tuple[int, ...]) -> int:
    """The position of a stack slice in C order of the leading axes (as in ``evaluate_stack``)."""
    if index is None:
        return 0
    return int(np.ravel_multi_index(index, shape[:-2]))


@dataclass(frozen=True)
class ModelDefault:
    """The threshold and post-processing stored with a model, and where they come from."""

    threshold: float
    postprocess: Any
    source: str


def model_default(session: Session) -> ModelDefault:
    """The loaded model's threshold and post-processing (or the built-in default model's, or 0.5).

    The post-processing's object diameter is resolved from the model's object
    size as ``segloop predict/evaluate --threshold auto`` resolve it
    (:func:`~napari_segloop.core.masks.resolve_object_diameter`), so the first
    mask equals theirs.
    """
    bundle = session.bundle
    if bundle is not None and bundle.classes > 1:
        # The docks score one class of a K-class model against the rest; the model's "threshold"
        # is its minimum confidence, not a threshold of one class's probability.
        return ModelDefault(0.5, None, "0.5 (one class of a model with several classes)")
    if bundle is not None:
        s = bundle.settings
        return ModelDefault(float(s.threshold), _resolved(s), f"the loaded model ({bundle.source})")
    try:
        from napari_segloop.core.bundle import read_bundle_settings

        s = read_bundle_settings("default")
    except SegloopError:
        return ModelDefault(0.5, None, "0.5 (no model loaded)")
    return ModelDefault(float(s.threshold), _resolved(s), "the built-in default model")


def _resolved(settings: Any) -> Any:
    """The settings' post-processing with the object diameter the model implies (if it has one)."""
    import dataclasses

    from napari_segloop.core.masks import resolve_object_diameter

    pp = settings.postprocess
    if pp is None or getattr(pp, "object_diameter", None) is not None:
        return pp
    diameter = resolve_object_diameter(pp, settings)
    return pp if diameter is None else dataclasses.replace(pp, object_diameter=diameter)
