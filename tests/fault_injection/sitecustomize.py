"""Test-only fault injection, loaded by every Python process that has this folder on PYTHONPATH.

- ``CURATE_TEST_FAULT=SHARD_ID:N`` makes that shard's commit fail N times: after its data files are
  written, before the catalog takes the snapshot, the worst moment for exactly-once.  Attempts are
  counted with marker files in ``CURATE_TEST_FAULT_DIR``, because each attempt runs in a new process.
- ``CURATE_TEST_KILL_BEFORE_COMMIT=1`` SIGKILLs the writer at that same moment (after writing
  ``killed-before-commit`` into ``CURATE_TEST_FAULT_DIR``), as an OOM killer or a node loss would.
- ``CURATE_TEST_PAUSE_BEFORE_COMMIT=S`` waits S seconds at that same moment (after writing
  ``paused-before-commit``), so a test can press Ctrl-C there.

The product has no such switch; tests put this folder on the worker's PYTHONPATH to get one.
"""

from __future__ import annotations

import os

_spec = os.environ.get("CURATE_TEST_FAULT", "")
_kill = os.environ.get("CURATE_TEST_KILL_BEFORE_COMMIT") == "1"
_dir = os.environ.get("CURATE_TEST_FAULT_DIR", "")
_pause = float(os.environ.get("CURATE_TEST_PAUSE_BEFORE_COMMIT") or 0)

if (_spec or _kill or _pause) and _dir:
    import signal

    import pipeline.table.commit as _commit

    _target, _, _times = _spec.partition(":")
    _real_upsert = _commit.upsert

    # Takes whatever upsert takes, so the shim cannot drift from the real signature.
    def _faulty_upsert(load, files, *args, shard=(0, 1), **kwargs):
        os.makedirs(_dir, exist_ok=True)
        if _kill:
            with open(os.path.join(_dir, "killed-before-commit"), "w") as f:
                f.write(f"{len(files)} data files written, not committed\n")
            # The run's temporary log (its stdout and stderr point at it) goes with the test's files: a
            # killed run cannot keep it, and it was left in the temp folder by every CI run.
            log = os.readlink("/proc/self/fd/2") if os.path.exists("/proc/self/fd/2") else ""
            if os.path.basename(log).startswith("curate-run-"):
                os.replace(log, os.path.join(_dir, os.path.basename(log)))
            os.kill(os.getpid(), signal.SIGKILL)
        if _pause:
            import time

            with open(os.path.join(_dir, "paused-before-commit"), "w") as f:
                f.write(f"{len(files)} data files written, not committed\n")
            time.sleep(_pause)
        shard_id = f"shard-{shard[0] + 1}-of-{shard[1]}"
        if shard_id == _target:
            done = len([f for f in os.listdir(_dir) if f.startswith(shard_id)])
            if done < int(_times or 1):
                open(os.path.join(_dir, f"{shard_id}.{done + 1}"), "w").close()
                raise RuntimeError(f"injected fault in {shard_id} on attempt {done + 1}, after writing, before commit")
        return _real_upsert(load, files, *args, shard=shard, **kwargs)

    _commit.upsert = _faulty_upsert
