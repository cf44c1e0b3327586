"""The shard task: run the curation pipeline for one shard on a Ray cluster.

Where it runs depends on ``ray_address``:
- ``None``: a child process with its own local Ray (the embedded default);
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
import signal
import subprocess
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
FAULT_CHILD_ENV = "CURATE_FAULT_BEFORE_COMMIT"  # read by pipeline.cli in the shard's process
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


class ShardFailed(RuntimeError):
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


def _injected_fault(shard_id: str) -> str | None:
    """The fault message to inject for this shard and attempt, if ``CURATE_INJECT_FAULT`` asks for one."""
    target, _, times = os.environ.get(FAULT_ENV, "").partition(":")
    attempt = _attempt()
    if not target or target != shard_id or attempt > int(times or 1):
        return None
    return f"injected fault in {shard_id} on attempt {attempt}, after staging, before commit"


def shard_cli_args(spec: ShardSpec, cfg: CurationConfig) -> list[str]:
    """``curate run`` arguments for one shard: the one entrypoint of child processes and Ray Jobs."""
    args = [
        "run",
        "--output",
        spec.output,
        "--config-json",
        cfg.model_dump_json(),
        "--manifest-extra",
        json.dumps({"shard": spec.to_dict()}),
        "--split",
        spec.split,
    ]
    for f in spec.files:
        args += ["--input", f]
    return args


def run_in_process(spec: ShardSpec, cfg: CurationConfig) -> dict[str, Any]:
    """Inside a Ray task (``auto``): this process already is a Ray worker; run the DAG here."""
    from pipeline.run import run_curation

    fault = _injected_fault(spec.shard_id)

    def before_commit() -> None:
        if fault:
            raise InjectedFault(fault)

    return run_curation(
        cfg,
        list(spec.files),
        spec.output,
        split=spec.split,
        extra_manifest={"shard": spec.to_dict()},
        before_commit=before_commit,
    )


def run_in_child(spec: ShardSpec, cfg: CurationConfig) -> dict[str, Any]:
    """Embedded mode: the shard runs in a child process with its own local Ray.

    A crash in Ray or vLLM then fails this shard (and is retried) instead of the flow-run process,
    and each shard starts from fresh memory.  The child has its own session, so stopping it stops
    everything it started.
    """
    logger = _logger()
    env = dict(os.environ)
    fault = _injected_fault(spec.shard_id)
    if fault:
        env[FAULT_CHILD_ENV] = fault
    cmd = [sys.executable, "-m", "pipeline.cli", *shard_cli_args(spec, cfg)]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    tail: list[str] = []
    try:
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-40:], line]
            if "INFO pipeline" in line or "WARNING" in line or "ERROR" in line or "curate:" in line:
                logger.info("[shard %s] %s", spec.shard_id, line)
        code = proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)  # cancelled: leave nothing running
        raise
    if code != 0:
        raise ShardFailed(f"{spec.shard_id} exited with {code}:\n" + "\n".join(tail[-15:]))
    manifest = read_manifest(spec.output, cfg.storage)
    if manifest is None:
        raise ShardFailed(f"{spec.shard_id} exited 0 but {spec.output} has no committed manifest")
    return manifest


def submit_when_ready(client, timeout_s: float = 180, **kwargs) -> str:
    """Submit a Ray Job, waiting while a just-started head has no job agent yet.

    Only that transient answer is retried; an unreachable cluster raises at once.
    """
    deadline = time.time() + timeout_s
    while True:
        try:
            return client.submit_job(**kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def run_as_ray_job(spec: ShardSpec, cfg: CurationConfig, address: str, poll_s: float = 2.0) -> dict[str, Any]:
    """Submit the shard as a Ray Job, stream its logs into this run, stop it if we are cancelled."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    logger = _logger()
    client = JobSubmissionClient(address)
    job_cfg = cfg.model_copy(update={"ray_address": None})  # the job's driver joins its own cluster
    args = shard_cli_args(spec, job_cfg)
    entrypoint = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pipeline.cli", *args])
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    job_id = submit_when_ready(
        client,
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
    elif ray_address == "auto":
        manifest = run_in_process(spec, cfg.model_copy(update={"ray_address": "auto"}))
    else:
        manifest = run_in_child(spec, cfg.model_copy(update={"ray_address": ray_address}))
    logger.info("%s committed: %s", spec.shard_id, json.dumps(manifest["counts"]))
    return {**manifest, "skipped": False}
