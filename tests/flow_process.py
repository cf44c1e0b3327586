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

async def attempts(flow_run_id):
    # This run's own task runs (and its subflows'): the server may be shared with other tests' flows.
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    async with get_client() as client:
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[flow_run_id]))
        )
        ids = [flow_run_id, *(f.id for f in subflows)]
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
        return {r.name: r.run_count for r in runs if r.name.startswith("curate-")}

print("FLOW-RESULT " + json.dumps({"completed": state.is_completed(), "message": state.message,
                                   "flow_run_id": str(state.state_details.flow_run_id),
                                   "attempts": run_coro_as_sync(attempts(state.state_details.flow_run_id))}),
      flush=True)
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
    # Anywhere in a line: Ray's progress bars, forwarded to the same file, end without a newline, so the
    # marker can follow one on its line (CI-AS: "…5.04 row/s]\x1b[A\x1b[AFLOW-RESULT {…}").
    lines = [ln.split("FLOW-RESULT ", 1)[1] for ln in log.read_text().splitlines() if "FLOW-RESULT " in ln]
    assert lines, log.read_text()[-6000:]
    return json.loads(lines[-1])
