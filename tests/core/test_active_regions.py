"""Region ranking (grid, scores, order, skipping annotated regions) and the informativeness measure."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_segloop.core.active.quality import informativeness
from napari_segloop.core.active.regions import (
    Region,
    RegionQueue,
    annotated_cells,
    cell_means,
    grid_edges,
    merge_rankings,
    rank_regions,
)
from napari_segloop.core.errors import InputError

#: The 100 x 130 grid of side 64: rows [0, 64) and [64, 100), columns [0, 64), [64, 128), [128, 130).
GRID = [(0, 0, 64, 64), (0, 64, 64, 128), (0, 128, 64, 130),
        (64, 0, 100, 64), (64, 64, 100, 128), (64, 128, 100, 130)]


def _map(shape=(100, 130), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32)


# ---------------------------------------------------------------- grid and scores


def test_grid_edges():
    np.testing.assert_array_equal(grid_edges(130, 64), [0, 64, 128])
    np.testing.assert_array_equal(grid_edges(128, 64), [0, 64])
    np.testing.assert_array_equal(grid_edges(5, 64), [0])


def test_cell_means_are_the_means_of_the_cells():
    u = _map()
    means = cell_means(u, 64)
    assert means.shape == (2, 3)
    for (r, c), value in np.ndenumerate(means):
        y0, x0, y1, x1 = GRID[3 * r + c]
        assert value == pytest.approx(float(u[y0:y1, x0:x1].astype(np.float64).mean()), rel=1e-9)


def test_regions_cover_the_grid_with_exclusive_clipped_ends_and_mean_scores():
    u = _map()
    regions = rank_regions(u, 64)
    assert sorted(r.bbox for r in regions) == sorted(GRID)
    for reg in regions:
        y0, x0, y1, x1 = reg.bbox
        assert reg.score == pytest.approx(float(u[y0:y1, x0:x1].mean()), rel=1e-6)
        assert reg.index == () and reg.image is None
    assert [r.score for r in regions] == sorted((r.score for r in regions), reverse=True)
    # Exclusive ends: the regions tile the map exactly once.
    cover = np.zeros(u.shape, int)
    for reg in regions:
        y0, x0, y1, x1 = reg.bbox
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


def test_the_most_uncertain_region_comes_first_and_short_border_regions_compete_fairly():
    u = np.zeros((100, 130), np.float32)
    u[64:100, 128:130] = 0.8  # the small bottom-right corner region, fully uncertain
    u[0:64, 0:64] = 0.5  # a big region, less uncertain
    u[0:8, 64:128] = 1.0  # a big region with a small hot spot: mean 0.125
    regions = rank_regions(u, 64)
    assert [r.bbox for r in regions[:3]] == [(64, 128, 100, 130), (0, 0, 64, 64), (0, 64, 64, 128)]
    assert [r.score for r in regions[:3]] == pytest.approx([0.8, 0.5, 0.125])


def test_ties_keep_the_grid_order():
    regions = rank_regions(np.full((100, 130), 0.3, np.float32), 64)
    assert [r.bbox for r in regions] == GRID
    u = np.zeros((100, 130), np.float32)
    u[64:, :64] = 0.5
    u[:64, 128:] = 0.5
    assert [r.bbox for r in rank_regions(u, 64)[:2]] == [(0, 128, 64, 130), (64, 0, 100, 64)]


def test_a_map_smaller_than_a_region_is_one_region():
    regions = rank_regions(np.full((20, 30), 0.25, np.float32), 64)
    assert len(regions) == 1 and regions[0].bbox == (0, 0, 20, 30)
    assert regions[0].score == pytest.approx(0.25)


@pytest.mark.parametrize("top", [1, 4, 6, 50])
def test_top_limits_the_count(top):
    u = _map()
    regions = rank_regions(u, 64, top=top)
    assert len(regions) == min(top, 6)
    assert regions == rank_regions(u, 64)[:top]


# ---------------------------------------------------------------- annotated regions


def test_a_single_scribbled_pixel_skips_its_region():
    u = _map()
    labels = np.zeros(u.shape, np.uint8)
    labels[70, 129] = 2  # background scribbles count too
    labels[63, 63] = 1
    regions = rank_regions(u, 64, labels=labels)
    assert sorted(r.bbox for r in regions) == sorted(set(GRID) - {(64, 128, 100, 130), (0, 0, 64, 64)})
    np.testing.assert_array_equal(annotated_cells(labels, 64), [[True, False, False], [False, False, True]])


def test_correction_and_dense_labels_skip_their_whole_plane():
    u = _map((2, 100, 130))
    labels = np.zeros(u.shape, np.int32)
    labels[1, 99, 0] = 7
    for mode in ("dense", "correction"):
        regions = rank_regions(u, 64, labels=labels, mode=mode)
        assert {r.index for r in regions} == {(0,)}
        assert sorted(r.bbox for r in regions) == sorted(GRID)
    scribbled = rank_regions(u, 64, labels=labels, mode="scribbles")
    assert len(scribbled) == 11 and ((1,), (64, 0, 100, 64)) not in {(r.index, r.bbox) for r in scribbled}
    assert annotated_cells(labels[0], 64, "dense").shape == (2, 3)
    assert not annotated_cells(labels[0], 64, "dense").any()
    assert annotated_cells(labels[1], 64, "dense").all()


def test_every_region_annotated_gives_an_empty_ranking():
    u = _map((40, 40))
    assert rank_regions(u, 16, labels=np.ones(u.shape, np.uint8)) == []


def test_an_unknown_labels_mode_is_refused():
    u = _map((40, 40))
    with pytest.raises(InputError, match="scribbles"):
        rank_regions(u, 16, labels=np.zeros(u.shape, np.uint8), mode="paint")


@pytest.mark.parametrize("shape", [(100, 129), (129, 100), (1, 100, 130), (100, 130, 1)])
def test_labels_of_another_shape_are_refused(shape):
    with pytest.raises(InputError, match="shape"):
        rank_regions(_map(), 64, labels=np.zeros(shape, np.uint8))


def test_bad_maps_sides_and_tops_are_refused():
    with pytest.raises(InputError):
        rank_regions(np.zeros(10, np.float32), 4)
    with pytest.raises(InputError, match="side"):
        rank_regions(_map(), 0)
    with pytest.raises(InputError, match="top"):
        rank_regions(_map(), 64, top=0)


# ---------------------------------------------------------------- stacks, json, merging


def test_stack_maps_give_index_tuples_and_five_element_json():
    u = np.zeros((2, 3, 40, 50), np.float32)
    u[1, 2, 32:, 32:] = 0.9
    u[0, 1, :32, :32] = 0.4
    regions = rank_regions(u, 32)
    assert len(regions) == 2 * 3 * 2 * 2
    assert regions[0].index == (1, 2) and regions[0].bbox == (32, 32, 40, 50)
    assert regions[1].index == (0, 1) and regions[1].bbox == (0, 0, 32, 32)
    assert regions[0].as_json() == {"bbox": [1, 2, 32, 32, 40, 50], "score": pytest.approx(0.9)}
    # Ties: plane by plane, then row, then column.
    assert [(r.index, r.bbox[:2]) for r in regions[2:6]] == [((0, 0), (0, 0)), ((0, 0), (0, 32)),
                                                            ((0, 0), (32, 0)), ((0, 0), (32, 32))]
    z = rank_regions(np.zeros((3, 40, 50), np.float32), 32)[5]
    assert z.index == (1,) and z.as_json()["bbox"] == [1, 0, 32, 32, 50]


def test_as_json_is_plain_json():
    import json

    reg = Region((), (np.int64(0), 64, 64, 128), np.float32(0.123456789), image="a.tif")
    out = reg.as_json()
    assert out == {"bbox": [0, 64, 64, 128], "score": 0.123457, "image": "a.tif"}
    assert json.loads(json.dumps(out)) == out
    assert "image" not in Region((), (0, 0, 1, 1), 0.5).as_json()
    assert Region((), (0, 0, 10, 20), 0.5).centre == (4.5, 9.5)


def test_merge_rankings_sorts_across_images_and_keeps_their_names():
    a = np.zeros((64, 64), np.float32)
    a[:32, :32] = 0.9
    b = np.full((64, 64), 0.5, np.float32)
    b[32:, 32:] = 0.95
    merged = merge_rankings([rank_regions(a, 32, image="a"), rank_regions(b, 32, image="b")])
    assert len(merged) == 8
    assert [(r.image, r.bbox) for r in merged[:3]] == [("b", (32, 32, 64, 64)), ("a", (0, 0, 32, 32)),
                                                       ("b", (0, 0, 32, 32))]
    assert [r.score for r in merged] == sorted((r.score for r in merged), reverse=True)
    assert len(merge_rankings([rank_regions(a, 32), rank_regions(b, 32)], top=3)) == 3


def test_the_region_queue_hands_out_regions_in_order_skipping_annotated_ones():
    ranked = rank_regions(_map(), 64)
    queue = RegionQueue(ranked)
    assert len(queue) == 6 and queue.current is None and queue.remaining == 6
    assert queue.next() == ranked[0] and queue.current == ranked[0] and queue.remaining == 5
    painted = {ranked[1].bbox, ranked[2].bbox}
    assert queue.next(lambda reg: reg.bbox in painted) == ranked[3]
    assert queue.remaining == 2
    assert queue.next() == ranked[4] and queue.next() == ranked[5]
    assert queue.next() is None and queue.current is None and queue.remaining == 0
    assert queue.next() is None
    assert RegionQueue([]).next() is None


# ---------------------------------------------------------------- informativeness


def _error_case(side=16, n=4):
    """A map whose region k (row-major) has k + 1 wrong pixels: the prediction is empty everywhere."""
    truth = np.zeros((side * n, side * n), np.uint8)
    for k in range(n * n):
        r, c = divmod(k, n)
        truth[r * side, c * side:c * side + k + 1] = 1
    probability = np.zeros(truth.shape, np.float32)
    return truth, probability


def test_uncertainty_equal_to_the_error_is_informative():
    truth, probability = _error_case()
    error = ((probability > 0.5) != (truth != 0)).astype(np.float32)
    quality = informativeness(error, probability, truth, 16, top_fraction=0.125)
    assert quality.spearman == pytest.approx(1.0)
    assert quality.regions == 16
    errors = np.arange(1, 17) / 256
    assert quality.mean_error == pytest.approx(errors.mean())
    assert quality.top_error_ratio == pytest.approx(errors[-2:].mean() / errors.mean())
    assert quality.top_error_ratio > 1


def test_reversed_uncertainty_is_anti_informative():
    truth, probability = _error_case()
    quality = informativeness(1.0 - truth.astype(np.float32), probability, truth, 16, top=2)
    assert quality.spearman == pytest.approx(-1.0)
    assert quality.top_error_ratio < 1


def test_informativeness_skips_annotated_regions_and_handles_constants():
    truth, probability = _error_case()
    error = (truth != 0).astype(np.float32)
    labels = np.zeros(truth.shape, np.uint8)
    labels[-1, -1] = 1  # the region with the most errors
    quality = informativeness(error, probability, truth, 16, labels=labels, top=1)
    assert quality.regions == 15
    errors = np.arange(1, 16) / 256
    assert quality.top_error_ratio == pytest.approx(errors[-1] / errors.mean())
    flat = informativeness(np.full(truth.shape, 0.5, np.float32), probability, truth, 16)
    assert math.isnan(flat.spearman)
    perfect = informativeness(error, truth.astype(np.float32), truth, 16)
    assert perfect.mean_error == 0 and math.isnan(perfect.top_error_ratio) and math.isnan(perfect.spearman)
