"""Where a shard runs: three launchers behind one interface, chosen in one place.

- ``ChildProcessLauncher`` (no Ray address): a child ``curate run`` with its own local Ray, the
  embedded default.  A crash in Ray or vLLM fails the shard (and it is retried) instead of the
  flow-run process, and each shard starts from fresh memory.
- ``InClusterLauncher`` (``auto``): this process already is a Ray worker (prefect-ray's
  ``RayTaskRunner``), so the DAG runs here, on the cluster.
- ``RayJobLauncher`` (``http://HEAD:8265``): a Ray Job on a remote cluster.  Prefect's and Anyscale's
  docs warn against ``ray://`` client connections for long work: a 30 s network drop kills them.

Each returns the shard's ``RunResult``: the child and the Ray Job print it as their last line
(``curate run --emit-result``), which never reaches Prefect's logs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.cli import RESULT_MARK
from pipeline.config import CurationConfig, refuse_secrets
from pipeline.manifest import RunResult
from pipeline.shards import ShardSpec

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# "… INFO pipeline: committed …" (pipeline/cli.py's log format) or "curate: error: …".
OUR_LINE = re.compile(r"\b(?:INFO|WARNING|ERROR) pipeline[\w.]*: |^curate: ")
# Environment forwarded to Ray Jobs: settings only.  Credentials (AWS_SECRET_ACCESS_KEY, HF_TOKEN, …)
# never go into a job's runtime_env, because Ray keeps it in its job table, where `ray job list`, the
# REST API and list_jobs() show it in plain text.  The cluster's nodes get them from their own
# environment (a Kubernetes Secret on KubeRay, the service's env in compose), and the job's driver
# inherits it from its node.
FORWARDED_ENV = ("HF_HUB_OFFLINE", "AWS_ENDPOINT_URL", "AWS_REGION", "CURATE_MODEL_CACHE")


class ShardFailed(RuntimeError):
    pass


class RayJobFailed(ShardFailed):
    pass


class JobTimedOut(RayJobFailed):
    pass


class ShardTimedOut(ShardFailed):
    pass


class ShardRefused(ShardFailed):
    """The shard's input or output was refused before any work (``curate run`` exit 2): retrying
    cannot help, so Prefect does not."""


class ShardLauncher(Protocol):
    def launch(
        self,
        spec: ShardSpec,
        cfg: CurationConfig,
        log: logging.Logger,
        run_id: str,
        force: bool = False,
        credentials_block: str | None = None,
    ) -> RunResult: ...


def with_parent_death(cmd: list[str]) -> list[str]:
    """``cmd`` under ``setpriv --pdeathsig KILL``: the kernel kills the child when the flow-run process's
    launching thread dies, so a crashed flow run leaves no shard to commit later beside its retry.

    setpriv (util-linux) sets it and execs: no Python runs in the child between fork and exec, which a
    ``preexec_fn`` in a threaded Prefect process would do (CPython documents that as deadlock-prone).
    Where setpriv is missing (not Linux), the child runs without it.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *cmd] if setpriv else cmd


def stop_shard(pid: int, deadline_s: float = 30.0) -> None:
    """SIGKILL a shard's child and everything it started, found by PID: its descendants and every process
    of its session.  Ray moves some of its processes into process groups of their own, so killing the
    child's process group alone left them running.  A raylet may fork a worker between our listing and
    our kill, so list and kill again until nothing of the shard is left (or the deadline passes)."""
    import psutil

    def shard_processes() -> list[psutil.Process]:
        try:
            procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        for p in psutil.process_iter(["pid"]):
            with contextlib.suppress(OSError):
                if os.getsid(p.info["pid"]) == pid and p not in procs:
                    procs.append(p)
        alive = []
        for p in procs:
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        return alive

    end = time.monotonic() + deadline_s
    while (procs := shard_processes()) and time.monotonic() < end:
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(procs, timeout=5)


def shard_cli_args(
    spec: ShardSpec, cfg: CurationConfig, run_id: str, force: bool = False, verbose: bool = False, stdin: bool = False
) -> list[str]:
    """``curate run`` arguments for one shard: the one entrypoint of child processes and Ray Jobs.

    With ``stdin`` the config goes on the child's stdin, not in argv (``ps`` and ``/proc/*/cmdline`` show
    argv to every user of the machine).  A Ray Job has no stdin: its entrypoint carries the config,
    which ``refuse_secrets`` has checked holds nothing secret.
    """
    args = [
        "run",
        *(["--verbose"] if verbose else []),
        *(["--force"] if force else []),
        "--emit-result",
        "--output",
        spec.output,
        "--config-json",
        "-" if stdin else cfg.model_dump_json(),
        "--split",
        spec.split,
        "--shard",
        f"{spec.index + 1}/{spec.count}",
        "--run-id",
        run_id,
    ]
    for f in spec.sources:
        args += ["--input", f]
    return args


def parse_result(lines: list[str], what: str) -> RunResult:
    for line in reversed(lines):
        if line.startswith(f"{RESULT_MARK} "):
            return RunResult.model_validate_json(line[len(RESULT_MARK) + 1 :])
    raise ShardFailed(f"{what} ended well but printed no {RESULT_MARK} line")


@dataclass(frozen=True)
class InClusterLauncher:
    def launch(
        self,
        spec: ShardSpec,
        cfg: CurationConfig,
        log: logging.Logger,
        run_id: str,
        force: bool = False,
        credentials_block: str | None = None,
    ) -> RunResult:
        from pipeline.run import run_curation

        if credentials_block:
            # This is a Ray task on a cluster node: the flow process's environment is not here, so the
            # block is read again here, into this worker's environment only.
            from tasks.credentials import apply_credentials_block

            log.info(
                "credentials from Secret block %r: %s", credentials_block, apply_credentials_block(credentials_block)
            )
        return run_curation(
            cfg.model_copy(update={"ray_address": "auto"}),
            list(spec.sources),
            spec.output,
            split=spec.split,
            run_id=run_id,
            shard=(spec.index, spec.count),
            force=force,
        )


@dataclass(frozen=True)
class ChildProcessLauncher:
    # None: the child starts its own local Ray; a GCS address (host:port): it joins that cluster.
    ray_address: str | None = None

    def launch(
        self,
        spec: ShardSpec,
        cfg: CurationConfig,
        log: logging.Logger,
        run_id: str,
        force: bool = False,
        credentials_block: str | None = None,
    ) -> RunResult:
        # The block (if any) was applied to this process's environment, which the child inherits.
        refuse_secrets(cfg, where="shard")
        child_cfg = cfg.model_copy(update={"ray_address": self.ray_address})
        cmd = [sys.executable, "-m", "pipeline.cli", *shard_cli_args(spec, child_cfg, run_id, force, stdin=True)]
        # Its own session, so stopping it stops everything it started.
        proc = subprocess.Popen(
            with_parent_death(cmd),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # setsid() in C, before exec: everything it starts is in its session
        )
        proc.stdin.write(child_cfg.model_dump_json())
        proc.stdin.close()
        tail: list[str] = []
        result_line = ""
        timed_out = threading.Event()

        def stop_on_timeout() -> None:
            timed_out.set()
            stop_shard(proc.pid)

        # A watchdog, not a check in the loop: a hung child may print nothing at all.
        watchdog = threading.Timer(cfg.shard_timeout_s, stop_on_timeout) if cfg.shard_timeout_s else None
        if watchdog:
            watchdog.daemon = True
            watchdog.start()
        try:
            # The child is quiet: its console is ours (progress, summary, errors); Ray's and vLLM's
            # logs are in its log file, whose path the summary or the error names.
            for raw in proc.stdout:
                line = ANSI.sub("", raw.rstrip())
                if line.startswith(RESULT_MARK):
                    result_line = line  # for us, not for the run's log
                    continue
                tail = [*tail[-40:], line]
                if line.strip():  # keep the indent: the summary nests reasons under "rejected"
                    log.info("[%s] %s", spec.shard_id, line)
            code = proc.wait()
        except BaseException:
            stop_shard(proc.pid)  # cancelled: leave nothing running
            raise
        finally:
            if watchdog:
                watchdog.cancel()
        if timed_out.is_set():
            raise ShardTimedOut(
                f"{spec.shard_id} ran past shard_timeout_s ({cfg.shard_timeout_s:g} s); its processes were "
                "stopped and nothing was committed"
            )
        if code == 2:
            raise ShardRefused(
                f"{spec.shard_id}: " + next((ln for ln in tail if "curate: error:" in ln), tail[-1] if tail else "")
            )
        if code != 0:
            raise ShardFailed(f"{spec.shard_id} exited with {code}:\n" + "\n".join(tail[-15:]))
        return parse_result([result_line], f"shard {spec.shard_id}")


class RayJobUnreachable(RayJobFailed):
    pass


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
        return out


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
        credentials_block: str | None = None,
    ) -> RunResult:
        """Submit the shard as a Ray Job, stream its logs into this run, stop it if we are cancelled.

        Every call to the Jobs API has a deadline (``ray_job.call_timeout_s``).  Credentials are the
        cluster's own (its nodes' environment): a job's runtime env is in Ray's job table.
        """
        from ray.job_submission import JobStatus, JobSubmissionClient

        # The entrypoint (config included) is stored in Ray's job table, readable with `ray job list`.
        refuse_secrets(cfg, where="Ray Job")
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
            runtime_env={"env_vars": env},
            entrypoint_num_cpus=limits.entrypoint_num_cpus,
            metadata={"shard": spec.shard_id, "split": spec.split, "run": run_id},
        )
        log.info("following Ray job %s for %s at %s", job_id, spec.shard_id, self.address)
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
        full = within(t, f"reading job {job_id}'s log at {where}", client.get_job_logs, job_id).splitlines()
        if status != JobStatus.SUCCEEDED:
            info = within(t, f"reading job {job_id} at {where}", client.get_job_info, job_id)
            raise RayJobFailed(f"Ray job {job_id} for {spec.shard_id} ended {status}: {info.message}")
        return parse_result(full, f"Ray job {job_id}")


def launcher_for(ray_address: str | None) -> ShardLauncher:
    """The one place a Ray address picks where shards run."""
    if not ray_address:
        return ChildProcessLauncher()
    if ray_address == "auto":
        return InClusterLauncher()
    if ray_address.startswith(("http://", "https://")):
        return RayJobLauncher(ray_address)
    if ray_address.startswith("ray://"):
        raise ValueError(
            f"ray_address {ray_address!r}: ray:// client connections die on a 30 s network drop; use "
            "http://HEAD:8265 (Ray Jobs), 'auto' inside the cluster, or none for a local Ray"
        )
    return ChildProcessLauncher(ray_address)  # host:port of a cluster this machine is part of
