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
from typing import Protocol

from pipeline.cli import RESULT_MARK
from pipeline.config import CurationConfig, redact
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
        self, spec: ShardSpec, cfg: CurationConfig, log: logging.Logger, run_id: str, force: bool = False
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


def stop_shard(pid: int) -> None:
    """SIGKILL a shard's child and everything it started, found by PID: its descendants and every process
    of its session.  Ray moves some of its processes into process groups of their own, so killing the
    child's process group alone left them running."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in psutil.process_iter(["pid"]):
        with contextlib.suppress(OSError):
            if os.getsid(p.info["pid"]) == pid and p not in procs:
                procs.append(p)
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(procs, timeout=10)


def shard_cli_args(
    spec: ShardSpec, cfg: CurationConfig, run_id: str, force: bool = False, verbose: bool = False
) -> list[str]:
    """``curate run`` arguments for one shard: the one entrypoint of child processes and Ray Jobs."""
    args = [
        "run",
        *(["--verbose"] if verbose else []),
        *(["--force"] if force else []),
        "--emit-result",
        "--output",
        spec.output,
        "--config-json",
        cfg.model_dump_json(),
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
        self, spec: ShardSpec, cfg: CurationConfig, log: logging.Logger, run_id: str, force: bool = False
    ) -> RunResult:
        from pipeline.run import run_curation

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
        self, spec: ShardSpec, cfg: CurationConfig, log: logging.Logger, run_id: str, force: bool = False
    ) -> RunResult:
        child_cfg = cfg.model_copy(update={"ray_address": self.ray_address})
        cmd = [sys.executable, "-m", "pipeline.cli", *shard_cli_args(spec, child_cfg, run_id, force)]
        # Its own session, so stopping it stops everything it started.
        proc = subprocess.Popen(
            with_parent_death(cmd),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # setsid() in C, before exec: everything it starts is in its session
        )
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


@dataclass(frozen=True)
class RayJobLauncher:
    address: str
    poll_s: float = 2.0

    def launch(
        self, spec: ShardSpec, cfg: CurationConfig, log: logging.Logger, run_id: str, force: bool = False
    ) -> RunResult:
        """Submit the shard as a Ray Job, stream its logs into this run, stop it if we are cancelled."""
        from ray.job_submission import JobStatus, JobSubmissionClient

        secret = [k for k, v in {**cfg.judge.engine_env, **cfg.judge.engine_kwargs}.items() if redact({k: v}) != {k: v}]
        if secret:
            # The entrypoint (config included) is stored in Ray's job table, readable with `ray job list`.
            raise ValueError(
                f"judge.engine_env/engine_kwargs hold secret-looking keys {secret}; a Ray Job would store them "
                "in Ray's job table. Give them to the cluster's nodes as environment variables instead"
            )
        client = JobSubmissionClient(self.address)
        # The job's driver joins its own cluster.
        # Verbose: Ray keeps the job's full output as its job log; only our lines reach Prefect.
        args = shard_cli_args(spec, cfg.model_copy(update={"ray_address": None}), run_id, force, verbose=True)
        entrypoint = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "pipeline.cli", *args])
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        limits = cfg.ray_job
        job_id = submit_when_ready(
            client,
            entrypoint=entrypoint,
            runtime_env={"env_vars": env},
            entrypoint_num_cpus=limits.entrypoint_num_cpus,
            metadata={"shard": spec.shard_id, "split": spec.split, "run": run_id},
        )
        log.info("submitted Ray job %s for %s to %s", job_id, spec.shard_id, self.address)
        seen, status, submitted, started = 0, None, time.monotonic(), None
        try:
            while True:
                status = client.get_job_status(job_id)
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
                logs = client.get_job_logs(job_id)
                for line in logs[seen:].splitlines():
                    line = ANSI.sub("", line)
                    if OUR_LINE.search(line):  # the rest stays in Ray's job log
                        log.info("[ray job %s] %s", job_id, line)
                seen = len(logs)
                if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
                    break
                time.sleep(self.poll_s)
        except BaseException:
            # A timeout, a cancellation or a crash of this process: never leave an orphaned job
            # writing output.
            log.warning("stopping Ray job %s", job_id)
            client.stop_job(job_id)
            raise
        if status != JobStatus.SUCCEEDED:
            info = client.get_job_info(job_id)
            raise RayJobFailed(f"Ray job {job_id} for {spec.shard_id} ended {status}: {info.message}")
        return parse_result(client.get_job_logs(job_id).splitlines(), f"Ray job {job_id}")


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
