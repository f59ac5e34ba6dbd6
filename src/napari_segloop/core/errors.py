"""Exceptions that carry a message meant for the user.

Every error the user can cause (a missing file, a model that does not fit,
an image of the wrong shape) is raised as :class:`SegloopError` with one
clear sentence. The CLI prints that sentence and exits non-zero; the widgets
show it as a napari notification. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class SegloopError(Exception):
    """An error caused by the user's input, with a message meant for them."""


class ModelLoadError(SegloopError):
    """A model file or bundle could not be read or does not fit."""


class BundleExistsError(ModelLoadError):
    """A bundle would be written over an existing folder without permission."""


class InputError(SegloopError):
    """An image, label or argument is not what the operation needs."""


class DeviceError(SegloopError):
    """A requested compute device is not usable."""


class CancelledError(SegloopError):
    """A long operation was cancelled by the user."""
