"""A real Prefect server, the real deployments, a real worker, and a run triggered the way the UI does.

One shard is made to fail after its data is staged but before commit; the retry must leave exactly
one committed copy, and every id must appear exactly once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from pipeline.shards import plan_shards
from tests.conftest import REPO
from tests.integration.conftest import split_sample
from tests.services import VENV_BIN, background, prefect_server

pytestmark = pytest.mark.slow


def _histogram_from_markdown(md: str) -> dict[int, int]:
    counts = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 3 and cells[0] in {"1", "2", "3", "4", "5"}:
            counts[int(cells[0])] = int(cells[1])
    return counts


async def _wait_final(client, flow_run_id, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = await client.read_flow_run(flow_run_id)
        if run.state and run.state.is_final():
            return run
        time.sleep(3)
    raise TimeoutError(f"flow run {flow_run_id} not finished after {timeout} s")


def test_nightly_deployment_runs_on_real_server(tmp_path, sample_table):
    src = tmp_path / "cv" / "validated"
    split_sample(sample_table, src, parts=2)
    out = tmp_path / "curated"
    specs = plan_shards([str(p) for p in sorted(src.glob("*.parquet"))], str(out), "common-voice", "validated")
    assert len(specs) == 2

    with prefect_server(tmp_path) as api, temporary_settings({PREFECT_API_URL: api}):
        env = {
            **os.environ,
            "PREFECT_API_URL": api,
            "HF_HUB_OFFLINE": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "2",
            # Test-only fault injection (tests/fault_injection/sitecustomize.py), in every process the
            # worker starts: the second shard's first commit fails after its data is staged.
            "PYTHONPATH": os.pathsep.join(
                [str(REPO / "tests" / "fault_injection"), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "CURATE_TEST_FAULT": f"{specs[1].shard_id}:1",
            "CURATE_TEST_FAULT_DIR": str(tmp_path / "faults"),
        }
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
            ],
            env=env,
            cwd=REPO,
            check=True,
            timeout=120,
        )

        async def trigger():
            async with get_client() as client:
                dep = await client.read_deployment_by_name("curate-common-voice/nightly")
                # What the UI's "Custom run" does: a flow run from the deployment with overrides.
                run = await client.create_flow_run_from_deployment(dep.id, parameters={"limit": 2})
                return dep, run

        dep, run = run_coro_as_sync(trigger())
        worker_cmd = [str(VENV_BIN / "prefect"), "worker", "start", "--pool", "audio-curation"]
        with background(worker_cmd, env, tmp_path / "worker.log"):

            async def wait():
                async with get_client() as client:
                    return await _wait_final(client, run.id, timeout=1200)

            final = run_coro_as_sync(wait())
        worker_log = (tmp_path / "worker.log").read_text()
        assert final.state.is_completed(), worker_log[-6000:]

        async def details():
            async with get_client() as client:
                arts = await client.read_artifacts(
                    artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id]))
                )
                tasks = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
                return arts, tasks

        artifacts, task_runs = run_coro_as_sync(details())

    # The schedule and the no-overlap limit are on the deployment.
    assert dep.schedules and dep.schedules[0].schedule.cron == "0 2 * * *"
    assert dep.schedules[0].schedule.timezone == "UTC"
    assert dep.concurrency_limit == 1 or dep.global_concurrency_limit.limit == 1

    # The faulted shard was retried once; the other ran once.
    runs = {t.name: t.run_count for t in task_runs if t.name.startswith("curate-validated-")}
    assert runs == {f"curate-validated-{specs[0].shard_id}": 1, f"curate-validated-{specs[1].shard_id}": 2}
    assert "injected fault" in worker_log

    # Every id exactly once, no staging left, each shard committed once.
    ids = []
    for spec in specs:
        root = Path(spec.output)
        assert (root / "manifest.json").exists() and not (root / "_staging").exists()
        manifest = json.loads((root / "manifest.json").read_text())
        for f in manifest["files"]:
            if f["kind"] in ("scores", "quarantine"):
                ids += pq.read_table(root / f["path"]).column("id").to_pylist()
    assert len(ids) == 4 and len(set(ids)) == 4

    by_key = {a.key: a for a in artifacts}
    files = by_key["common-voice-validated-files"]
    table = files.data if isinstance(files.data, list) else json.loads(files.data)
    on_disk = {str(p.relative_to(out)) for spec in specs for p in Path(spec.output).glob("*/*.parquet")}
    manifests = {str(Path(spec.output, "manifest.json").relative_to(out)) for spec in specs}
    listed = {f"{r['shard']}/{r['file']}" for r in table}  # short paths, under output_root
    assert {p for p in listed if not p.endswith("manifest.json")} == on_disk
    assert {p for p in listed if p.endswith("manifest.json")} == manifests
    for r in table:
        if r["kind"] != "manifest":
            assert r["rows"] == pq.read_metadata(out / r["shard"] / r["file"]).num_rows
            assert r["size"].endswith(("B", "KB", "MB"))

    scores = [
        s for spec in specs for s in pads.dataset(Path(spec.output) / "scores").to_table().column("score").to_pylist()
    ]
    want = {k: scores.count(k) for k in range(1, 6)}
    histogram = by_key["common-voice-validated-histogram"].data
    assert _histogram_from_markdown(histogram) == want
    assert "WER against the prompted sentence" in histogram and "Why rows were not kept" in histogram
    summary = by_key["common-voice-validated-summary"].data
    assert "| clips in | 4 |" in summary and str(out) in summary and "`score` ≥ 3.0" in summary
    assert by_key["common-voice-validated-progress"].data == 100.0
