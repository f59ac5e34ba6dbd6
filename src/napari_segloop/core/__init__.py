"""The engine of napari-segloop: model I/O, tiling, inference, devices.

Nothing in this package imports napari or any Qt module (checked by
import-linter, see ``pyproject.toml``), so it can be used from scripts, the
``segloop`` command line and the napari widgets alike.
"""
