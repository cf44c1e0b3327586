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


def test_ctrl_c_on_a_backfill_stops_its_shard_and_server_and_exits(tmp_path):
    """Ctrl-C reaches every process of the terminal's group, Prefect's temporary server among them: the
    backfill's flow engine, left without its API, printed connection errors and hung past three more
    Ctrl-Cs.  Now the first one stops the running shard (its child and its Ray) and the server, says what
    the tables hold, and exits 130; nothing of the run is left running, and the next backfill finishes."""
    import psutil

    from scripts.make_cv_release import build_release

    root, out = tmp_path / "downloads", tmp_path / "curated"
    build_release(root, clips=3, locale="en", version="22.0", missing=False, corrupt=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    cmd = [str(REPO / ".venv" / "bin" / "curate"), "backfill", "--source-root", str(root), "--output-root", str(out),
           *NO_JUDGE_ARGS]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    seen: list[str] = []
    try:
        for line in proc.stdout:  # until the shard's child is at work
            seen.append(line)
            if "[shard-1-of-1] curating" in line:
                break
        assert proc.poll() is None, "".join(seen[-40:])
        shards = [
            p for p in psutil.Process(proc.pid).children(recursive=True) if "pipeline.cli" in " ".join(p.cmdline())
        ]
        assert shards, "".join(seen[-40:])
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
        rest, _ = proc.communicate(timeout=120)
    finally:
        stop_tree(proc.pid)
    assert proc.returncode == 130, "".join(seen[-20:]) + rest[-3000:]
    assert "curate: interrupted. Each locale's table holds what its run committed" in rest, rest[-3000:]
    assert "Traceback" not in rest and "All connection attempts failed" not in rest, rest[-3000:]
    time.sleep(1)
    assert not [p for p in shards if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "curate.en_clips (validated): snapshot" in again.stdout
    # The table's lock slot the interrupted run held was freed: the temporary server keeps leases in memory,
    # so it outlived the run in the database, and this backfill waited on it forever.
    assert "freeing the slot a killed run left taken" in again.stdout + again.stderr


def test_a_sigkilled_backfill_leaves_no_temporary_prefect_server(tmp_path):
    """Prefect stops its temporary server from ``atexit``: a backfill killed by SIGKILL (an OOM killer)
    left it running for good, one more each time.  ``curate backfill`` starts it through
    ``flows.temporary_server``, whose watchdog stops it once the backfill is gone, however it ended."""
    import psutil

    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    parent = subprocess.Popen(
        [sys.executable, "-c", "import time; from flows.temporary_server import start_temporary_server as s; "
         "print(s(), flush=True); time.sleep(600)"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        server = psutil.Process(int(parent.stdout.readline()))  # printed once the server answers
        assert "prefect.server.api.server:create_app" in " ".join(server.cmdline())
        parent.kill()
        parent.wait(timeout=10)
        server.wait(timeout=60)  # raises psutil.TimeoutExpired while it runs on
        assert not server.is_running()
    finally:
        stop_tree(parent.pid)
