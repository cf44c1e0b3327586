"""One writer per output root: a lease file with an expiry, renewed while the run lives.

Nightly and backfill runs, a retry and a straggler can all aim at the same shard folder.  A run takes
``<root>/_lease.json`` before it touches ``_staging``, renews it while it works, and checks it is
still the holder right before it commits.  A second writer fails at once with a message naming the
holder; a lease whose holder stopped renewing (a crash) expires and can be taken over.

Local disk: the lease is created with O_EXCL, so two processes cannot both create it.  S3 has no
such create in pyarrow, so there the lease is written, then read back after a short pause: a writer
that does not read its own id back has lost the race and stops.  Deployments' concurrency limits keep
such races rare; the re-check before commit catches the rest.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from pipeline.config import StorageConfig
from pipeline.io.commit import OutputNotWritableError
from pipeline.io.storage import resolve_filesystem

LEASE = "_lease.json"


class LeaseHeldError(RuntimeError):
    """Another run holds the output; raised before any work."""


@dataclass
class Holder:
    run_id: str
    host: str
    pid: int
    expires_at: float


def _read(fs: pafs.FileSystem, path: str) -> Holder | None:
    try:
        with fs.open_input_stream(path) as f:
            return Holder(**json.loads(f.read()))
    except (FileNotFoundError, OSError, ValueError, TypeError):
        return None


def _write(fs: pafs.FileSystem, path: str, holder: Holder) -> None:
    with fs.open_output_stream(path) as f:
        f.write(json.dumps(asdict(holder)).encode())


def _gone(holder: Holder) -> bool:
    """A holder on this host whose process has exited (a killed run): its lease need not run out.

    Prefect retries a shard seconds after its child process died; without this the retry would
    wait out the whole TTL.  Holders on other hosts can only expire.
    """
    if holder.host != socket.gethostname() or holder.pid == os.getpid():
        return False
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


class Lease:
    def __init__(self, uri: str, run_id: str, storage: StorageConfig | None = None, ttl_s: float = 300.0):
        self.fs, root = resolve_filesystem(uri, storage)
        self.uri, self.run_id, self.ttl_s = uri, run_id, ttl_s
        self.path = f"{root}/{LEASE}"
        self.local = isinstance(self.fs, pafs.LocalFileSystem)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _me(self) -> Holder:
        return Holder(self.run_id, socket.gethostname(), os.getpid(), time.time() + self.ttl_s)

    def _refuse(self, other: Holder) -> LeaseHeldError:
        left = max(0, other.expires_at - time.time())
        return LeaseHeldError(
            f"{self.uri} is being written by run {other.run_id} ({other.host}, pid {other.pid}); "
            f"its lease runs {left:.0f} s more unless renewed. One writer per output: wait for it, or "
            f"if that run is gone, retry after its lease expires"
        )

    def acquire(self) -> Lease:
        try:
            return self._acquire()
        except OSError as exc:  # a missing bucket or an unwritable path: clear, before any work
            raise OutputNotWritableError(f"cannot write to output {self.uri!r}: {exc}") from None

    def _acquire(self) -> Lease:
        dirname = self.path.rsplit("/", 1)[0]
        self.fs.create_dir(dirname, recursive=True)
        current = _read(self.fs, self.path)
        if current and current.run_id != self.run_id and current.expires_at > time.time() and not _gone(current):
            raise self._refuse(current)
        if self.local:
            if current is not None:  # expired, or ours: replace it
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                raise self._refuse(_read(self.fs, self.path) or current or self._me()) from None
            with os.fdopen(fd, "w") as f:
                json.dump(asdict(self._me()), f)
        else:
            _write(self.fs, self.path, self._me())
            time.sleep(1.0)
            back = _read(self.fs, self.path)
            if back is None or back.run_id != self.run_id:
                raise self._refuse(back or self._me())
        self._thread = threading.Thread(target=self._renew, daemon=True, name="curate-lease")
        self._thread.start()
        return self

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            holder = _read(self.fs, self.path)
            if holder is None or holder.run_id != self.run_id:
                return  # lost it; check() refuses the commit
            _write(self.fs, self.path, self._me())

    def check(self) -> None:
        """Right before commit: still the holder, or refuse to commit."""
        holder = _read(self.fs, self.path)
        if holder is None or holder.run_id != self.run_id:
            raise LeaseHeldError(
                f"{self.uri}: this run ({self.run_id}) no longer holds the output's lease"
                + (f"; run {holder.run_id} does" if holder else "")
                + "; not committing"
            )

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        holder = _read(self.fs, self.path)
        if holder is not None and holder.run_id == self.run_id:
            with contextlib.suppress(OSError):
                self.fs.delete_file(self.path)
