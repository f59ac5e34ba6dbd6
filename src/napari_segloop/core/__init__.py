"""The engine of napari-segloop: bundles, the model registry, inference, masks, evaluation, events.

Nothing in this package imports napari or any Qt module (checked by
import-linter, see ``pyproject.toml``, and ``tests/test_architecture.py``),
so it can be used from scripts, the ``segloop`` command line and the napari
widgets alike. See ``docs/architecture.md`` for the layout.
"""
