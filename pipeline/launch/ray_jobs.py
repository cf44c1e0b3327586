"""Shards as Ray Jobs on a remote cluster (``http://HEAD:8265``), every call to the Jobs API bounded."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.config import CurationConfig
from pipeline.launch.base import OUR_LINE, JobTimedOut, RayJobFailed, parse_result, shard_cli_args
from pipeline.result import RunResult
from pipeline.runtime.ray_init import quoted_python
from pipeline.shards import ShardSpec
from pipeline.show.console import ANSI

# Environment forwarded to Ray Jobs: settings only.  Credentials (AWS_SECRET_ACCESS_KEY, HF_TOKEN, …)
# never go into a job's runtime_env, because Ray keeps it in its job table, where `ray job list`, the
# REST API and list_jobs() show it in plain text.  The cluster's nodes get them from their own
# environment (a Kubernetes Secret on KubeRay, the service's env in compose), and the job's driver
# inherits it from its node.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "AWS_ENDPOINT_URL", "AWS_REGION", "CURATE_MODEL_CACHE")


class RayJobUnreachable(RayJobFailed):
    pass


class ClusterRefused(ValueError):
    """The dashboard is not there, or it refuses us (token auth): the user's to fix, said in one line."""


def within(timeout_s: float, what: str, fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, or ``RayJobUnreachable`` when it has not returned after ``timeout_s``.

    Ray's JobSubmissionClient calls ``requests`` without a timeout: a dashboard that accepts and never
    answers would hold the call, the shard and (through the deployment's ENQUEUE limit) every later
    night.  The call runs in a daemon thread that is abandoned, not waited for, when it overruns.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True, name=f"ray-jobs-{what}")
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RayJobUnreachable(f"{what}: no answer within {timeout_s:g} s (ray_job.call_timeout_s)")
    if "error" in box:
        raise box["error"]
    return box["value"]


def submit_when_ready(client, timeout_s: float = 180, call_timeout_s: float = 30, **kwargs) -> str:
    """Submit a Ray Job, waiting while a just-started head has no job agent yet.

    Only that transient answer is retried; an unreachable cluster raises at once.
    """
    deadline = time.time() + timeout_s
    while True:
        try:
            return within(call_timeout_s, "submitting the Ray job", client.submit_job, **kwargs)
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.time() > deadline:
                raise
            time.sleep(2)


def submit_or_find(client, base_id: str, log: logging.Logger, call_timeout_s: float = 30, **kwargs) -> str:
    """The job of this run and shard: submitted under a submission id derived from them, so a retry finds
    the job an earlier attempt started (a submit whose answer timed out may still have been accepted)
    and follows it instead of starting a second.  A job of that id that ended without success is not
    followed again: the next free id (``-2``, ``-3``, …) is submitted."""
    from ray.job_submission import JobStatus

    for n in range(1, 100):
        sid = base_id if n == 1 else f"{base_id}-{n}"
        try:
            status = within(call_timeout_s, f"asking for job {sid}", client.get_job_status, sid)
        except RayJobUnreachable:
            raise
        except Exception:  # no such job: ours to submit
            return submit_when_ready(client, call_timeout_s=call_timeout_s, submission_id=sid, **kwargs)
        if status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED):
            log.info("Ray job %s was started by an earlier attempt (%s): following it", sid, status)
            return sid
    raise RuntimeError(f"{base_id}: 99 jobs of this run and shard ended without success")


class LogTail:
    """The job's log, followed through the Jobs API's websocket in a thread of its own: each chunk once,
    instead of downloading the whole log every poll (quadratic over a 12-hour job)."""

    def __init__(self, client, job_id: str):
        self.lines: list[str] = []
        self.taken = 0  # lines drained so far: the log's first lines, in order
        self.partial = ""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, args=(client, job_id), daemon=True, name="ray-job-tail")
        self.thread.start()

    def _run(self, client, job_id: str) -> None:
        import asyncio

        async def follow() -> None:
            async for chunk in client.tail_job_logs(job_id):
                with self.lock:
                    *done, self.partial = (self.partial + chunk).split("\n")
                    self.lines += done

        with contextlib.suppress(Exception):  # the final fetch at the end covers what a broken tail missed
            asyncio.run(follow())

    def drain(self) -> list[str]:
        with self.lock:
            out, self.lines = self.lines, []
            self.taken += len(out)
        return out

    def rest(self, whole: str) -> list[str]:
        """The lines of the whole log (read at the end) that were never drained: the websocket can close
        before the job's last lines (code 1006 as the job ends), which then reached no one."""
        lines = whole.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines[self.taken :]


@dataclass(frozen=True)
class RayJobLauncher:
    address: str
    poll_s: float = 2.0

    def launch(
        self,
        spec: ShardSpec,
        cfg: CurationConfig,
        log: logging.Logger,
        run_id: str,
        force: bool = False,
        on_job: Callable[[str], None] | None = None,
    ) -> RunResult:
        """Submit the shard as a Ray Job, stream its logs into this run, stop it if we are cancelled.  ``on_job``
        is told the job's id once it is submitted (or found).

        Every call to the Jobs API has a deadline (``ray_job.call_timeout_s``).  Credentials are the
        cluster's own (its nodes' environment): a job's runtime env is in Ray's job table.
        """
        from ray.job_submission import JobStatus, JobSubmissionClient

        limits = cfg.ray_job
        t = limits.call_timeout_s
        where = f"the Ray dashboard at {self.address}"
        client = within(t, f"connecting to {where}", JobSubmissionClient, self.address)
        # The job's driver joins its own cluster.
        # Verbose: Ray keeps the job's full output as its job log; only our lines reach Prefect.
        args = shard_cli_args(spec, cfg.model_copy(update={"ray_address": None}), run_id, force, verbose=True)
        entrypoint = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pipeline.cli", *args])
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        job_id = submit_or_find(
            client,
            f"curate-{run_id}",
            log,
            call_timeout_s=t,
            entrypoint=entrypoint,
            runtime_env={"env_vars": env, **quoted_python()},  # every worker of the job has it
            entrypoint_num_cpus=limits.entrypoint_num_cpus,
            metadata={"shard": spec.shard_id, "split": spec.split, "run": run_id},
        )
        log.info("following Ray job %s for %s at %s", job_id, spec.shard_id, self.address)
        if on_job is not None:
            on_job(job_id)
        tail = LogTail(client, job_id)
        status, submitted, started = None, time.monotonic(), None

        def forward(lines: list[str]) -> None:
            for line in lines:
                line = ANSI.sub("", line)
                if OUR_LINE.search(line):  # the rest stays in Ray's job log
                    log.info("[ray job %s] %s", job_id, line)

        try:
            while True:
                status = within(t, f"asking {where} for job {job_id}'s status", client.get_job_status, job_id)
                now = time.monotonic()
                if status == JobStatus.PENDING and now - submitted > limits.start_timeout_s:
                    raise JobTimedOut(
                        f"Ray job {job_id} for {spec.shard_id} still PENDING after {limits.start_timeout_s:.0f} s "
                        f"(ray_job.start_timeout_s): the cluster has no room for it; stopped"
                    )
                if status != JobStatus.PENDING and started is None:
                    started = now
                if limits.timeout_s is not None and started is not None and now - started > limits.timeout_s:
                    raise JobTimedOut(
                        f"Ray job {job_id} for {spec.shard_id} ran over {limits.timeout_s:.0f} s "
                        f"(ray_job.timeout_s); stopped"
                    )
                forward(tail.drain())
                if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    break
                time.sleep(self.poll_s)
        except BaseException:
            # A timeout, a cancellation or a crash of this process: never leave an orphaned job
            # writing output (a stop that cannot reach the dashboard is given up after its deadline).
            log.warning("stopping Ray job %s", job_id)
            with contextlib.suppress(Exception):
                within(t, f"stopping job {job_id} at {where}", client.stop_job, job_id)
            raise
        # Once, at the end: the whole log, for its last lines and the result line a tail may still hold.
        whole = within(t, f"reading job {job_id}'s log at {where}", client.get_job_logs, job_id)
        forward(tail.drain())
        forward(tail.rest(whole))
        full = whole.splitlines()
        if status != JobStatus.SUCCEEDED:
            info = within(t, f"reading job {job_id} at {where}", client.get_job_info, job_id)
            raise RayJobFailed(f"Ray job {job_id} for {spec.shard_id} ended {status}: {info.message}")
        return parse_result(full, f"Ray job {job_id}")


def run_from_here(cfg: CurationConfig, spec: ShardSpec, run_id: str, force: bool, out) -> RunResult:
    """``curate run --ray-address http://HEAD:8265``: ``spec`` as a Ray Job through the flow's own launcher,
    the job's lines written to ``out`` as they come, the job stopped if this process is stopped."""
    log = logging.getLogger("pipeline.ray-job")
    shown = logging.StreamHandler(out)
    shown.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(shown)
    log.propagate = False
    from ray.exceptions import AuthenticationError

    jobs: list[str] = []
    try:
        result = RayJobLauncher(cfg.ray_address).launch(spec, cfg, log, run_id, force=force, on_job=jobs.append)
        # The run's whole log is the job's (it runs --verbose): say how to read it.
        result.log = result.log or f"ray job logs {jobs[-1]} --address {cfg.ray_address}"
        return result
    except ConnectionError as exc:  # Ray's client says so when nothing answers at the address
        raise ClusterRefused(f"{str(exc).rstrip('.')}; check --ray-address or RAY_ADDRESS") from None
    except AuthenticationError as exc:  # token auth, Ray's default since 2.60: its words say where the token goes
        raise ClusterRefused(f"the Ray cluster at {cfg.ray_address} refused us: {exc}") from None
    finally:
        log.removeHandler(shown)
