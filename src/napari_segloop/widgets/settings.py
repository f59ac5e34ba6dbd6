"""Choices a user makes once, remembered between napari sessions.

Remembered: the compute device, tile size, tile overlap, batch size and the
last model loaded (path, and the architecture/encoder/input channels of a
plain state dict). Not remembered: anything that belongs to one image (scale
factor, channel conversion, whole stack or current slice), because a value
right for yesterday's image is a silent mistake on today's.

The values are stored with :class:`QSettings` in INI format under the
organisation ``napari-segloop`` (on Linux ``~/.config/napari-segloop/``).
Tests isolate them by redirecting the INI location with
``QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, tmp)``
or by passing their own ``QSettings`` object.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QSettings

ORGANIZATION = "napari-segloop"
APPLICATION = "napari-segloop"

#: Stored for "use the model's own value" (tile size, overlap).
MODEL_DEFAULT = -1


def _to_int(value: Any, default: int) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def _to_float(value: Any, default: float) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class UserSettings:
    """Typed access to the remembered settings.

    Parameters
    ----------
    store : QSettings, optional
        Where the values live; by default the user's ``napari-segloop`` INI file.
        Values that cannot be parsed fall back to their defaults.
    """

    def __init__(self, store: QSettings | None = None) -> None:
        if store is None:
            store = QSettings(
                QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
            )
        self.store = store

    def _get(self, key: str, default: Any) -> Any:
        return self.store.value(key, default)

    def _set(self, key: str, value: Any) -> None:
        self.store.setValue(key, value)
        self.store.sync()

    # -- inference -----------------------------------------------------------
    @property
    def device(self) -> str:
        """Requested device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
        return str(self._get("predict/device", "auto") or "auto")

    @device.setter
    def device(self, value: str) -> None:
        self._set("predict/device", str(value))

    @property
    def tile_size(self) -> int:
        """Tile edge in pixels, or :data:`MODEL_DEFAULT`."""
        value = _to_int(self._get("predict/tile_size", MODEL_DEFAULT), MODEL_DEFAULT)
        return value if value == MODEL_DEFAULT or (value >= 32 and value % 32 == 0) else MODEL_DEFAULT

    @tile_size.setter
    def tile_size(self, value: int) -> None:
        self._set("predict/tile_size", int(value))

    @property
    def overlap(self) -> float:
        """Tile overlap fraction, or :data:`MODEL_DEFAULT`."""
        value = _to_float(self._get("predict/overlap", MODEL_DEFAULT), MODEL_DEFAULT)
        return value if value == MODEL_DEFAULT or 0 <= value <= 0.9 else float(MODEL_DEFAULT)

    @overlap.setter
    def overlap(self, value: float) -> None:
        self._set("predict/overlap", float(value))

    @property
    def batch_size(self) -> int:
        """Tiles per forward pass."""
        value = _to_int(self._get("predict/batch_size", 4), 4)
        return value if 1 <= value <= 256 else 4

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._set("predict/batch_size", int(value))

    @property
    def threads(self) -> int:
        """torch CPU threads for jobs; 0 means the ``auto`` policy (all cores but one)."""
        value = _to_int(self._get("predict/threads", 0), 0)
        return value if 0 <= value <= 256 else 0

    @threads.setter
    def threads(self, value: int) -> None:
        self._set("predict/threads", int(value))

    # -- model ---------------------------------------------------------------
    @property
    def last_model_path(self) -> str:
        """The last bundle folder or weights file loaded successfully ('' if none)."""
        return str(self._get("model/last_path", "") or "")

    @last_model_path.setter
    def last_model_path(self, value: str) -> None:
        self._set("model/last_path", str(value))

    @property
    def architecture(self) -> str:
        """Architecture last used for a plain state dict or a new model."""
        return str(self._get("model/architecture", "Unet") or "Unet")

    @architecture.setter
    def architecture(self, value: str) -> None:
        self._set("model/architecture", str(value))

    @property
    def encoder(self) -> str:
        """Encoder last used for a plain state dict or a new model."""
        return str(self._get("model/encoder", "resnet18") or "resnet18")

    @encoder.setter
    def encoder(self, value: str) -> None:
        self._set("model/encoder", str(value))

    @property
    def in_channels(self) -> int:
        """Input channels last used for a plain state dict or a new model."""
        value = _to_int(self._get("model/in_channels", 1), 1)
        return value if 1 <= value <= 64 else 1

    @in_channels.setter
    def in_channels(self, value: int) -> None:
        self._set("model/in_channels", int(value))

    @property
    def models_folder(self) -> str:
        """Where the Fine-tune dock saves new model versions (default ``~/segloop-models``)."""
        from pathlib import Path

        return str(self._get("train/models_folder", "") or Path.home() / "segloop-models")

    @models_folder.setter
    def models_folder(self, value: str) -> None:
        self._set("train/models_folder", str(value))
