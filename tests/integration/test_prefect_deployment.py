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

from pipeline.metrics import WER_BINS, wer_histogram
from pipeline.shards import plan_shards
from tests.conftest import REPO
from tests.integration.conftest import split_sample
from tests.services import VENV_BIN, WebhookReceiver, background
from tests.table import rows, summaries, tables

pytestmark = pytest.mark.slow


def _wer_from_markdown(md: str) -> dict[str, int]:
    """The WER table's clips per bin (kept + rejected); a row may carry the max_wer mark."""
    counts = {}
    section = md.split("## WER against the prompted sentence")[1].split("\n## ")[0]
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 5 and cells[0].split(" ")[0] in WER_BINS:
            counts[cells[0].split(" ")[0]] = int(cells[1]) + int(cells[2])
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
    hook: WebhookReceiver


def _cron_due_in(seconds: float, tz: str) -> datetime:
    """The next whole minute at least ``seconds`` away, in ``tz``."""
    soon = datetime.now(ZoneInfo(tz)) + timedelta(seconds=seconds)
    return soon.replace(second=0, microsecond=0) + timedelta(minutes=1)


def _deployment_runs(deployment_id) -> list:
    return _sync(
        lambda c: c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    )


@pytest.fixture(scope="module")
def nightly(tmp_path_factory, sample_table, prefect_api):
    tmp = tmp_path_factory.mktemp("nightly")
    src = tmp / "cv" / "validated"
    split_sample(sample_table, src, parts=2)
    out = tmp / "curated"
    specs = plan_shards([str(src)], str(out), "validated", 2)

    api = prefect_api
    with temporary_settings({PREFECT_API_URL: api}):
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
        due = _cron_due_in(60, TZ)
        hook = WebhookReceiver()
        # The nights run without the judge (tests/conftest.py NO_JUDGE): what is tested here is the
        # deployment, its schedule, retries and artifacts; a config file on the worker says so.
        config_file = tmp / "nightly.yaml"
        config_file.write_text("judge:\n  locales: []\n")
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
                "--alert-webhook",
                hook.url,
                "--config",
                str(config_file),
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
        try:
            with background(worker_cmd, env, worker_log):
                yield Nightly(api, out, specs, dep, due, manual, worker_log, hook)
        finally:
            hook.close()


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
    # The runs list reads at a glance: what, that it was run by hand and when, and how it went.
    base, outcome = final.name.split(" · ")
    assert base.startswith("validated-common-voice-manual-") and outcome == final.state.message.split(",")[0]

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
    data_rows = [r for r in table if r["kind"] == "data"]
    assert {r["path"] for r in data_rows} == added  # the output file list is what the snapshots added
    assert sum(r["rows"] for r in data_rows) == 4

    histogram = by_key["common-voice-validated-histogram"].data
    assert _wer_from_markdown(histogram) == wer_histogram([r["wer"] for r in got.values() if r["error"] is None])
    assert "The judge scored no clip" in histogram and "Why rows were not kept" in histogram
    summary = by_key["common-voice-validated-summary"].data
    assert "| clips in | 4 |" in summary and str(out) in summary and "judge | off (judge.locales is empty)" in summary
    assert "`curate.en_clips` @" in summary and f"| input | `{nightly.specs[0].sources[0]}` |" in summary
    assert by_key["common-voice-validated-progress"].data == 100.0
    # Cards and a key's history compare nights without clicks: the headline is in the description.
    head = final.state.message.split(",")[0]  # "4/4 kept"
    for name in ("summary", "histogram"):
        assert by_key[f"common-voice-validated-{name}"].description.startswith(head), name
    assert "data files" in files.description
    logs = [r["path"] for r in table if r["kind"] == "log"]
    assert len(logs) == 2 and all(Path(p).is_file() for p in logs)  # one per shard, full paths
    assert all(r["path"].startswith("file:///") for r in table if r["kind"] == "data")
    rejected = by_key["common-voice-validated-rejected"]
    not_kept = [rid for rid, r in got.items() if not r["kept"]]
    listed = json.loads(rejected.data) if isinstance(rejected.data, str) else rejected.data
    assert sorted(r["id"] for r in listed if r["id"]) == sorted(not_kept)
    trend = by_key["common-voice-validated-trend"]
    (row,) = json.loads(trend.data) if isinstance(trend.data, str) else trend.data
    assert row["clips"] == 4 and row["run"] == base and row["table clips"] == 4 and row["kind"] == "manual"
    # Its snapshots are tagged as a manual run's, which expiry may remove; a night's would say nightly.
    assert {t for t in tables(out)[0].refs() if t.startswith("manual-")}


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
    # Scheduled at the cron time; a worker submits runs up to PREFECT_WORKER_PREFETCH_SECONDS (10 s) early,
    # so the flow itself may start a moment before it.
    assert final.auto_scheduled and final.expected_start_time == due
    assert final.start_time >= due - timedelta(seconds=15)
    assert final.name == f"validated-common-voice-{due:%Y-%m-%d} · {final.state.message.split(',')[0]}"
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
    # The trend holds tonight, the first night: the custom run before it was manual, not a night.
    rows_ = _artifact_rows(final.id, "common-voice-validated-trend")
    assert len(rows_) == 1 and final.name.startswith(rows_[-1]["run"]) and rows_[-1]["table clips"] == 10
    assert rows_[-1]["kind"] == "night"


def test_a_custom_run_that_changes_nothing_commits_nothing_and_says_so(nightly):
    """As from the UI, on an up-to-date table, with settings the table has not seen (a limit): the run
    plans, finds every clip up to date, and commits no snapshot and no tag; its name, message and summary
    agree, and the trend gains no row."""
    dep, out = nightly.deployment, nightly.out
    snapshots, refs = len(tables(out)[0].snapshots()), set(tables(out)[0].refs())
    run = _sync(lambda c: c.create_flow_run_from_deployment(dep.id, parameters={"limit": 3}))
    final = _sync(lambda c: _wait_final(c, run.id, timeout=900))
    assert final.state.is_completed(), nightly.worker_log.read_text()[-6000:]
    assert final.state.message.startswith("nothing to do") and final.name.endswith(" · nothing to do")
    assert len(tables(out)[0].snapshots()) == snapshots and set(tables(out)[0].refs()) == refs
    summary = next(a for a in _artifacts(final.id) if a.key == "common-voice-validated-summary")
    assert "nothing to do" in summary.description or "nothing" in summary.data
    assert all(r["kind"] == "night" for r in _artifact_rows(final.id, "common-voice-validated-trend"))


def _artifacts(flow_run_id) -> list:
    async def read(client):
        return await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )

    return _sync(read)


def _artifact_rows(flow_run_id, key: str) -> list[dict]:
    (art,) = [a for a in _artifacts(flow_run_id) if a.key == key]
    return json.loads(art.data) if isinstance(art.data, str) else art.data


def test_alerts_fire_for_a_failed_night_and_for_a_kept_drop(nightly):
    """The automations deploy.py ships, on the real server: a night that fails (a source that does not
    exist: refused, not retried) and a night whose kept % falls (a stricter gate, decided again from
    stored scores: every clip is now too short) each POST to the webhook."""
    dep, hook = nightly.deployment, nightly.hook
    bad = _sync(lambda c: c.create_flow_run_from_deployment(dep.id, parameters={"source": "/nonexistent/night"}))
    final = _sync(lambda c: _wait_final(c, bad.id, timeout=900))
    assert final.state.is_failed() and "does not exist" in final.state.message, final.state.message
    attempts = _sync(lambda c: c.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[bad.id]))))
    assert {t.run_count for t in attempts if t.name.startswith("curate-")} == {1}  # refused: no retries
    got = hook.wait_for(lambda x: final.name in x.get("text", "") and "Failed" in x.get("subject", ""), 180)
    assert got and "does not exist" in got["text"], hook.received

    strict = {"config_overrides": ["gates.min_duration_s=60"], "alert_min_nights": 1}
    drop = _sync(lambda c: c.create_flow_run_from_deployment(dep.id, parameters=strict))
    final = _sync(lambda c: _wait_final(c, drop.id, timeout=900))
    assert final.state.is_completed() and final.state.message.startswith("0/10 kept"), final.state.message
    got = hook.wait_for(lambda x: "kept dropped" in x.get("subject", ""), 180)
    assert got, hook.received
    base = final.name.split(" · ")[0]
    assert "kept 0.0% tonight" in got["text"] and base in got["text"] and "the night before" in got["text"]


def test_a_run_that_finds_its_table_lock_taken_says_how_to_free_it(prefect_api, tmp_path):
    """A slot taken when no run holds it (a server restarted with its leases in memory) made every later run
    of the table wait, silently.  A run that finds it taken says so in its log, with the command that
    frees it."""
    from prefect import flow
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker
    from prefect.runtime import flow_run

    from flows.publish import ensure_table_lock, table_lock

    name = table_lock(str(tmp_path / "out"))

    @flow
    def starts_a_night() -> str:
        ensure_table_lock(name)
        return flow_run.get_id()

    async def take_the_slot() -> None:
        async with get_client() as client:
            await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))

    async def logged(run_id: str) -> list[str]:
        async with get_client() as client:
            logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
            await client.delete_global_concurrency_limit_by_name(name)
        return [entry.message for entry in logs]

    with temporary_settings({PREFECT_API_URL: prefect_api}):
        run_coro_as_sync(take_the_slot())
        run_id = starts_a_night()
        APILogWorker.drain_all(timeout=60)  # the run's logs reach the server before they are read
        messages = run_coro_as_sync(logged(run_id))
    assert any(f"{name} is taken" in m and f"prefect gcl update {name} --active-slots 0" in m for m in messages), (
        messages
    )
