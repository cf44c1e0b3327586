"""Run ``curate_dataset`` in a process of its own, as a deployment's flow run would, and read back
its final state and its shard tasks' attempt counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

FLOW = """
import json, sys
from prefect import get_client
from prefect.utilities.asyncutils import run_coro_as_sync
from flows.curation import curate_dataset

state = curate_dataset(**json.loads(sys.argv[1]), return_state=True)

async def attempts():
    async with get_client() as client:
        return {r.name: r.run_count for r in await client.read_task_runs() if r.name.startswith("curate-")}

print("FLOW-RESULT " + json.dumps({"completed": state.is_completed(), "message": state.message,
                                   "flow_run_id": str(state.state_details.flow_run_id),
                                   "attempts": run_coro_as_sync(attempts())}), flush=True)
"""


def start_flow(kwargs: dict, env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen(
            [sys.executable, "-c", FLOW, json.dumps(kwargs)],
            cwd=REPO,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def flow_result(log: Path) -> dict:
    lines = [ln for ln in log.read_text().splitlines() if ln.startswith("FLOW-RESULT ")]
    assert lines, log.read_text()[-6000:]
    return json.loads(lines[-1].removeprefix("FLOW-RESULT "))
