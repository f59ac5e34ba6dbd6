"""Training on painted labels: targets and loss masks, patches, losses, the trainer generator.

Nothing here imports napari or Qt. Entry points: :func:`train` (the generator),
:class:`TrainConfig`, :class:`TrainControl`, :class:`TrainingPair`, and
:mod:`~napari_segloop.core.training.runs` (saving a run with its labels).
"""

from napari_segloop.core.training.annotations import MODES, labels_digest, plane_target
from napari_segloop.core.training.data import TrainingData, TrainingPair
from napari_segloop.core.training.losses import LOSSES, training_loss
from napari_segloop.core.training.trainer import (
    TRANSFER_MODES,
    PreviewRequest,
    TrainConfig,
    TrainControl,
    TrainResult,
    train,
)

__all__ = [
    "LOSSES",
    "MODES",
    "TRANSFER_MODES",
    "PreviewRequest",
    "TrainConfig",
    "TrainControl",
    "TrainResult",
    "TrainingData",
    "TrainingPair",
    "labels_digest",
    "plane_target",
    "train",
    "training_loss",
]
