"""Active learning: uncertainty maps, region ranking, and the simulation of annotation rounds.

Nothing here imports napari or Qt. Entry points: :func:`uncertainty` (a
generator, through the product's one tiler), :func:`rank_regions`, and
:mod:`~napari_segloop.core.active.simulate` (uncertainty-driven against random
selection of the regions to annotate).
"""

from napari_segloop.core.active.regions import Region, merge_rankings, rank_regions
from napari_segloop.core.active.uncertainty import METHODS, UncertaintyMap, binary_entropy, uncertainty

__all__ = [
    "METHODS",
    "Region",
    "UncertaintyMap",
    "binary_entropy",
    "merge_rankings",
    "rank_regions",
    "uncertainty",
]
