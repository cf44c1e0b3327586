"""A real Prefect server, the real deployments and a real worker: a run triggered the way the UI does,
and a night scheduled by the server's own scheduler.

The deployments are applied with a daily cron due two minutes after the module starts, in a timezone
that is not the machine's, so the scheduler, not the test, must create that night's run.  Meanwhile a
run is triggered as the UI's "Custom run" does, with one shard made to fail after its data is staged
but before commit; the retry must leave exactly one committed copy, and every id must appear once.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from pipeline.shards import plan_shards
from tests.conftest import REPO
from tests.integration.conftest import split_sample
from tests.services import VENV_BIN, background, prefect_server
from tests.table import rows, summaries, tables

pytestmark = pytest.mark.slow


def _histogram_from_markdown(md: str) -> dict[int, int]:
    counts = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] in {"1", "2", "3", "4", "5"}:
            counts[int(cells[0])] = int(cells[1])
    return counts


def _sync(coro_fn):
    async def call():
        async with get_client() as client:
            return await coro_fn(client)

    return run_coro_as_sync(call())


async def _wait_final(client, flow_run_id, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = await client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(3)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout} s")


# Not the machine's timezone: the cron must be read in the deployment's own.
TZ = "America/New_York"


@dataclass
class Nightly:
    api: str
    out: Path
    specs: list
    deployment: object
    due: datetime
    manual_run: object
    worker_log: Path


def _cron_due_in(seconds: float, tz: str) -> datetime:
    """The next whole minute at least ``seconds`` away, in ``tz``."""
    soon = datetime.now(ZoneInfo(tz)) + timedelta(seconds=seconds)
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _deployment_runs(deployment_id) -> list:
    return _sync(
        lambda c: c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    )


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, sample_table):
    tmp = tmp_path_factory.mktemp("nightly")
    src = tmp / "cv" / "validated"
    split_sample(sample_table, src, parts=2)
    out = tmp / "curated"
    specs = plan_shards([str(src)], str(out), "validated", 2)

    with prefect_server(tmp) as api, temporary_settings({PREFECT_API_URL: api}):
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "HF_HUB_OFFLINE": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            # Test-only fault injection (tests/fault_injection/sitecustomize.py), in every process the
            # worker starts: the second shard's first commit fails after its data files are written.
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "tests" / "fault_injection"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "CURATE_TEST_FAULT": f"{specs[1].shard_id}:1",
            "CURATE_TEST_FAULT_DIR": str(tmp / "faults"),
        }
        due = _cron_due_in(100, TZ)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "deployments.deploy",
                "--source",
                str(src),
                "--output-root",
                str(out),
                "--limit",
                "5",
                "--num-shards",
                "2",
                "--cron",
                f"{due.minute} {due.hour} * * *",
                "--timezone",
                TZ,
            ],
            env=env,
            cwd=REPO,
            check=True,
            timeout=120,
        )
        dep = _sync(lambda c: c.read_deployment_by_name("curate-common-voice/nightly"))
        # What the UI's "Custom run" does: a flow run from the deployment with overrides.
        manual = _sync(lambda c: c.create_flow_run_from_deployment(dep.id, parameters={"limit": 2}))
        worker_log = tmp / "worker.log"
        worker_cmd = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "audio-curation"]
        OUT[:] = [out]
        with background(worker_cmd, env, worker_log):
            yield Nightly(api, out, specs, dep, due, manual, worker_log)


def _outcome(flow_run_id) -> str:
    """The run's outcome as its state message must say it, from its shards' snapshots."""
    c = {"in": 0, "kept": 0, "rejected": 0, "quarantined": 0}
    for snap in summaries_of(flow_run_id):
        for k, v in json.loads(snap["curate.counts"]).items():
            c[k] += v
    return f"{c['kept']}/{c['in']} kept, {c['rejected']} rejected, {c['quarantined']} quarantined"


OUT: list[Path] = []


def summaries_of(flow_run_id) -> list[dict]:
    """The snapshots a flow run's shards committed (their run ids start with the flow run's)."""
    return [s for s in summaries(OUT[0]) if s.get("curate.run-id", "").startswith(str(flow_run_id)[:8])]


def test_a_custom_run_from_the_ui_retries_a_failed_shard_and_publishes_artifacts(nightly):
    run, out, specs = nightly.manual_run, nightly.out, nightly.specs
    final = _sync(lambda c: _wait_final(c, run.id, timeout=1200))
    worker_log = nightly.worker_log.read_text()
    assert final.state.is_completed(), worker_log[-6000:]
    # The runs list reads at a glance: what and when, and the outcome beside the state.
    assert final.name == f"validated-common-voice-{final.expected_start_time:%Y-%m-%d}"

    async def details(client):
        arts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
        )
        tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
        return arts, tasks

    artifacts, task_runs = _sync(details)

    # The no-overlap limit is on the deployment.
    dep = nightly.deployment
    assert dep.concurrency_limit == 1 or dep.global_concurrency_limit.limit == 1

    # The faulted shard was retried once; the other ran once.
    runs = {t.name: t.run_count for t in task_runs if t.name.startswith("curate-validated-")}
    assert runs == {f"curate-validated-{specs[0].shard_id}": 1, f"curate-validated-{specs[1].shard_id}": 2}
    assert "injected fault" in worker_log

    # Every id exactly once in the table; one snapshot per shard, the faulted one's only from its retry.
    got = rows(out)
    assert len(got) == 4
    snaps = summaries_of(run.id)
    assert sorted(s["curate.shard"] for s in snaps) == ["0/2", "1/2"]
    assert final.state.message == _outcome(run.id)

    by_key = {a.key: a for a in artifacts}
    files = by_key["common-voice-validated-files"]
    table = files.data if isinstance(files.data, list) else json.loads(files.data)
    clips, _ = tables(out)
    added = {
        f.file_path
        for s in clips.snapshots()
        if s.snapshot_id in {x["_id"] for x in snaps}
        for m in s.manifests(clips.io)
        for e in m.fetch_manifest_entry(clips.io)
        if e.snapshot_id == s.snapshot_id and e.status.name == "ADDED"
        for f in [e.data_file]
    }
    assert {r["file"] for r in table} == added  # the output file list is what the snapshots added
    assert sum(r["rows"] for r in table) == 4

    scores = [r["score"] for r in got.values() if r["score"] is not None]
    want = {k: scores.count(k) for k in range(1, 6)}
    histogram = by_key["common-voice-validated-histogram"].data
    assert _histogram_from_markdown(histogram) == want
    assert "WER against the prompted sentence" in histogram and "Why rows were not kept" in histogram
    summary = by_key["common-voice-validated-summary"].data
    assert "| clips in | 4 |" in summary and str(out) in summary and "`score` ≥ 3.0" in summary
    assert "`curate.en_clips` @" in summary
    assert by_key["common-voice-validated-progress"].data == 100.0


def test_the_schedule_fires_by_itself_and_the_night_completes(nightly):
    """The server's scheduler, not the test, creates the night's run at the cron time in the deployment's
    timezone; the worker picks it up and it completes with committed output.  With the SQLAlchemy that
    Prefect 3.7.7 allows but its scheduler cannot use (2.1.x), no run is ever created and this fails."""
    dep, due = nightly.deployment, nightly.due
    assert dep.schedules and dep.schedules[0].schedule.cron == f"{due.minute} {due.hour} * * *"
    assert dep.schedules[0].schedule.timezone == TZ

    # Upcoming: the scheduler fills the next nights in by itself, tonight's among them.
    deadline = time.time() + 120
    while time.time() < deadline:
        upcoming = [r for r in _deployment_runs(dep.id) if r.auto_scheduled]
        if len(upcoming) >= 3:
            break
        time.sleep(2)
    starts = sorted(r.expected_start_time for r in upcoming)
    assert len(starts) >= 3, f"the scheduler created {len(starts)} run(s); see the server's log"
    assert starts[0] == due, (starts[0], due)
    local = [s.astimezone(ZoneInfo(TZ)) for s in starts]
    # Night after night at the same local time.
    assert all((b.date() - a.date()).days == 1 for a, b in itertools.pairwise(local))
    assert {(t.hour, t.minute) for t in local} == {(due.hour, due.minute)}
    tonight = min(upcoming, key=lambda r: r.expected_start_time)

    final = _sync(lambda c: _wait_final(c, tonight.id, timeout=1500))
    assert final.state.is_completed(), nightly.worker_log.read_text()[-6000:]
    assert final.auto_scheduled and final.start_time >= due
    assert final.name == f"validated-common-voice-{due:%Y-%m-%d}"
    # Its shards ran with the deployment's own parameters (limit 5 each) and are committed: the clips the
    # custom run scored already were not scored again.
    assert len(rows(nightly.out)) == 10
    snaps = summaries_of(final.id)
    assert sum(int(s["curate.engine-rows"]) for s in snaps) == 6
    assert final.state.message == _outcome(final.id)
    assert all(s["curate.run-id"] for s in snaps) and {
        t for t in tables(nightly.out)[0].refs() if t.startswith("nightly-")
    }
    # The nights after it are still upcoming.
    later = [r for r in _deployment_runs(dep.id) if r.auto_scheduled and r.state.is_scheduled()]
    assert (
        later
        and min(r.expected_start_time for r in later).astimezone(ZoneInfo(TZ)).date()
        == (due + timedelta(days=1)).date()
    )
