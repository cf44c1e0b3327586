"""Write intents: which writers are at work on a table, so that upkeep never sweeps their files.

A writer puts data files in the table's ``data/`` for minutes or hours before the catalog takes them.
Until then they are unreferenced, exactly like a killed writer's, and age alone cannot tell the two
apart: a shard may run for hours, and a Prefect retry, a second ``curate run`` or a Ray Job left
running after a timed-out stop may sweep in the meantime.  So each writer records an intent beside
the table's data, ``<table>/writers/<run>-<pid>.json``, before its first file; renews it while it
works (the file's modification time is the heartbeat); and removes it once its commit is decided.
The orphan sweep spares every file written since the oldest live intent began.

Files, not rows in the catalog's database: they work the same for SQLite, Postgres and REST
catalogs, need only the permission a writer already has (writing under the table's location), and a
heartbeat never contends with commits for SQLite's lock.

An intent is dead when its heartbeat is older than ``ttl_s`` (a writer on another host that died),
or at once when it names a process on this host that is gone (a killed ``curate run``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow.fs as pafs

log = logging.getLogger("pipeline")

FOLDER = "writers"
# A live writer renews its intent this often; one silent for ttl_s (several beats) is dead.
BEAT_S = 60.0
DEFAULT_TTL_S = 15 * 60.0

Resolve = Callable[[str], tuple[pafs.FileSystem, str]]


# Locations the sweep can list and compare: local paths and S3.  Any other (gs://, abfs:// from a REST
# catalog) is left alone rather than compared wrongly, which would make every file look orphaned.
SWEEPABLE = frozenset({"file", "s3"})


def normalised(location: str) -> tuple[str, str]:
    """(scheme, path without its scheme) as the table's own FileIO reads ``location``: ``file:///w/x``,
    ``/w/x`` and ``/w/../w/x`` are one local path; ``s3://b/k`` and ``s3a://b/k`` are ``b/k``."""
    from pyiceberg.io.pyarrow import PyArrowFileIO

    scheme, _, path = PyArrowFileIO.parse_location(location)
    if scheme in ("s3a", "s3n"):
        scheme = "s3"
    return scheme, path


def as_uri(scheme: str, path: str) -> str:
    """A scheme-less path of ``normalised`` as a URI the storage layer resolves."""
    return f"s3://{path}" if scheme == "s3" else f"file://{path}"


def _process_started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


@dataclass(frozen=True)
class Intent:
    run: str
    host: str
    pid: int
    pid_started: float | None
    started: float
    beat: float  # the file's modification time

    def alive(self, now: float, ttl_s: float) -> bool:
        if now - self.beat > ttl_s:
            return False
        if self.host == socket.gethostname():
            # Same host: the process itself answers, and a reused PID has another start time.
            started = _process_started(self.pid)
            return started is not None and (self.pid_started is None or abs(started - self.pid_started) < 1.0)
        return True


class WriteIntent:
    """``with WriteIntent(location, run, resolve):`` around everything that writes data files of the
    table at ``location``, until its commit is decided."""

    def __init__(self, location: str, run: str, resolve: Resolve, beat_s: float = BEAT_S):
        self.fs, folder = resolve(f"{location.rstrip('/')}/{FOLDER}")
        self.path = f"{folder}/{run}-{os.getpid()}.json"
        self.body = json.dumps(
            {
                "run": run,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "pid_started": _process_started(os.getpid()),
                "started": time.time(),
            }
        ).encode()
        self.beat_s = beat_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        with self.fs.open_output_stream(self.path) as out:
            out.write(self.body)

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                self._write()
            except OSError as exc:  # the next beat tries again; ttl_s spans several beats
                log.warning("could not renew the write intent %s: %s", self.path, exc)

    def __enter__(self) -> WriteIntent:
        self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        self._write()
        self._thread = threading.Thread(target=self._beat, name="write-intent", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self.fs.delete_file(self.path)
        except OSError:  # dead once its heartbeat is old; the sweep removes it then
            log.warning("could not remove the write intent %s", self.path)


def read_intents(location: str, resolve: Resolve) -> list[tuple[str, Intent | None]]:
    """(path, intent) of every intent file at ``location``; an unreadable one is (path, None)."""
    fs, folder = resolve(f"{location.rstrip('/')}/{FOLDER}")
    out = []
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        if info.type != pafs.FileType.File:
            continue
        beat = info.mtime.timestamp() if info.mtime else time.time()
        try:
            with fs.open_input_stream(info.path) as f:
                d = json.loads(f.read(1 << 16))
            out.append(
                (info.path, Intent(d["run"], d["host"], int(d["pid"]), d.get("pid_started"), d["started"], beat))
            )
        except (OSError, ValueError, KeyError, TypeError):
            # Half-written or foreign: live while fresh (as if it were a writer's), by its time alone.
            out.append((info.path, Intent("?", "?", -1, None, beat, beat)))
    return out


def live_since(location: str, resolve: Resolve, ttl_s: float = DEFAULT_TTL_S) -> float | None:
    """When the oldest live writer of the table at ``location`` began (epoch s); None when none is at
    work.  Dead intents older than ``ttl_s`` are removed on the way."""
    now = time.time()
    oldest = None
    for path, intent in read_intents(location, resolve):
        if intent.alive(now, ttl_s):
            oldest = intent.started if oldest is None else min(oldest, intent.started)
        elif now - intent.beat > ttl_s:
            fs, _ = resolve(location)
            with contextlib.suppress(OSError):
                fs.delete_file(path)
    return oldest


@contextlib.contextmanager
def writing(tables, run: str, resolve: Resolve):
    """A write intent on each of ``tables`` for the ``with`` block."""
    with contextlib.ExitStack() as stack:
        for t in tables:
            scheme, path = normalised(t.location())
            if scheme in SWEEPABLE:  # elsewhere no sweep of ours runs, so there is nothing to warn off
                stack.enter_context(WriteIntent(as_uri(scheme, path), run, resolve))
        yield
