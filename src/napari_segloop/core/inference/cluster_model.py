"""The model on every worker of a dask cluster, deserialised once per worker process.

``Client.scatter(model, broadcast=True)`` copies the model to every worker, but
dask's Active Memory Manager (on by default) drops the copies it thinks
superfluous: as soon as fewer tasks wait for the model than workers hold it, a
worker loses its copy and fetches (and deserialises) it again for its next task.
A worker plugin is not data the memory manager manages: the scheduler hands it
to every worker once, including workers that join later (an adaptive
dask-jobqueue cluster) or are restarted after a crash, and it stays until it is
unregistered.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from distributed import WorkerPlugin, get_worker

__all__ = ["ModelPlugin", "model_on_workers", "with_model"]


class ModelPlugin(WorkerPlugin):
    """Carries one model to the workers; tasks read it with :func:`with_model`.

    Parameters
    ----------
    model
        The model (any picklable object, usually a ``ModelBundle``).
    name
        The plugin's name on the cluster, unique per run.
    """

    def __init__(self, model: Any, name: str) -> None:
        self.model = model
        self.name = name


@contextmanager
def model_on_workers(client: Any, model: Any) -> Iterator[str]:
    """Register ``model`` on every worker for the ``with`` block; yields the name tasks look it up by.

    The plugin is unregistered at the end (the workers free the model), also when
    the block raises or its generator is closed.
    """
    name = f"segloop-model-{uuid.uuid4().hex}"
    client.register_plugin(ModelPlugin(model, name), name=name)
    try:
        yield name
    finally:
        try:
            client.unregister_worker_plugin(name)
        except Exception:  # a closed cluster has nothing left to free
            pass


def with_model(task: Callable[..., Any], name: str, *args: Any) -> Any:
    """Run ``task(model, *args)`` on a worker with the model of plugin ``name`` (no copy)."""
    return task(get_worker().plugins[name].model, *args)
