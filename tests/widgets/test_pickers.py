"""Layer combo boxes follow the layer list, and let go of it when their dock closes."""

from __future__ import annotations

import numpy as np

from napari_segloop.widgets.pickers import LayerChoice, is_user_image


def test_combo_lists_new_and_renamed_layers(make_napari_viewer):
    viewer = make_napari_viewer()
    combo = LayerChoice(viewer, is_user_image)
    layer = viewer.add_image(np.zeros((8, 8)), name="cells")
    assert combo.currentText() == "cells"
    layer.name = "nuclei"
    assert combo.currentText() == "nuclei"
    assert combo.layer() is layer


def test_destroyed_combo_no_longer_listens_to_the_viewer(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 8)), name="a")
    combo = LayerChoice(viewer, is_user_image)
    n_before = len(viewer.layers.events.inserted.callbacks)
    with qtbot.waitSignal(combo.destroyed):
        combo.deleteLater()
    assert len(viewer.layers.events.inserted.callbacks) == n_before - 1
    # adding and renaming layers after the dock closed must not touch the deleted widget
    viewer.add_image(np.zeros((8, 8)), name="b").name = "c"
