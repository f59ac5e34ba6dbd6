"""What the Fine-tune dock shows about a run, kept out of Qt (psygnal signals only).

:class:`TrainingRunState` turns the trainer's typed events into the numbers
the dock displays (step, speed, losses, held-out Dice against the starting
model) and the curves' points. The dock only draws it; tests drive it with
events directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

from napari_segloop.core.events import Progress, TrainStep, Validation

__all__ = ["TrainingRunState"]


@dataclass
class TrainingRunState:
    """The state of one training run, as the dock shows it.

    Attributes
    ----------
    phase : str
        ``idle``, ``preparing``, ``training``, ``paused``, ``stopping``,
        ``saving``, ``done`` or ``failed``.
    step, total_steps : int
        Steps done, and the step budget (0 when the budget is time).
    seconds, budget_seconds : float
        Training time so far (pauses excluded) and the time budget (0: none).
    loss : float or None
        Last training loss.
    samples_per_second : float
    val_dice, val_loss : float or None
        Last validation.
    start_dice : float or None
        The starting model's validation Dice (None from scratch).
    best_dice : float or None
        The best validation Dice so far (its weights are kept).
    best_step : int
    history : list of (step, loss, dice)
        Every validation.
    message : str
        The last phase message ("preparing the annotated planes", ...).
    """

    phase: str = "idle"
    step: int = 0
    total_steps: int = 0
    seconds: float = 0.0
    budget_seconds: float = 0.0
    loss: float | None = None
    samples_per_second: float = 0.0
    val_dice: float | None = None
    val_loss: float | None = None
    start_dice: float | None = None
    best_dice: float | None = None
    best_step: int = 0
    history: list[tuple[int, float, float]] = field(default_factory=list)
    message: str = ""

    #: Emitted after anything shown changed.
    changed = Signal()

    def start(self, total_steps: int | None, budget_seconds: float | None) -> None:
        """Reset for a new run."""
        for name, value in TrainingRunState().__dict__.items():
            if name != "changed":
                setattr(self, name, value)
        self.phase = "preparing"
        self.total_steps = int(total_steps or 0)
        self.budget_seconds = float(budget_seconds or 0.0)
        self.changed.emit()

    def apply(self, event: Any) -> None:
        """Take one event of the trainer."""
        if isinstance(event, TrainStep):
            if self.phase in ("preparing",):
                self.phase = "training"
            self.step, self.loss = event.step, event.loss
            self.seconds, self.samples_per_second = event.elapsed, event.samples_per_second
        elif isinstance(event, Validation):
            self.val_dice, self.val_loss = event.dice, event.loss
            self.history.append((event.step, event.loss, event.dice))
            if "start_dice" in event.metrics:
                self.start_dice = float(event.metrics["start_dice"])
            if event.best:
                self.best_dice, self.best_step = event.dice, event.step
        elif isinstance(event, Progress):
            if event.message == "paused":
                self.phase = "paused"
            elif event.message:
                self.message = event.message
                if self.phase == "paused":
                    self.phase = "training"
        else:
            return
        self.changed.emit()

    def set_phase(self, phase: str) -> None:
        """Move to ``phase`` and tell the view."""
        self.phase = phase
        self.changed.emit()

    @property
    def fraction(self) -> float:
        """How much of the budget is used, in [0, 1]."""
        parts = []
        if self.total_steps:
            parts.append(self.step / self.total_steps)
        if self.budget_seconds:
            parts.append(self.seconds / self.budget_seconds)
        return min(1.0, max(parts, default=0.0))

    def summary(self) -> str:
        """One line for the dock: step, time, loss, held-out Dice against the start, speed."""
        if self.phase == "idle":
            return "Paint labels, then press Train."
        if self.phase == "preparing":
            return f"Preparing: {self.message or 'reading the labels'}…"
        parts = [f"step {self.step}" + (f"/{self.total_steps}" if self.total_steps else ""),
                 f"{self.seconds:.0f} s" + (f"/{self.budget_seconds:.0f} s" if self.budget_seconds else "")]
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.best_dice is not None:
            start = f" (start {self.start_dice:.3f})" if self.start_dice is not None else ""
            parts.append(f"held-out Dice {self.best_dice:.3f}{start}")
        if self.samples_per_second:
            parts.append(f"{self.samples_per_second:.0f} patches/s")
        prefix = {"paused": "Paused: ", "stopping": "Stopping: ", "saving": "Saving: "}.get(self.phase, "")
        return prefix + " · ".join(parts)
