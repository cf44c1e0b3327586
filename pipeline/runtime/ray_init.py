"""The Ray a run uses: the configured cluster, or one of its own on this machine, on loopback."""

from __future__ import annotations

import logging
import os
import shlex
import socket
import sys
import time

import ray

from pipeline.config import CurationConfig

log = logging.getLogger("pipeline")
STARTS = 3


def shell_unsafe(path: str) -> bool:
    """Whether ``path`` holds what a command line splits on (a space, a quote): a tool that pastes it in
    unquoted runs something else."""
    return shlex.quote(path) != path


def install_path_unsafe() -> bool:
    """Whether this Python's install (its interpreter, its site-packages under ``sys.prefix``) sits under a
    path that tools splitting a command line would break, such as torch's compiler (docs/install.md)."""
    return shell_unsafe(sys.prefix) or shell_unsafe(sys.executable)


def quoted_python() -> dict[str, str]:
    """A runtime env's ``py_executable`` where this Python's path needs shell quoting, else nothing.

    Ray starts a worker that has a runtime env with ``bash -c "exec <python> ..."``, the interpreter's path
    unquoted (ray/_private/runtime_env/context.py): from a checkout under ``/home/Jo Smith`` such a worker
    died at start and its actor waited, pending, until the stall timeout.  ``py_executable`` is a shell
    command, so the quoted path goes there.  A cluster's workers run the same Python as its driver."""
    return {"py_executable": shlex.quote(sys.executable)} if shell_unsafe(sys.executable) else {}


class RayUnreachableError(ValueError):
    """The configured cluster's address does not answer: the user's to fix, said in one line."""


def check_reachable(address: str, tries: int = 3, timeout_s: float = 5.0) -> None:
    """Fail in seconds, naming ``address``, when nothing answers there: ``ray.init`` waited on an unknown host
    for minutes, printing nothing (its GCS client retries without end).  ``auto`` is Ray's own to find."""
    if address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise RayUnreachableError(f"ray_address {address!r}: expected HOST:PORT (the head's GCS port, 6379), auto, "
                                  "or http://HEAD:8265 for Ray Jobs")  # fmt: skip
    for attempt in range(1, tries + 1):
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            if attempt == tries:
                raise RayUnreachableError(
                    f"cannot reach the Ray cluster at {address} ({exc}); check --ray-address or RAY_ADDRESS"
                ) from None
            time.sleep(2)


def ensure_ray(cfg: CurationConfig) -> None:
    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address and address.startswith(("http://", "https://")):
        # What `ray job submit` reads: a dashboard, which ray.init cannot join (RAY_ADDRESS set for the Jobs CLI).
        raise RayUnreachableError(
            f"RAY_ADDRESS={address} is a Ray dashboard (Ray Jobs): give it as --ray-address to run there as a Ray "
            "Job, or unset RAY_ADDRESS to run on a Ray of this machine"
        )
    if address:
        check_reachable(address)
        ray.init(address=address, log_to_driver=True)
    else:
        # Logical CPUs above the core count: the Whisper and vLLM actors sit on theirs while the
        # decode tasks and vLLM's tokenizer stages still need slots, or the stream deadlocks.
        # Loopback only: an embedded Ray serves this process, never the network.
        # address="local": a new Ray for this process even if `ray start` left a cluster on this
        # machine, which ray.init() would otherwise join.
        for attempt in range(1, STARTS + 1):
            try:
                ray.init(
                    address="local",
                    num_cpus=max(8, os.cpu_count() or 1),
                    include_dashboard=False,
                    _node_ip_address="127.0.0.1",
                )
                return
            except Exception as exc:
                # Ray gives a new node a fixed 30 s to register (ray/_private/node.py); a machine busy
                # with other work can miss that.  Nothing of the run has started: start it again.
                if "timed out during startup" not in str(exc) or attempt == STARTS:
                    raise
                log.warning("the local Ray did not start in Ray's 30 s (attempt %d of %d); starting it again",
                            attempt, STARTS)  # fmt: skip
                ray.shutdown()
                time.sleep(5)
