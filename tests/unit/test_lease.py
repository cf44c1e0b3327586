"""One writer per output: a second writer fails fast; a lapsed lease is taken over; a lost one never commits."""

from __future__ import annotations

import json
import time

import pytest

from pipeline.io.lease import LEASE, Lease, LeaseHeldError


def test_a_second_writer_fails_fast_naming_the_holder(tmp_path):
    with Lease(str(tmp_path), "run-a"), pytest.raises(LeaseHeldError, match=r"being written by run run-a .*pid"):
        Lease(str(tmp_path), "run-b").acquire()
    Lease(str(tmp_path), "run-b").acquire().release()  # released: free again


def test_an_expired_lease_is_taken_over_and_its_holder_cannot_commit(tmp_path):
    stale = Lease(str(tmp_path), "crashed", ttl_s=0.2).acquire()
    stale._stop.set()  # the holder stopped renewing (it crashed)
    time.sleep(0.5)
    with Lease(str(tmp_path), "retry") as fresh:
        fresh.check()
        with pytest.raises(LeaseHeldError, match=r"no longer holds the output's lease; run retry does"):
            stale.check()
    assert not (tmp_path / LEASE).exists()


def test_the_lease_is_renewed_while_the_run_lives(tmp_path):
    with Lease(str(tmp_path), "long", ttl_s=0.6):
        first = json.loads((tmp_path / LEASE).read_text())["expires_at"]
        time.sleep(0.5)
        assert json.loads((tmp_path / LEASE).read_text())["expires_at"] > first
        with pytest.raises(LeaseHeldError):
            Lease(str(tmp_path), "other").acquire()


def _write_holder(path, **holder) -> None:
    (path / LEASE).write_text(json.dumps({"expires_at": time.time() + 300, **holder}))


def test_a_lease_whose_process_is_gone_is_taken_over_at_once(tmp_path):
    """Prefect retries a shard seconds after its child was killed: it must not wait out the TTL."""
    import socket
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_holder(tmp_path, run_id="killed", host=socket.gethostname(), pid=dead.pid)
    with Lease(str(tmp_path), "retry") as lease:
        lease.check()


def test_a_lease_held_on_another_host_is_honoured_until_it_expires(tmp_path):
    # Its process cannot be seen from here, so only its expiry frees it.
    _write_holder(tmp_path, run_id="elsewhere", host="some-other-node", pid=1)
    with pytest.raises(LeaseHeldError, match=r"run elsewhere \(some-other-node, pid 1\)"):
        Lease(str(tmp_path), "retry").acquire()
