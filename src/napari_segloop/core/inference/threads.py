"""How many CPU threads torch may use: a policy that stays fast when the machine is busy.

torch uses every core by default. Its intra-op thread pool splits each
convolution into as many pieces as threads and waits for the slowest: when
another process (or napari's own drawing) holds one core, every piece that
lands on it stalls the whole operation, and a prediction that takes 4 s with
one thread can take minutes with two (measured on a 2-core machine; see
``benchmarks/bench_threads.py`` and ``docs/performance.md``).

The ``auto`` policy leaves one core to the rest of the machine (napari's
event loop, the user's other programs) and never asks for more threads than
the cores this process may run on: ``max(1, cores - 1)``, at most
:data:`MAX_AUTO_THREADS`. ``torch.set_num_threads`` is process-wide, so the
policy is applied once per job, from the job's thread, before any work.
"""

from __future__ import annotations

import os

__all__ = ["MAX_AUTO_THREADS", "apply_threads", "available_cores", "resolve_threads"]

#: ``auto`` never uses more intra-op threads than this (beyond it CPU inference of these
#: small networks stops scaling and only adds contention).
MAX_AUTO_THREADS = 8


def available_cores() -> int:
    """Number of CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # macOS and Windows have no affinity mask
        return max(1, os.cpu_count() or 1)


def resolve_threads(threads: int | str | None = "auto") -> int:
    """The number of torch CPU threads for a setting.

    Parameters
    ----------
    threads : int, "auto" or None
        A positive number, or ``auto``/None for the policy above.

    Raises
    ------
    ValueError
        For a number below 1 or an unknown word.
    """
    if threads in (None, "auto"):
        return max(1, min(available_cores() - 1, MAX_AUTO_THREADS))
    if isinstance(threads, str):
        try:
            threads = int(threads)
        except ValueError:
            raise ValueError(f"threads must be 'auto' or a number, not {threads!r}") from None
    if isinstance(threads, bool) or int(threads) < 1:
        raise ValueError(f"threads must be at least 1, not {threads!r}")
    return int(threads)


def apply_threads(threads: int | str | None = "auto") -> int:
    """Set torch's intra-op CPU threads by the policy; return the number now in force."""
    import torch

    n = resolve_threads(threads)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n
