"""The Qt-free state of K-class predictions: merging slices, the scored planes, the colours."""

from __future__ import annotations

import numpy as np

from napari_segloop.widgets.class_state import ClassPrediction, class_colors


def _slice(value: float, k: int = 3) -> ClassPrediction:
    probs = np.full((k, 4, 5), value, np.float32)
    return ClassPrediction(probs, np.full((4, 5), 1, np.uint8), ["bg", "a", "b"][:k])


def test_slices_merge_into_one_stack_and_stay_incomplete_until_whole():
    first = _slice(0.2).merged_into(None, (3, 4, 5), (0,))
    assert first.probabilities.shape == (3, 3, 4, 5) and not first.complete
    assert first.slices == {(0,)}
    second = _slice(0.3).merged_into(first, (3, 4, 5), (2,))
    assert second.probabilities is first.probabilities  # written in place
    assert second.slices == {(0,), (2,)} and not second.complete
    region = second.scored_region()
    assert region[0].all() and region[2].all() and not region[1].any()
    # a slice re-predicted into a whole-stack prediction keeps it whole
    whole = ClassPrediction(np.zeros((3, 3, 4, 5), np.float32), np.zeros((3, 4, 5), np.uint8),
                            ["bg", "a", "b"])
    again = _slice(0.5).merged_into(whole, (3, 4, 5), (1,))
    assert again.complete and again.scored_region() is None
    np.testing.assert_array_equal(again.class_map[1], 1)


def test_class_colours_are_distinct_and_never_the_background_blue():
    for k in (3, 5, 12):
        colors = class_colors(k)
        shown = [colors[c] for c in range(1, k)]
        assert len(set(shown)) == k - 1
        assert all(c != (0.0, 114 / 255, 178 / 255, 1.0) for c in shown)
        assert colors[0][3] == 0.0 and colors[k] != colors[1]
