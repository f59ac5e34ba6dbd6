"""What the Threshold and Confusion docks score, held once per viewer (Qt-free).

:class:`EvaluationState` is a ``psygnal`` evented dataclass: every field
emits ``state.events.<field>`` when it changes. The docks are views of it:
their controls write a field through the methods below and follow the
events, so the two docks can never disagree about the threshold, the
post-processing, the ground truth, the region, 2-D or 3-D objects or which
overlay is shown. :class:`~napari_segloop.widgets.eval_engine.EvaluationEngine`
turns the state into layers and metrics.

Who writes which field
    ``probability``, ``labels``, ``truth``, ``region``: the layer pickers of
    either dock (and the engine, which clears a field whose layer was
    removed). ``threshold``: the Threshold dock's slider, spin box and
    automatic buttons (and the engine, once, when a new probability layer
    is bound). ``postprocess``, ``processing``, ``object_dims``: the
    post-processing controls (the engine sets the model's defaults when a
    probability layer is bound). ``show``: the "Show" choice of either dock.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from psygnal import evented

from napari_segloop.core.masks import PostProcess

#: Special values of :attr:`EvaluationState.region`.
REGION_ALL = "all"
REGION_VIEW = "view"

#: Values of :attr:`EvaluationState.show`, with what the user sees.
SHOW_CHOICES: tuple[tuple[str, str], ...] = (
    ("mask", "mask (threshold + post-processing)"),
    ("errors", "errors (TP / FP / FN against ground truth)"),
    ("probability", "probability map"),
)

#: Time axis names napari users give (``viewer.dims.axis_labels``): objects stay per frame there.
TIME_LABELS = ("t", "time", "frame", "frames", "timepoint", "timepoints")


def postprocess_active(pp: PostProcess | None) -> bool:
    """True if ``pp`` changes a thresholded mask."""
    return pp is not None and bool(pp.min_size > 0 or pp.fill_holes or pp.instances or pp.split_touching)


@evented
@dataclass
class EvaluationState:
    """The inputs of the evaluation shown in one viewer.

    Attributes
    ----------
    probability : napari Image layer or None
        The probability map being thresholded.
    labels : napari Labels layer or None
        A mask or instance-labels layer the Confusion dock scores *instead of*
        the probability map's mask (e.g. a hand-corrected mask); None: score
        the mask of :attr:`probability`.
    truth : napari layer or None
        The ground truth.
    truth_confirmed : bool
        True once the user accepted a ground truth that is not a Labels layer
        (an intensity image is never scored without that).
    region : str or napari Shapes layer
        :data:`REGION_ALL`, :data:`REGION_VIEW` or a Shapes layer.
    threshold : float
        Foreground where probability > threshold.
    postprocess : PostProcess
        The post-processing controls' values.
    processing : bool
        Apply :attr:`postprocess` (False: the raw ``probability > threshold``,
        chosen explicitly by the user).
    object_dims : int
        2: objects per 2-D slice; 3: objects connected across z (z-stacks).
    show : str
        Which overlay the viewer shows: ``mask``, ``errors`` or ``probability``.
    raw_only : bool
        Set by the engine while the map is larger than memory: its mask is the
        raw threshold (post-processing needs whole objects, which a block of
        the map does not hold), whatever :attr:`processing` says.
    """

    probability: Any = None
    labels: Any = None
    truth: Any = None
    truth_confirmed: bool = False
    region: Any = REGION_ALL
    threshold: float = 0.5
    postprocess: PostProcess = field(default_factory=PostProcess)
    processing: bool = True
    object_dims: int = 2
    show: str = "mask"
    raw_only: bool = False

    # -- derived values -----------------------------------------------------------
    def effective_postprocess(self) -> PostProcess | None:
        """The post-processing that makes the mask on screen (None: the raw threshold)."""
        if self.raw_only or not self.processing or not postprocess_active(self.postprocess):
            return None
        return self.postprocess

    def mask_key(self) -> tuple:
        """What determines the mask of :attr:`probability` (not its data)."""
        return (float(self.threshold), self.effective_postprocess(), int(self.object_dims))

    # -- writers ------------------------------------------------------------------
    def set_truth(self, layer: Any) -> None:
        """Choose the ground truth (a non-Labels layer then waits for :meth:`confirm_truth`)."""
        if layer is not self.truth:
            self.truth_confirmed = False
            self.truth = layer

    def confirm_truth(self) -> None:
        """Accept the chosen ground truth although it is not a Labels layer."""
        self.truth_confirmed = True

    def set_threshold(self, value: float) -> None:
        """Set the threshold, clipped to [0, 1]."""
        self.threshold = float(min(max(float(value), 0.0), 1.0))

    def set_postprocess(self, **changes: Any) -> None:
        """Change some post-processing fields (``min_size=30``, ``instances=True``, ...)."""
        pp = replace(self.postprocess, **changes)
        if pp != self.postprocess:
            self.postprocess = pp


def default_object_dims(viewer: Any, layer: Any) -> int:
    """3 (objects connected in 3-D) for a z-stack, 2 for 2-D images and time-lapses.

    The axis just before the image plane decides: a stack whose axis label
    (napari's ``viewer.dims.axis_labels``, or the layer's ``axis_labels``)
    names time (``t``, ``time``, ``frame``) keeps objects per frame.
    """
    try:
        ndim = len(layer.data.shape)
    except AttributeError:
        return 2
    if ndim < 3:
        return 2
    label = ""
    names = getattr(layer, "axis_labels", None)
    if names is not None and len(names) == ndim:
        label = str(names[-3])
    if not label or label.lstrip("-").isdigit():
        try:
            world = tuple(viewer.dims.axis_labels)
            label = str(world[-3]) if len(world) >= 3 else ""
        except AttributeError:
            label = ""
    return 2 if label.strip().lower() in TIME_LABELS else 3
