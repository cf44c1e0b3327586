"""The writer is SIGKILLed after its data files are written and before the catalog takes the snapshot.

The previous snapshot must still be the table and read completely; the dead writer's files are
orphans that the next run removes; and the re-run gives every id once.

The warehouse is a plain folder (``table.warehouse=/some/path``), as a new user would set it: the
re-run sweeps orphans with no minimum age, and must find every committed file its own (#31: the sweep
once compared a plain path with ``file://`` URIs and deleted the whole table on the second night).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import NO_JUDGE_ARGS, REPO
from tests.services import stop_tree
from tests.table import rows, summaries, tables

pytestmark = pytest.mark.slow


def _run(out, limit: str, env, log, *extra: str):
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(out), "--limit", limit, *NO_JUDGE_ARGS]
    cmd += ["--set", f"table.warehouse={_warehouse(out)}", *extra]
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        return proc.wait(timeout=900)
    finally:
        stop_tree(proc.pid)  # a SIGKILLed driver leaves its Ray behind: stop it, by PID


def _warehouse(out):
    return out.parent / "plain-warehouse"  # a plain path, outside the output root


def _files(out) -> set[str]:
    return {f"file://{p}" for p in _warehouse(out).rglob("*.parquet") if "/data/" in str(p)}


def _overrides(out) -> list[str]:
    return [f"table.warehouse={_warehouse(out)}"]


def test_a_writer_killed_before_the_commit_loses_nothing(tmp_path):
    out = tmp_path / "table"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    assert _run(out, "2", env, tmp_path / "first.log") == 0, (tmp_path / "first.log").read_text()[-3000:]
    before = rows(out, overrides=_overrides(out))
    (snap,) = summaries(out, overrides=_overrides(out))

    faults = tmp_path / "faults"
    killed = {
        **env,
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "fault_injection"), os.environ.get("PYTHONPATH", "")]),
        "CURATE_TEST_KILL_BEFORE_COMMIT": "1",
        "CURATE_TEST_FAULT_DIR": str(faults),
    }
    code = _run(out, "4", killed, tmp_path / "killed.log")
    assert code == -signal.SIGKILL, (tmp_path / "killed.log").read_text()[-3000:]
    assert "data files written, not committed" in (faults / "killed-before-commit").read_text()
    assert len(list(faults.glob("curate-run-*.log"))) == 1  # its log, moved here from the temp folder

    # The previous snapshot is the table, and every file it references is there and reads.
    assert [s["_id"] for s in summaries(out, overrides=_overrides(out))] == [snap["_id"]]
    assert rows(out, overrides=_overrides(out)) == before
    clips, audio = tables(out, overrides=_overrides(out))
    referenced = set(clips.inspect.all_files().column("file_path").to_pylist())
    referenced |= set(audio.inspect.all_files().column("file_path").to_pylist())
    orphans = _files(out) - referenced
    assert orphans, "the killed writer wrote no data file: the kill came too early to test anything"

    # The next run removes the orphans (here at once; by default only once an hour old, so a writer still
    # at work is never robbed of its files) and gives every id once.
    code = _run(out, "4", env, tmp_path / "rerun.log", "--set", "table.orphan_min_age_s=0")
    assert code == 0, (tmp_path / "rerun.log").read_text()[-3000:]
    assert not (orphans & _files(out))
    clips, audio = tables(out, overrides=_overrides(out))
    referenced = set(clips.inspect.all_files().column("file_path").to_pylist())
    referenced |= set(audio.inspect.all_files().column("file_path").to_pylist())
    assert referenced <= _files(out), "the sweep deleted a file the table references"
    after = rows(out, overrides=_overrides(out))
    assert len(after) == 4
    for rid, row in before.items():
        assert (
            after[rid]["transcription"] == row["transcription"] and after[rid]["processed_run"] == row["processed_run"]
        )
