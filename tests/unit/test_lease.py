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
