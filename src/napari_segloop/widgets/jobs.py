"""Running core generators in napari workers, and relaying their events.

A job is a generator run by napari's ``create_worker`` in a thread. It yields
:class:`~napari_segloop.core.events.Progress` and
:class:`~napari_segloop.core.events.Notice` events (and :class:`ModelReady`
when it had to load a model) and returns its result. The docks receive the
events on the main thread through the worker's ``yielded`` and ``returned``
signals; nothing in a job touches a layer or a widget.

Errors: a :class:`~napari_segloop.core.errors.SegloopError` (the user's
mistake, with a message meant for them) is *returned* as :class:`JobFailed`,
so that the dock shows one clean notification instead of a traceback. Any
other exception is a bug and reaches napari's error notifications with its
traceback; a ``RuntimeError`` is re-raised as :class:`JobCrashed` first,
because superqt's worker treats a bare ``RuntimeError`` as "the worker was
deleted" and would only print a warning.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from napari_segloop.core.errors import SegloopError
from napari_segloop.core.events import Notice, Progress


@dataclass
class JobFailed:
    """Returned by a job that stopped on a user error; ``message`` is for the user."""

    message: str


@dataclass
class ModelReady:
    """Yielded by a job that loaded a model the session should keep."""

    bundle: Any


class JobCrashed(Exception):
    """A bug inside a job (wraps a ``RuntimeError`` so that napari reports it)."""


def guarded(gen: Generator[Any, None, Any]) -> Generator[Any, None, Any]:
    """Run ``gen`` to its end, turning user errors into a returned :class:`JobFailed`.

    Parameters
    ----------
    gen : generator
        A core generator (not started yet: its body runs in the worker thread).

    Returns
    -------
    object
        What ``gen`` returns, or :class:`JobFailed`.
    """
    try:
        return (yield from gen)
    except SegloopError as exc:
        return JobFailed(str(exc))
    except MemoryError:
        return JobFailed("Not enough memory for this operation; try the current slice only, "
                         "smaller tiles or a smaller batch.")
    except RuntimeError as exc:
        raise JobCrashed(f"{type(exc).__name__}: {exc}") from exc


def create_job_worker(gen_func: Any, *args: Any, desc: str, **kwargs: Any) -> Any:
    """Create (without starting) a napari worker over ``guarded(gen_func(*args))``.

    The worker carries napari's progress bar (``worker.pbar``) shown in the
    viewer's activity area; :func:`show_progress` moves it.
    """
    from napari.qt.threading import create_worker

    def job() -> Generator[Any, None, Any]:
        return (yield from guarded(gen_func(*args, **kwargs)))

    return create_worker(job, _progress={"total": 0, "desc": desc}, _ignore_errors=True)


def show_progress(worker: Any, event: Progress) -> None:
    """Move ``worker``'s napari progress bar to ``event``."""
    pbar = getattr(worker, "pbar", None)
    if pbar is None or event.total <= 0:
        return
    if pbar.total != event.total:
        pbar.total = event.total
    step = event.done - pbar.n
    if step:
        pbar.update(step)


def notify(notice: Notice) -> None:
    """Show a core :class:`Notice` as a napari notification."""
    from napari.utils.notifications import show_error, show_info, show_warning

    show = {"warning": show_warning, "error": show_error}.get(notice.level, show_info)
    show(notice.text)


def read_and_load(bundle: Any, data: Any) -> Generator[Any, None, tuple[Any, Any]]:
    """In a worker: read lazy layer data (dask, zarr), and load the default model when ``bundle`` is None.

    Yields progress and a :class:`ModelReady` for the session; returns ``(bundle, data)``.
    """
    from napari_segloop.core import bundle as core_bundle
    from napari_segloop.widgets.layer_io import materialize

    yield Progress(0, 0, "reading the image")
    data = materialize(data)
    if bundle is None:
        yield Progress(0, 0, "loading the default model")
        bundle = core_bundle.load_model("default")
        yield ModelReady(bundle)
    return bundle, data
