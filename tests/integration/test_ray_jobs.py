"""The flow against a real Ray cluster (``ray start --head`` on 127.0.0.1) through the Jobs API."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from prefect import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.utilities.asyncutils import run_coro_as_sync

from flows.curation import curate_dataset
from tests.conftest import NO_JUDGE
from tests.integration.conftest import split_sample
from tests.integration.test_pipeline_e2e import run_cli
from tests.services import ray_head
from tests.table import rows, summaries

pytestmark = pytest.mark.slow

SECRET = "planted-Secret-1b2c3d-never-log-me"


def test_flow_submits_shards_as_ray_jobs(tmp_path, sample_table, monkeypatch):
    src = tmp_path / "in"
    split_sample(sample_table, src, parts=1, rows_each=6)
    out = tmp_path / "out"
    with ray_head() as head:
        # In the worker's environment: it must still appear in no log, artifact, snapshot or job table.
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        state = curate_dataset(
            source=str(src),
            output_root=str(out),
            split="dev",
            limit=3,
            ray_address=head["dashboard"],
            config_overrides=[NO_JUDGE],
            return_state=True,
        )
        assert state.is_completed()
        result = state.result()

        from ray.job_submission import JobStatus, JobSubmissionClient

        jobs = JobSubmissionClient(head["dashboard"]).list_jobs()
        ours = [j for j in jobs if (j.metadata or {}).get("split") == "dev"]
        assert len(ours) == 1 and ours[0].status == JobStatus.SUCCEEDED
        job_logs = JobSubmissionClient(head["dashboard"]).get_job_logs(ours[0].submission_id)
        # Ray's job table (what `ray job list` and the REST API show) holds no credential.
        job_table = json.dumps([j.dict() for j in jobs], default=str)
        assert SECRET not in job_table
        # `curate run --ray-address http://HEAD:8265` goes the same way, as a Ray Job of its own, its lines and
        # its summary on this screen (it used to fail at once, parsing the URL as HOST:PORT).
        cli = run_cli("run", "--ray-address", head["dashboard"], "--input", str(src), "--output", str(tmp_path / "cli"),
                      "--split", "dev", "--limit", "2", "--set", NO_JUDGE, timeout=600)  # fmt: skip
        assert f"as a Ray Job on {head['dashboard']}" in cli.stdout
        assert "pipeline: " in cli.stdout and "committed" in cli.stdout  # the job's own lines, forwarded
        assert re.search(r"^  in +2$", cli.stdout, re.M) and len(rows(tmp_path / "cli")) == 2
        job = re.search(
            rf"^  log +ray job logs (curate-\S+) --address {re.escape(head['dashboard'])}$", cli.stdout, re.M
        )
        assert job and "committed" in JobSubmissionClient(head["dashboard"]).get_job_logs(job.group(1))
        assert SECRET not in json.dumps(
            [j.dict() for j in JobSubmissionClient(head["dashboard"]).list_jobs()], default=str
        )

    assert result["counts"]["in"] == 3
    got = rows(out)
    assert len(got) == 3
    snapshot_props = json.dumps(summaries(out))
    assert "ray job" not in snapshot_props and result["tables"][0]["snapshot"] == summaries(out)[-1]["_id"]

    async def logs_and_artifacts():
        async with get_client() as client:
            run_id = state.state_details.flow_run_id
            logs, page = [], None
            while page is None or page:  # the API pages at 200; the job's progress lines are many
                page = await client.read_logs(
                    log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200, offset=len(logs)
                )
                logs += page
            arts = await client.read_artifacts()
            return logs, arts

    # Logs ship to the API in batches, so the job's last lines can land a moment after the flow ends.
    deadline = time.time() + 60
    while True:
        logs, artifacts = run_coro_as_sync(logs_and_artifacts())
        messages = [log.message for log in logs]
        if any(m.startswith("[ray job") and "committed" in m for m in messages) or time.time() > deadline:
            break
        time.sleep(3)
    everything = "\n".join(messages) + job_logs + snapshot_props
    everything += "".join(json.dumps(a.data, default=str) + (a.description or "") for a in artifacts)
    assert SECRET not in everything
    # The job's own output was streamed into the Prefect run's logs.
    assert any(m.startswith("[ray job") and "committed" in m for m in messages), messages[-20:]


def test_a_job_the_cluster_cannot_place_times_out_and_is_stopped(tmp_path, sample_table):
    """A shard whose job waits forever for resources must fail with a clear reason, not hang the
    nightly run (and queue every later night behind it)."""
    import logging

    from ray.job_submission import JobStatus, JobSubmissionClient

    from pipeline.config import build_config
    from pipeline.launch import JobTimedOut, RayJobLauncher
    from pipeline.launch.ray_jobs import submit_or_find
    from pipeline.shards import plan_shards

    src = tmp_path / "in"
    (path,) = split_sample(sample_table, src, parts=1, rows_each=2)
    (spec,) = plan_shards([str(path)], str(tmp_path / "out"), "dev")
    cfg = build_config(overrides=["ray_job.entrypoint_num_cpus=64", "ray_job.start_timeout_s=8"])
    # Ray's own job manager gives up on a job it cannot place after RAY_JOB_START_TIMEOUT_SECONDS
    # (15 min by default): a queued stop cannot reach a job that never started.  The README says to
    # set it on the head at or below ray_job.start_timeout_s; here 20 s, above our 8 s.
    with ray_head(num_cpus=2, env_extra={"RAY_JOB_START_TIMEOUT_SECONDS": "20"}) as head:
        t0 = time.time()
        with pytest.raises(JobTimedOut, match=r"still PENDING after 8 s \(ray_job.start_timeout_s\)"):
            RayJobLauncher(head["dashboard"], poll_s=1).launch(spec, cfg, logging.getLogger("test"), run_id="r")
        assert time.time() - t0 < 60
        client = JobSubmissionClient(head["dashboard"])
        (job,) = [j for j in client.list_jobs() if (j.metadata or {}).get("shard") == spec.shard_id]
        deadline = time.time() + 90
        while not client.get_job_status(job.submission_id).is_terminal() and time.time() < deadline:
            time.sleep(2)
        assert client.get_job_status(job.submission_id) in (JobStatus.STOPPED, JobStatus.FAILED)

        # A retry of the same run and shard follows the job an earlier attempt started, never a second
        # one; a job of that id that ended without success gets the next free id (#31).
        log = logging.getLogger("test")
        live = submit_or_find(client, "curate-probe", log, entrypoint="sleep 60")
        assert submit_or_find(client, "curate-probe", log, entrypoint="sleep 60") == live == "curate-probe"
        assert [j.submission_id for j in client.list_jobs() if j.submission_id.startswith("curate-probe")] == [live]
        client.stop_job(live)
        assert submit_or_find(client, job.submission_id, log, entrypoint="true") == f"{job.submission_id}-2"
    assert not (Path(spec.output) / "warehouse").exists()  # nothing committed, nothing written
