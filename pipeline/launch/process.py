"""Shards on this machine: a child ``curate run`` in its own session (the embedded default, or a node of
a cluster given as host:port), or the DAG in this very process when it already is a Ray worker."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli import LOG_MARK, RESULT_MARK
from pipeline.config import CurationConfig
from pipeline.launch.base import ShardFailed, ShardRefused, ShardTimedOut, parse_result, shard_cli_args
from pipeline.result import RunResult
from pipeline.shards import ShardSpec
from pipeline.show.console import ANSI, Console

# The shard children this process runs now, by PID: what an interrupt of the whole command stops.
RUNNING: set[int] = set()


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


def child_log(line: str) -> Path | None:
    """The temporary log a child's ``LOG_MARK`` line names, if it is one a run makes (``curate-run-*.log``
    in the temp folder): the line comes from a process we started, but a path is moved only if it is that."""
    path = Path(line[len(LOG_MARK) :].strip())
    in_temp = path.parent == Path(tempfile.gettempdir())
    return path if in_temp and path.name.startswith("curate-run-") and path.suffix == ".log" else None


def keep_child_log(path: Path | None, output: str, cfg: CurationConfig) -> str:
    """A killed (or crashed) child's log, left in the temp folder, put in ``OUTPUT/_logs/`` as the child
    would have: ``"; its log: WHERE"``, or nothing when the child kept it itself or there was none."""
    if path is None or not path.exists():
        return ""
    where = Console(sys.stdout, sys.stderr, path).keep_log(output, cfg.storage)
    return f"; its log: {where}" if where else ""


@dataclass(frozen=True)
class InClusterLauncher:
    def launch(
        self,
        spec: ShardSpec,
        cfg: CurationConfig,
        log: logging.Logger,
        run_id: str,
        force: bool = False,
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
        self,
        spec: ShardSpec,
        cfg: CurationConfig,
        log: logging.Logger,
        run_id: str,
        force: bool = False,
    ) -> RunResult:
        # A Secret block (if any) was applied to this process's environment, which the child inherits.
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
        RUNNING.add(proc.pid)
        proc.stdin.write(child_cfg.model_dump_json())
        proc.stdin.close()
        tail: list[str] = []
        result_line = ""
        log_path: Path | None = None
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
                if line.startswith(LOG_MARK):
                    log_path = child_log(line)
                    continue
                tail = [*tail[-40:], line]
                if line.strip():  # keep the indent: the summary nests reasons under "rejected"
                    log.info("[%s] %s", spec.shard_id, line)
            code = proc.wait()
        except BaseException:
            stop_shard(proc.pid)  # cancelled: leave nothing running
            keep_child_log(log_path, spec.output, cfg)
            raise
        finally:
            RUNNING.discard(proc.pid)
            if watchdog:
                watchdog.cancel()
        # A child that was killed (or died) kept no log of its own: it is kept here, and named.
        kept = keep_child_log(log_path, spec.output, cfg)
        if timed_out.is_set():
            raise ShardTimedOut(
                f"{spec.shard_id} ran past shard_timeout_s ({cfg.shard_timeout_s:g} s); its processes were "
                f"stopped and nothing was committed{kept}"
            )
        if code == 2:
            raise ShardRefused(
                f"{spec.shard_id}: " + next((ln for ln in tail if "curate: error:" in ln), tail[-1] if tail else "")
            )
        if code != 0:
            raise ShardFailed(f"{spec.shard_id} exited with {code}{kept}:\n" + "\n".join(tail[-15:]))
        return parse_result([result_line], f"shard {spec.shard_id}")
