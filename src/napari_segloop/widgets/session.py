"""Per-viewer state shared by all of the plugin's docks.

Every dock of one napari window talks to the same :class:`Session`: the loaded
:class:`~napari_segloop.core.bundle.ModelBundle`, the one background job that
may run at a time, and the probability maps already computed for each image
layer (so that the threshold, confusion and fine-tuning docks can reuse them
instead of predicting again).

Where the state lives
    Sessions are kept in a :class:`weakref.WeakKeyDictionary` keyed by the
    viewer itself. The registry holds no strong reference: when the viewer is
    closed and garbage-collected its session goes with it, and two windows
    never share state. This is the only module-level object, and it holds no
    state of its own. (napari's ``Viewer`` is a pydantic model that does not
    accept extra attributes, so attaching the session to the viewer is not a
    supported option.)

Plugin widgets receive the viewer wrapped in napari's ``PublicOnlyProxy``,
a new proxy for every dock. :func:`unwrap` returns the object behind it
through the proxy's public ``__wrapped__`` attribute (the same attribute
napari itself uses), so that all docks find the same session and layers
compare by identity.

Nothing here is a QObject: signals are psygnal signals, delivered
synchronously on the thread that emits them (always the main thread here).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from psygnal import Signal

from napari_segloop.widgets.eval_state import EvaluationState

if TYPE_CHECKING:
    import numpy as np
    from napari.layers import Image
    from napari.viewer import Viewer

    from napari_segloop.core.bundle import ModelBundle

#: Key in ``layer.metadata`` marking layers this plugin made (never the user's own layers).
METADATA_KEY = "napari-segloop"


def unwrap(obj: Any) -> Any:
    """Return the object behind napari's ``PublicOnlyProxy`` (or ``obj`` itself)."""
    while True:
        inner = getattr(obj, "__wrapped__", None)
        if inner is None or inner is obj:
            return obj
        obj = inner


def camera_of(viewer: Any) -> Any:
    """The viewer's camera: ``viewer.scene.camera`` in napari >= 0.9, ``viewer.camera`` before."""
    viewer = unwrap(viewer)
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None and hasattr(scene, "camera") else viewer.camera


@dataclass(frozen=True)
class MaskSettings:
    """How the mask on screen was made: ``probability > threshold``, then ``postprocess``."""

    threshold: float
    postprocess: Any


@dataclass
class ProbabilityMap:
    """A probability map computed for one image layer.

    Attributes
    ----------
    layer : weakref.ref
        The ``<image> probability`` layer that shows ``data``.
    data : np.ndarray
        float32 probabilities in ``[0, 1]``, the image's shape without its
        channel axis (the array displayed by ``layer``).
    model_version : int
        :attr:`Session.model_version` of the model that made it.
    complete : bool
        True when the whole image or stack was predicted; False when only
        some slices were (those in ``slices``).
    slices : set of tuple of int
        Stack positions predicted by "current slice" runs.
    classes : ClassPrediction, optional
        A K-class model's prediction (all K probabilities and the class map);
        ``data`` is then the probability of class ``shown``.
    shown : int
        The class whose probability ``data`` holds (K-class predictions).
    """

    layer: weakref.ref
    data: np.ndarray
    model_version: int
    complete: bool = True
    slices: set[tuple[int, ...]] = field(default_factory=set)
    classes: Any = None
    shown: int = 1


@dataclass
class ModelVersion:
    """A model used in this session (loaded, created or trained), to switch back to.

    Attributes
    ----------
    label : str
        What the Model dock lists ("default", "default-v002 (trained)").
    bundle : ModelBundle
        The model itself (kept in memory: switching back is instant).
    """

    label: str
    bundle: Any


@dataclass
class Job:
    """The background job running for a session."""

    name: str
    worker: Any


class Session:
    """State shared by the docks of one viewer.

    Use :func:`session_for` to get it; do not construct it directly.

    Attributes
    ----------
    bundle : ModelBundle or None
        The loaded model.
    model_version : int
        Incremented each time the model changes, so cached probabilities can
        tell whether they are stale.
    job : Job or None
        The running background job (at most one at a time).
    device : str
        The device the user chose (``auto``, ``cpu``, ``cuda``, ...).
    """

    #: Emitted with the new :class:`ModelBundle` after a model is loaded or created.
    model_changed = Signal(object)
    #: Emitted with True when a job starts and False when it ends.
    busy_changed = Signal(bool)
    #: Emitted with the image layer whose probability map changed.
    probabilities_changed = Signal(object)
    #: Emitted with the requested device name when the user picks another device.
    device_changed = Signal(str)
    #: Emitted with the new :class:`MaskSettings` when the mask on screen was made with other settings.
    mask_settings_changed = Signal(object)
    #: Emitted with the list of :class:`ModelVersion` when a model joins it.
    versions_changed = Signal(object)

    def __init__(self, viewer: Viewer) -> None:
        self._viewer = weakref.ref(viewer)
        self.bundle: ModelBundle | None = None
        self.model_version = 0
        self.job: Job | None = None
        self.device = "auto"
        self._devices: list[str] | None = None
        self._probabilities: weakref.WeakKeyDictionary[Any, ProbabilityMap] = (
            weakref.WeakKeyDictionary()
        )
        self._shared: dict[str, Any] = {}
        #: What the Threshold and Confusion docks score (one state for both docks).
        self.evaluation = EvaluationState()
        #: The threshold and post-processing of the mask on screen (written by the evaluation
        #: engine when it draws ``<image> mask``); "Save model as..." stores them in the new bundle.
        self.mask_settings: MaskSettings | None = None
        #: The models of this session, oldest first (see :meth:`set_model`).
        self.versions: list[ModelVersion] = []
        #: The models checked for an ensemble in the Predict dock (used there, and by the
        #: Uncertainty dock's "ensemble" method); fewer than two: no ensemble.
        self.ensemble: list[Any] = []
        #: The minimum confidence set in the Classes dock (saved with a K-class model); None: unset.
        self.class_confidence: float | None = None

    @property
    def viewer(self) -> Viewer | None:
        """The viewer (None once it has been garbage-collected)."""
        return self._viewer()

    # -- model ---------------------------------------------------------------
    def set_model(self, bundle: ModelBundle, label: str | None = None) -> None:
        """Make ``bundle`` the session's model and tell the docks.

        Every model set here joins :attr:`versions` (once), so the Model dock
        can switch between a trained model and the one it came from.
        """
        self.bundle = bundle
        self.model_version += 1
        self.class_confidence = None  # the next model starts from its own minimum confidence
        if not any(v.bundle is bundle for v in self.versions):
            self.versions.append(ModelVersion(label or version_label(bundle), bundle))
            self.versions_changed.emit(list(self.versions))
        self.model_changed.emit(bundle)

    # -- devices -------------------------------------------------------------
    @property
    def devices(self) -> list[str]:
        """Working devices, best first (probed once per session)."""
        if self._devices is None:
            from napari_segloop.core.inference.devices import available_devices

            self._devices = available_devices()
        return list(self._devices)

    def set_device(self, device: str) -> None:
        """Record the device the user chose."""
        if device != self.device:
            self.device = device
            self.device_changed.emit(device)

    def resolved_device(self) -> str:
        """The device that will be used for :attr:`device` (an explicit one that is missing is
        shown as such: runs refuse it rather than silently using the CPU)."""
        if self.device in ("", "auto"):
            return self.devices[0]
        return self.device if self.device in self.devices else f"{self.device} (not available)"

    # -- jobs ----------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while a background job runs."""
        return self.job is not None

    def start_job(self, name: str, worker: Any) -> bool:
        """Start ``worker`` as the session's job, or refuse if one is running.

        Parameters
        ----------
        name : str
            What the job does, for messages ("prediction", "model loading").
        worker : GeneratorWorker or FunctionWorker
            A napari worker that has not been started.

        Returns
        -------
        bool
            False (and the worker is not started) when another job runs.
        """
        if self.job is not None:
            return False
        job = Job(name, worker)
        self.job = job
        worker.finished.connect(lambda: self._job_finished(job))
        self.busy_changed.emit(True)
        worker.start()
        return True

    def _job_finished(self, job: Job) -> None:
        if self.job is job:
            self.job = None
            self.busy_changed.emit(False)

    def cancel_job(self) -> None:
        """Ask the running job to stop at its next step (no-op when idle)."""
        if self.job is not None:
            self.job.worker.quit()

    # -- probability maps ----------------------------------------------------
    def probability(self, image: Image) -> ProbabilityMap | None:
        """The probability map cached for ``image``, if its layer still exists."""
        entry = self._probabilities.get(unwrap(image))
        if entry is None or entry.layer() is None:
            return None
        return entry

    def probability_of_layer(self, layer: Any) -> ProbabilityMap | None:
        """The probability map whose ``<image> probability`` layer is ``layer`` (None if none is)."""
        layer = unwrap(layer)
        for entry in list(self._probabilities.values()):
            if entry.layer() is layer:
                return entry
        return None

    def set_probability(self, image: Image, entry: ProbabilityMap) -> None:
        """Cache ``entry`` for ``image`` and tell the docks."""
        image = unwrap(image)
        self._probabilities[image] = entry
        self.probabilities_changed.emit(image)

    # -- the mask on screen ---------------------------------------------------
    def set_mask_settings(self, threshold: float, postprocess: Any) -> None:
        """Record the threshold and post-processing of the mask now on screen (the evaluation engine)."""
        settings = MaskSettings(float(threshold), postprocess)
        if settings != self.mask_settings:
            self.mask_settings = settings
            self.mask_settings_changed.emit(settings)

    # -- helpers shared by the docks -----------------------------------------
    def shared(self, key: str, factory: Any) -> Any:
        """A per-session helper object, made by ``factory(self)`` on first use.

        Lets docks share caches (e.g. threshold curves) without globals; the
        object lives as long as the session.
        """
        obj = self._shared.get(key)
        if obj is None:
            obj = factory(self)
            self._shared[key] = obj
        return obj


def version_label(bundle: Any) -> str:
    """A short name for a model: ``default``, a bundle's folder name, or ``new Unet (resnet34)``."""
    source = str(getattr(bundle, "source", "") or "")
    if source in ("", "new"):
        return f"new {bundle.architecture} ({bundle.encoder})"
    if source == "default":
        return "default"
    from pathlib import Path

    return Path(source).name or source


_SESSIONS: weakref.WeakKeyDictionary[Any, Session] = weakref.WeakKeyDictionary()


def session_for(viewer: Viewer) -> Session:
    """Return the session of ``viewer``, creating it on first use.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer, or the ``PublicOnlyProxy`` napari hands to plugin widgets.
    """
    from napari_segloop.widgets.gl_compat import avoid_triton_llvm_clash

    avoid_triton_llvm_clash()  # before any dock imports segmentation-models-pytorch
    viewer = unwrap(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = Session(viewer)
        _SESSIONS[viewer] = session
    return session
