"""The evaluation docks' concurrency helpers: the latest-wins runner and the shared curve store."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from qtpy.QtCore import QObject

from napari_segloop.core.errors import InputError
from napari_segloop.widgets.evaluation import WHOLE_IMAGE, CurveStore, LatestRunner
from napari_segloop.widgets.jobs import JobFailed


def slow_echo(value, delay=0.02, steps=10):
    """A job that yields ``steps`` times (so it can be stopped) and returns ``value``."""
    for _ in range(steps):
        time.sleep(delay)
        yield None
    return value


class LazyArray:
    """Stands for dask/zarr layer data: records the thread that reads it."""

    def __init__(self, data):
        self.data = data
        self.shape, self.dtype = data.shape, data.dtype
        self.read_in: list[str] = []

    def __array__(self, dtype=None, copy=None):
        self.read_in.append(threading.current_thread().name)
        return self.data


@pytest.fixture
def owner(qtbot):
    parent = QObject()
    yield parent
    parent.deleteLater()


def test_only_the_newest_request_delivers_a_result(owner, qtbot):
    results = []
    runner = LatestRunner(slow_echo, results.append, owner)
    for value in (1, 2, 3):
        runner.request(value)
    assert runner.busy
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert results == [3]  # 1 was stopped, 2 never started: no backlog, no stale result


def test_a_result_for_an_older_request_is_never_applied(owner, qtbot):
    def instant(value):
        time.sleep(0.05)  # done before the main thread looks again: nothing to stop at a yield
        return value
        yield  # a generator function

    results = []
    runner = LatestRunner(instant, results.append, owner)
    runner.request("old")
    time.sleep(0.2)  # "old" has returned in its thread; its result waits for the main thread
    runner.request("new")
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert results == ["new"]


def test_cancel_delivers_nothing(owner, qtbot):
    results = []
    runner = LatestRunner(slow_echo, results.append, owner)
    runner.request("x")
    runner.cancel()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    qtbot.wait(50)
    assert results == []


def test_user_errors_come_back_as_job_failed(owner, qtbot):
    def failing():
        yield None
        raise InputError("bad input")

    results = []
    runner = LatestRunner(failing, results.append, owner)
    runner.request()
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert isinstance(results[0], JobFailed) and results[0].message == "bad input"


def test_lazy_arguments_are_read_in_the_worker_thread(owner, qtbot):
    lazy = LazyArray(np.arange(6.0).reshape(2, 3))
    results = []

    def total(arr):
        yield None
        return float(arr.sum()), type(arr)

    runner = LatestRunner(total, results.append, owner)
    runner.request(lazy)
    qtbot.waitUntil(lambda: not runner.busy, timeout=10_000)
    assert results == [(15.0, np.ndarray)]
    assert lazy.read_in and threading.main_thread().name not in lazy.read_in


# ---------------------------------------------------------------------- curve store


@pytest.fixture
def store_setup(make_napari_viewer):
    from napari_segloop.widgets.session import session_for

    viewer = make_napari_viewer()
    rng = np.random.default_rng(0)
    truth = np.zeros((32, 32), dtype=np.uint8)
    truth[8:20, 8:20] = 1
    prob = np.clip(0.7 * truth + rng.normal(0.15, 0.1, truth.shape), 0, 1).astype(np.float32)
    p = viewer.add_image(prob, name="p")
    t = viewer.add_labels(truth, name="t")
    return CurveStore(session_for(viewer)), p, t, prob, truth


def test_curve_is_built_once_then_served_from_the_cache(store_setup, qtbot):
    store, p, t, prob, truth = store_setup
    got = []
    assert store.request(p, t, WHOLE_IMAGE, None, got.append) is None  # building
    assert store.request(p, t, WHOLE_IMAGE, None, got.append) is None  # same build, one more callback
    qtbot.waitUntil(lambda: len(got) == 2 and not store.building, timeout=10_000)
    assert got[0] is got[1]
    curve = got[0]
    assert curve.counts(0.5)[0] == int(np.count_nonzero((prob > np.float32(0.5)) & (truth > 0)))
    assert store.request(p, t, WHOLE_IMAGE, None, got.append) is curve
    assert store.is_exact(curve)


def test_painting_the_truth_makes_a_new_curve(store_setup, qtbot):
    store, p, t, _prob, truth = store_setup
    got = []
    store.request(p, t, WHOLE_IMAGE, None, got.append)
    qtbot.waitUntil(lambda: bool(got) and not store.building, timeout=10_000)
    first = got[0]
    changed = []
    store.data_changed.connect(changed.append)
    t.data = np.zeros_like(truth)  # the user replaced (or painted) the ground truth
    assert changed and changed[-1] is t
    assert store.request(p, t, WHOLE_IMAGE, None, got.append) is None
    qtbot.waitUntil(lambda: len(got) == 2, timeout=10_000)
    assert got[1] is not first and got[1].n_positive == 0


def test_failures_are_reported_and_not_cached(store_setup, qtbot):
    store, p, _t, _prob, _truth = store_setup
    bad = store._session().viewer.add_labels(np.zeros((8, 8), dtype=np.uint8), name="small")
    got = []
    store.request(p, bad, WHOLE_IMAGE, None, got.append)
    qtbot.waitUntil(lambda: bool(got), timeout=10_000)
    assert isinstance(got[0], JobFailed) and "shape" in got[0].message
    assert store.cached(store.key(p, bad, WHOLE_IMAGE.key, None)) is None
