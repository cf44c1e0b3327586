"""A person presses Ctrl-C while ``curate run`` is at work, here at the worst moment: the clips' data files
are written and the commit has not happened.

They must read what happened and what to do (the engines' output goes to a log, so an uncaught
KeyboardInterrupt used to print nothing at all and exit 1); the table must be as it was; the files the
run wrote must be gone; and the log must be kept where the summary would have named it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import NO_JUDGE_ARGS, REPO
from tests.services import stop_tree

pytestmark = pytest.mark.slow


def test_ctrl_c_before_the_commit_says_what_the_table_holds_and_leaves_no_file(tmp_path):
    out, faults, own_tmp = tmp_path / "table", tmp_path / "faults", tmp_path / "tmp"
    own_tmp.mkdir()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "fault_injection"), os.environ.get("PYTHONPATH", "")]),
        "CURATE_TEST_PAUSE_BEFORE_COMMIT": "600",
        "CURATE_TEST_FAULT_DIR": str(faults),
        "TMPDIR": str(own_tmp),
        "RAY_TMPDIR": "/tmp",
    }
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(out), "--limit", "3", *NO_JUDGE_ARGS]
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not (faults / "paused-before-commit").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never reached its commit"
            time.sleep(0.2)
        # The clips' files; the audio is committed first (content-addressed, so a clip never points at
        # missing audio, and the next run adds none twice).
        written = [p for p in out.rglob("*.parquet") if "/en_clips/data/" in str(p)]
        assert written, "no data file was written before the commit: nothing to test"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends the foreground process
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        stop_tree(proc.pid)

    assert proc.returncode == 130, (stdout[-2000:], stderr[-3000:])
    assert stderr.startswith("curate: interrupted. A commit is all or nothing"), stderr[-3000:]
    assert "Run the same command again to finish" in stderr and "Traceback" not in stderr
    # The log is kept under the output, and holds the traceback a maintainer would want.
    (log,) = (out / "_logs").glob("curate-run-*.log")
    assert f"full log: {log}" in stderr and "KeyboardInterrupt" in log.read_text()
    # No clip of the run is in the table or left on disk: no snapshot, and its files are deleted.
    assert not any(p.exists() for p in written), [str(p) for p in written if p.exists()]
    from tests.table import tables

    clips, _ = tables(out)
    assert clips.current_snapshot() is None
    assert not list(own_tmp.glob("curate-run-*.log"))  # the log moved, not copied
