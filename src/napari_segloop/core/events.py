"""Typed messages of every long job (prediction, evaluation, training, uncertainty).

A long job in the core is a generator: it *yields* these small, immutable
messages and *returns* its result. The CLI drives it with :func:`run_to_end`
(printing notices, moving a progress bar); the napari docks run it in a
thread worker and receive the messages on the main thread. Nothing here knows
about Qt or napari, and no message carries a widget.

Messages
    :class:`Progress`
        ``done`` of ``total`` steps (tiles, batches, files).
    :class:`Notice`
        Something the user should be told (a fallback, a retry, odd input).
    :class:`BlockWritten`
        A block of a chunked prediction was written (a zarr-backed layer redraws).
    :class:`TrainStep`
        One optimisation step of a training run: losses, learning rate, speed.
    :class:`Validation`
        Metrics on the held-out annotations after a step.
    :class:`Preview`
        A plane predicted with the latest weights of a running training job.
    :class:`Snapshot`
        Weights worth keeping (the best so far, or a periodic copy), so that a
        stopped or crashed run never loses its last good model.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

__all__ = [
    "BlockWritten",
    "Event",
    "Notice",
    "Preview",
    "Progress",
    "Snapshot",
    "TrainStep",
    "Validation",
    "part_of",
    "relay",
    "run_to_end",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """Progress of a long operation: ``done`` of ``total`` steps.

    Attributes
    ----------
    done, total : int
        Steps done and expected (``total`` may grow, e.g. after a retry).
    message : str
        A short phase name ("starting", "retrying", ...), or empty.
    """

    done: int
    total: int
    message: str = ""


@dataclass(frozen=True)
class Notice:
    """Something the user should be told (a napari notification, or a line on stderr).

    Attributes
    ----------
    text : str
        One sentence meant for the user.
    level : {"info", "warning", "error"}
        How loud to say it.
    """

    text: str
    level: Literal["info", "warning", "error"] = "info"


@dataclass(frozen=True)
class BlockWritten:
    """One block of a chunked prediction is in its output (napari redraws the layer).

    Attributes
    ----------
    region : tuple of (int, int)
        ``(start, stop)`` along each axis of the output.
    """

    region: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class TrainStep:
    """One optimisation step of a training run.

    Attributes
    ----------
    step, total : int
        The step just done (1-based) and the step budget (0 when the budget is
        a time limit only).
    loss : float
        Training loss of the step (annotated pixels only).
    lr : float
        Learning rate used.
    elapsed : float
        Seconds since the run started.
    samples_per_second : float
        Patches per second over the last steps.
    losses : dict of str to float
        The loss terms (e.g. ``{"bce": ..., "dice": ..., "keep": ...}``).
    """

    step: int
    total: int
    loss: float
    lr: float
    elapsed: float
    samples_per_second: float
    losses: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Validation:
    """Metrics on the held-out annotations.

    Attributes
    ----------
    step : int
        The training step after which they were measured.
    loss : float
        Validation loss.
    dice : float
        Validation Dice at the model's threshold.
    best : bool
        True when this is the best validation so far (its weights are kept).
    metrics : dict of str to float
        Further metrics (IoU, Dice of the starting model, ...).
    """

    step: int
    loss: float
    dice: float
    best: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Weights worth keeping, taken at ``step``.

    Attributes
    ----------
    step : int
        The training step of the weights.
    state_dict : dict
        A CPU copy of the model's state dict (never the live tensors).
    reason : {"best", "periodic", "final"}
        Why it was taken.
    """

    step: int
    state_dict: dict[str, Any]
    reason: Literal["best", "periodic", "final"] = "periodic"


@dataclass(frozen=True)
class Preview:
    """A prediction made with the weights of a running training job (the live preview).

    Attributes
    ----------
    step : int
        The training step of the weights.
    key : object
        The key of the preview request it answers (so a stale answer can be told apart).
    probabilities : numpy.ndarray
        float32 ``(H, W)`` probabilities of the requested plane.
    """

    step: int
    key: Any
    probabilities: Any


#: Any message a long job yields.
Event = Progress | Notice | BlockWritten | TrainStep | Validation | Snapshot | Preview


def run_to_end(
    gen: Generator[Any, None, T],
    on_event: Callable[[Any], None] | None = None,
) -> T:
    """Drive a job generator to its end and return its result.

    Parameters
    ----------
    gen : generator
        A core job: yields :data:`Event` messages, returns its result.
    on_event : callable, optional
        Called with every yielded message (in the caller's thread).

    Returns
    -------
    object
        What the generator returned.
    """
    while True:
        try:
            event = next(gen)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(event)


def relay(
    gen: Generator[Any, None, T],
    change: Callable[[Any], Any | None],
) -> Generator[Any, None, T]:
    """Run ``gen`` inside another job, passing on ``change(event)`` for each event (None drops it).

    Closing the outer generator (a cancelled worker) closes ``gen`` at once.

    Returns
    -------
    object
        What ``gen`` returned.
    """
    try:
        event = next(gen)
        while True:
            changed = change(event)
            if changed is not None:
                yield changed
            event = next(gen)
    except StopIteration as stop:
        return stop.value
    finally:
        gen.close()


def part_of(
    gen: Generator[Any, None, T], k: int, n: int, label: str | None = None
) -> Generator[Any, None, T]:
    """Run ``gen`` as part ``k`` (from 0) of ``n``: its progress rescaled to the whole job.

    A part's :class:`Progress` without a message gets ``label``. Closing the
    outer generator closes ``gen``.
    """
    scale = 1000

    def rescaled(event: Any) -> Any:
        if not isinstance(event, Progress):
            return event
        frac = event.done / event.total if event.total else 0.0
        return Progress(int(scale * (k + frac)), scale * n, event.message or label or "")

    return (yield from relay(gen, rescaled))
