"""The Prefect server restarts while a flow run's shard is being curated.

The flow run (its own process, pointed at a real ``prefect server start``) loses its API for the
length of a restart: state changes and log shipping wait on the client's retries.  The shard's child
process does not need the API at all.  The run must complete, every id be written exactly once, and the
table's lock be free again (the server runs as the product's does, with its leases on disk).
"""

from __future__ import annotations

import os
import time

import psutil
import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from flows.publish import table_lock
from tests.conftest import NO_JUDGE
from tests.flow_process import flow_result, start_flow
from tests.integration.conftest import split_sample
from tests.services import PrefectServer
from tests.table import rows, summaries

pytestmark = pytest.mark.slow


def _shard_child_running(out: str) -> bool:
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "pipeline.cli" in cmd and out in cmd:
            return True
    return False


def test_a_prefect_server_restart_mid_run_loses_and_doubles_nothing(tmp_path, sample_table):
    src = tmp_path / "in"
    split_sample(sample_table, src, parts=1, rows_each=8)
    out = tmp_path / "out"
    server = PrefectServer(tmp_path)
    try:
        api = server.start()
        log = tmp_path / "flow.log"
        env = {**os.environ, "PREFECT_API_URL": api, "HF_HUB_OFFLINE": "1"}
        kwargs = {"source": str(src), "output_root": str(out), "split": "dev", "config_overrides": [NO_JUDGE]}
        proc = start_flow(kwargs, env, log)
        deadline = time.time() + 600
        while not _shard_child_running(str(out)):
            assert proc.poll() is None, log.read_text()[-6000:]
            assert time.time() < deadline, "the shard never started"
            time.sleep(0.5)
        server.stop()  # the API is gone while the shard is curated
        time.sleep(5)
        server.start()  # same port, same database
        assert proc.wait(timeout=1200) == 0, log.read_text()[-6000:]
        result = flow_result(log)
        assert result["completed"], result

        async def final_state():
            async with get_client() as client:
                return (await client.read_flow_run(result["flow_run_id"])).state.type.value

        async def slots_taken():
            async with get_client() as client:
                return (await client.read_global_concurrency_limit_by_name(table_lock(str(out)))).active_slots

        with temporary_settings({PREFECT_API_URL: api}):
            assert run_coro_as_sync(final_state()) == "COMPLETED"
            # The table's lock is free for the next night.  With leases in memory (Prefect's default) the
            # restart forgot the run's lease, its release freed nothing, and every later run waited on it.
            assert run_coro_as_sync(slots_taken()) == 0
    finally:
        server.close()

    got = rows(out)
    assert sorted(got) == sorted(sample_table.column("id").to_pylist()[:8])
    assert len([s for s in summaries(out) if s.get("curate.operation") != "compaction"]) == 1
    assert server.starts == 2
