"""The shard task: run the curation pipeline for one shard on a Ray cluster.

Where it runs depends on ``ray_address``:
- ``None``: an embedded local Ray in this process (the embedded default);
- ``"auto"``: inside the cluster; the flow runs this task through prefect-ray's ``RayTaskRunner``;
- ``"http://HEAD:8265"``: a remote cluster, through a Ray Job (Prefect's and Anyscale's docs warn
  against ``ray://`` client connections for long work: a 30 s network drop kills them).

Exactly-once: a shard writes to its own directory and commits last with a manifest.  A committed
shard is skipped unless ``force``; a failed attempt leaves only uncommitted staging files, which the
retry replaces.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import time
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff

from pipeline.commit import is_committed, read_manifest
from pipeline.config import CurationConfig
from pipeline.shards import ShardSpec

# Test and chaos hook: "SHARD_ID:N" fails that shard's first N attempts after its data is staged.
FAULT_ENV = "CURATE_INJECT_FAULT"
# Environment forwarded to Ray Jobs; credentials travel by env, never in the entrypoint or logs.
FORWARDED_ENV = (
    "HF_HUB_OFFLINE",
    "HF_TOKEN",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "CURATE_MODEL_CACHE",
)


class InjectedFault(RuntimeError):
    pass


class RayJobFailed(RuntimeError):
    pass


def _logger():
    """The run's logger inside Prefect, a plain one outside (e.g. called from a script)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("tasks.curate_shard")


def _attempt() -> int:
    ctx = TaskRunContext.get()
    return ctx.task_run.run_count if ctx else 1


def _fault_hook(shard_id: str):
    spec = os.environ.get(FAULT_ENV, "")
    if not spec:
        return None
    target, _, times = spec.partition(":")
    attempt = _attempt()
    if target != shard_id or attempt > int(times or 1):
        return None

    def fail() -> None:
        raise InjectedFault(f"injected fault in {shard_id} on attempt {attempt}, after staging, before commit")

    return fail


def run_in_process(spec: ShardSpec, cfg: CurationConfig) -> dict[str, Any]:
    from pipeline.run import run_curation

    return run_curation(
        cfg,
        spec.files[0],
        spec.output,
        files=list(spec.files),
        extra_manifest={"shard": spec.to_dict()},
        before_commit=_fault_hook(spec.shard_id),
    )


def run_as_ray_job(spec: ShardSpec, cfg: CurationConfig, address: str, poll_s: float = 2.0) -> dict[str, Any]:
    """Submit the shard as a Ray Job, stream its logs into this run, stop it if we are cancelled."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    logger = _logger()
    client = JobSubmissionClient(address)
    job_cfg = cfg.model_copy(update={"ray_address": None})  # the job's driver joins its own cluster
    args = ["run", "--output", spec.output, "--config-json", job_cfg.model_dump_json()]
    for f in spec.files:
        args += ["--input", f]
    entrypoint = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pipeline.cli", *args])
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    job_id = client.submit_job(
        entrypoint=entrypoint,
        runtime_env={"env_vars": env},
        metadata={"shard": spec.shard_id, "dataset": spec.dataset, "split": spec.split},
    )
    logger.info("submitted Ray job %s for %s to %s", job_id, spec.shard_id, address)
    seen, status = 0, None
    try:
        while True:
            status = client.get_job_status(job_id)
            logs = client.get_job_logs(job_id)
            for line in logs[seen:].splitlines():
                logger.info("[ray job %s] %s", job_id, line)
            seen = len(logs)
            if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                break
            time.sleep(poll_s)
    except BaseException:
        # Cancellation or a crash of this process: never leave an orphaned job writing output.
        logger.warning("stopping Ray job %s", job_id)
        client.stop_job(job_id)
        raise
    if status != JobStatus.SUCCEEDED:
        info = client.get_job_info(job_id)
        raise RayJobFailed(f"Ray job {job_id} for {spec.shard_id} ended {status}: {info.message}")
    manifest = read_manifest(spec.output, cfg.storage)
    if manifest is None:
        raise RayJobFailed(f"Ray job {job_id} succeeded but {spec.output} has no committed manifest")
    return manifest


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    task_run_name="curate-{spec.split}-{spec.shard_id}",
    tags=["audio-curation"],
)
def curate_shard(
    spec: ShardSpec, config: dict[str, Any], ray_address: str | None = None, force: bool = False
) -> dict[str, Any]:
    logger = get_run_logger()
    cfg = CurationConfig.model_validate(config)
    if not force and is_committed(spec.output, cfg.storage):
        logger.info("%s already committed at %s; skipping", spec.shard_id, spec.output)
        manifest = read_manifest(spec.output, cfg.storage)
        return {**manifest, "skipped": True}
    logger.info("curating %s (%d files) -> %s (attempt %d)", spec.shard_id, len(spec.files), spec.output, _attempt())
    if ray_address and ray_address.startswith(("http://", "https://")):
        manifest = run_as_ray_job(spec, cfg, ray_address)
    else:
        manifest = run_in_process(spec, cfg.model_copy(update={"ray_address": ray_address}))
    logger.info("%s committed: %s", spec.shard_id, json.dumps(manifest["counts"]))
    return {**manifest, "skipped": False}
