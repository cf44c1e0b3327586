"""A shard that runs past ``shard_timeout_s`` is stopped, fails with the reason, and commits nothing."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from pipeline.config import build_config
from pipeline.launch import ChildProcessLauncher, ShardTimedOut
from pipeline.shards import plan_shards
from tests.integration.conftest import split_sample

pytestmark = pytest.mark.slow


def _session(sid: int) -> set[int]:
    found = set()
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.info["pid"]) == sid:
                found.add(p.info["pid"])
        except (ProcessLookupError, PermissionError):
            continue
    return found


def test_a_shard_past_its_time_limit_is_stopped_and_fails_with_the_reason(tmp_path, sample_table):
    (path,) = split_sample(sample_table, tmp_path / "in", parts=1, rows_each=4)
    (spec,) = plan_shards([str(path)], str(tmp_path / "out"), "dev")
    # A judge that asks for a GPU this machine lacks can never be placed: the shard is certainly still
    # running when its time is up, however fast or slow the machine is (the stall timeout is far off).
    # 120 s, so that even a busy machine has started the shard's Ray and its judge stage by then (at 40 s
    # one CI run beside a benchmark saw only the child and two of Ray's processes; at 75 s a 2-core
    # AVX2-only EPYC running two other test workers had not yet started the judge's stage).
    cfg = build_config(overrides=["shard_timeout_s=120", "judge.num_gpus_per_actor=1", "stall_timeout_s=3600"])
    seen: set[int] = set()
    outcome: list[BaseException] = []

    def launch():
        try:
            ChildProcessLauncher().launch(spec, cfg, logging.getLogger("test"), run_id="timeout")
        except BaseException as exc:
            outcome.append(exc)

    # The suite's own children (an ephemeral Prefect server an earlier test started) are not the shard's.
    before = {c.pid for c in psutil.Process().children()}
    worker = threading.Thread(target=launch)
    worker.start()
    # Every process of the shard: its child's session (the launcher starts it in a new one).
    while worker.is_alive():
        for child in psutil.Process().children():
            if child.pid not in before:
                seen |= {child.pid} | _session(child.pid)
        time.sleep(0.5)
    worker.join()
    (exc,) = outcome
    assert isinstance(exc, ShardTimedOut)
    assert "ran past shard_timeout_s (120 s); its processes were stopped" in str(exc)
    # The killed child kept no log of its own: the launcher put it where the run would have, and names it
    # (it was left in the temp folder, unnamed, each time).
    kept = Path(str(exc).rsplit("its log: ", 1)[1])
    assert kept.parent == Path(spec.output) / "_logs" and kept.name.startswith("curate-run-"), str(exc)
    # The run's own log: Ray's progress shows the judge's actor waiting for its GPU.
    assert "vLLMEngineStageUDF" in kept.read_text() and "1 GPU" in kept.read_text()
    assert len(seen) > 3  # the child, and the Ray it started
    assert not (Path(spec.output) / "warehouse").exists() or not any(
        (Path(spec.output) / "warehouse").rglob("*.parquet")
    )
    # Nothing it started is left, found by PID, not by name.
    deadline = time.time() + 15
    while (alive := [pid for pid in seen if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]) and (
        time.time() < deadline
    ):
        time.sleep(0.5)
    assert alive == [], [(p.pid, p.name(), p.status(), os.getsid(p.pid)) for p in map(psutil.Process, alive)]
