"""A Ray dashboard that accepts connections and never answers: the shard fails within its deadline,
saying why, instead of wedging the night (and, through the deployment's ENQUEUE limit, every later one)."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from pipeline.config import build_config
from pipeline.launch import RayJobLauncher, RayJobUnreachable
from pipeline.shards import plan_shards

pytestmark = pytest.mark.slow


def test_a_dashboard_that_never_answers_fails_the_shard_within_its_deadline(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_say_nothing():
        listener.settimeout(0.5)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
                held.append(conn)  # read nothing, answer nothing, keep it open
            except TimeoutError:
                continue

    acceptor = threading.Thread(target=accept_and_say_nothing, daemon=True)
    acceptor.start()
    address = f"http://127.0.0.1:{listener.getsockname()[1]}"
    (spec,) = plan_shards([str(tmp_path / "in.parquet")], str(tmp_path / "out"), "dev")
    cfg = build_config(overrides=["ray_job.call_timeout_s=5"])
    t0 = time.monotonic()
    try:
        with pytest.raises(RayJobUnreachable, match=r"no answer within 5 s \(ray_job.call_timeout_s\)") as err:
            RayJobLauncher(address).launch(spec, cfg, logging.getLogger("test"), run_id="r")
        took = time.monotonic() - t0
    finally:
        stop.set()
        # The acceptor sees the stop within its 0.5 s timeout; closing the listener under its accept()
        # would raise "Bad file descriptor" in that thread, during whichever test runs next.
        acceptor.join(timeout=5)
        for conn in held:
            conn.close()
        listener.close()
    assert address in str(err.value) or "Ray dashboard" in str(err.value)
    assert held, "the client never connected: the test exercised nothing"
    assert took < 30
