"""Test-only fault injection, loaded by every Python process that has this folder on PYTHONPATH.

``CURATE_TEST_FAULT=SHARD_ID:N`` makes that shard's commit fail N times: after its data is staged,
before anything is committed, which is the worst moment for exactly-once.  Attempts are counted with
marker files in ``CURATE_TEST_FAULT_DIR``, because each attempt runs in a new process.  The product
has no such switch; tests put this folder on the worker's PYTHONPATH to get one.
"""

from __future__ import annotations

import os

_spec = os.environ.get("CURATE_TEST_FAULT", "")
_dir = os.environ.get("CURATE_TEST_FAULT_DIR", "")

if _spec and _dir:
    import pipeline.io.commit as _commit

    _target, _, _times = _spec.partition(":")
    _real_commit = _commit.commit

    def _faulty_commit(uri, run_id, manifest, storage=None):
        shard = (manifest.shard or {}).get("shard_id")
        if shard == _target:
            os.makedirs(_dir, exist_ok=True)
            done = len([f for f in os.listdir(_dir) if f.startswith(shard)])
            if done < int(_times or 1):
                open(os.path.join(_dir, f"{shard}.{done + 1}"), "w").close()
                raise RuntimeError(f"injected fault in {shard} on attempt {done + 1}, after staging, before commit")
        return _real_commit(uri, run_id, manifest, storage)

    _commit.commit = _faulty_commit
