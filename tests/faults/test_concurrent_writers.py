"""Two real runs aimed at one output: the second fails fast; the first commits, untouched."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_a_second_writer_on_the_same_shard_fails_fast(tmp_path):
    out = tmp_path / "shard"
    cmd = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(out), "--limit", "4"]
    log = tmp_path / "first.log"
    with open(log, "w") as f:
        first = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 300
        while not (out / "_lease.json").exists():  # the first run holds the output
            assert first.poll() is None, log.read_text()[-3000:]
            assert time.time() < deadline, "the first run never took the lease"
            time.sleep(0.5)
        t0 = time.time()
        second = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stdout[-2000:] + second.stderr[-2000:]
        assert "curate: error:" in second.stderr and "is being written by run" in second.stderr
        assert "Started a local Ray instance" not in second.stdout + second.stderr
        assert time.time() - t0 < 120
        assert first.wait(timeout=900) == 0, log.read_text()[-3000:]
    finally:
        if first.poll() is None:
            first.kill()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["in"] == 4 and not (out / "_staging").exists() and not (out / "_lease.json").exists()
