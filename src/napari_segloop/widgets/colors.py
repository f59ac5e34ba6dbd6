"""Display colours of the confusion codes (the core knows codes, the widgets colours)."""

from __future__ import annotations

from napari_segloop.core.evaluation.confusion import FN, FP, TN, TP

#: Okabe-Ito (Wong 2011) colours of the confusion codes, as hex. Of all triples of
#: the palette, yellow / vermillion / blue keeps the largest worst-case CIELAB
#: distance between the three under simulated deuteranopia, protanopia and
#: tritanopia. True negatives are transparent.
CONFUSION_HEX: dict[int, str] = {TN: "#00000000", TP: "#F0E442", FP: "#D55E00", FN: "#0072B2"}

#: RGBA colours in [0, 1] for a napari ``DirectLabelColormap`` (code -> colour).
CONFUSION_COLORS: dict[int, tuple[float, float, float, float]] = {
    TN: (0.0, 0.0, 0.0, 0.0),
    TP: (240 / 255, 228 / 255, 66 / 255, 1.0),
    FP: (213 / 255, 94 / 255, 0.0, 1.0),
    FN: (0.0, 114 / 255, 178 / 255, 1.0),
}

