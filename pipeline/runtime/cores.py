"""Pure Python work spread over this machine's cores, in worker processes.

The driver's work between the engines is columnar, but for one step: measuring WER/CER again when what it
depends on changed (a new agreement key), through Whisper's normaliser, which is Python.  The GIL keeps
that to one core; a table of millions of rows is measured in chunks by a pool of processes instead.

The pool starts on the first call that needs it (spawned, so no thread or lock of the parent's crosses
over), serves the rest of the run, and is shut down after the run's updates and at exit; a worker whose
driver was killed exits by itself.  A pool that cannot start or breaks leaves the work to this process,
with a log line: slower, never lost.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

log = logging.getLogger("pipeline")

T = TypeVar("T")
R = TypeVar("R")

MAX_WORKERS = 8  # a driver shares its host with Ray's workers; more buys little for a step of minutes
WATCH_S = 1.0  # how often a worker checks that its driver is alive

_pool: cf.ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _workers() -> int:
    """The cores this process may run on (its affinity, as a container or ``taskset`` limits it), capped."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    return max(1, min(usable, MAX_WORKERS))


def _exit_with(parent: int) -> None:
    """A worker's initializer: exit once ``parent`` is gone.  A driver killed outright (SIGKILL, the OOM
    killer, a launcher's timeout) cannot stop its pool, and its idle workers would wait on the queue forever."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_S)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _get_pool() -> cf.ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = cf.ProcessPoolExecutor(
                max_workers=_workers(),
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with,
                initargs=(os.getpid(),),
            )
        return _pool


def shutdown() -> None:
    """Stop the pool's processes (the next call that needs them starts a new one)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def map_chunks(fn: Callable[..., list[R]], items: Sequence[T], chunk: int, *args: Any) -> list[R]:
    """``fn(piece, *args)`` over consecutive pieces of ``items`` of ``chunk`` items each, results in order.

    In worker processes when there are two pieces or more and two cores or more; else here.  ``fn`` must be
    a module-level function (a worker imports it by name) that returns one result per item."""
    pieces = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    if len(pieces) < 2 or _workers() < 2:
        return [r for p in pieces for r in fn(p, *args)]
    try:
        done = list(_get_pool().map(fn, pieces, *([a] * len(pieces) for a in args)))
    except (cf.process.BrokenProcessPool, OSError, RuntimeError) as exc:
        log.warning("worker processes failed (%s: %s); measuring in this process", type(exc).__name__, exc)
        shutdown()
        return [r for p in pieces for r in fn(p, *args)]
    return [r for rs in done for r in rs]
