"""Painted labels -> targets and weights (core.training.annotations)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_segloop.core.errors import InputError
from napari_segloop.core.training.annotations import (
    CHANGED_WEIGHT,
    annotated_planes,
    check_labels,
    labels_digest,
    plane_target,
)


def test_scribbles_ignore_unpainted_pixels():
    plane = np.array([[0, 1, 2], [0, 0, 1]], np.uint8)
    t = plane_target(plane, "scribbles")
    np.testing.assert_array_equal(t.weight, [[0, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(t.target, [[0, 1, 0], [0, 0, 1]])
    assert (t.n_foreground, t.n_background) == (2, 1)


def test_dense_reads_instance_ids_as_foreground_and_weighs_every_pixel():
    plane = np.array([[0, 7, 7], [3, 0, 0]], np.int32)
    t = plane_target(plane, "dense")
    np.testing.assert_array_equal(t.target, [[0, 1, 1], [1, 0, 0]])
    assert np.all(t.weight == 1)
    assert (t.n_foreground, t.n_background) == (3, 3)


def test_correction_weighs_the_changed_pixels_more():
    edited = np.array([[1, 1, 0, 0]], np.uint8)
    before = np.array([[1, 0, 0, 1]], np.uint8)
    t = plane_target(edited, "correction", reference=before)
    np.testing.assert_array_equal(t.weight, [[1, CHANGED_WEIGHT, 1, CHANGED_WEIGHT]])
    np.testing.assert_array_equal(t.target, [[1, 1, 0, 0]])


def test_scribbles_with_instance_ids_point_to_dense_mode():
    with pytest.raises(InputError, match=r"values up to 9.*'dense'"):
        check_labels(np.array([[0, 9]], np.uint16), "scribbles")


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.float32), np.zeros(4, np.uint8),
                                 np.array([[-1, 0]], np.int8)])
def test_labels_that_are_not_labels_are_refused(bad):
    with pytest.raises(InputError):
        check_labels(bad, "dense")


def test_unknown_mode_is_refused():
    with pytest.raises(InputError, match="Unknown annotation mode"):
        check_labels(np.zeros((2, 2), np.uint8), "sparse")


def test_only_annotated_slices_of_a_stack_are_used():
    stack = np.zeros((4, 8, 8), np.uint8)
    stack[2, 3, 3] = 2
    stack[3, 1, 1] = 5  # not a scribble value: would be refused by check_labels, not a plane here
    assert list(annotated_planes(stack, "scribbles")) == [(2,)]
    assert list(annotated_planes(stack, "dense")) == [(2,), (3,)]
    assert list(annotated_planes(np.zeros((5, 5), np.uint8), "dense")) == []
    assert list(annotated_planes(np.ones((5, 5), np.uint8), "dense")) == [()]


def test_labels_digest_sees_one_pixel():
    a = np.zeros((16, 16), np.uint8)
    b = a.copy()
    b[3, 4] = 1
    assert labels_digest([a]) != labels_digest([b])
    assert labels_digest([a]) == labels_digest([a.copy()])
    assert labels_digest([a]) != labels_digest([a.astype(np.uint16)])
