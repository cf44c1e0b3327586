"""A shard that runs past ``shard_timeout_s`` is stopped, fails with the reason, and commits nothing."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psutil
import pytest

from pipeline.config import build_config
from pipeline.shards import plan_shards
from tasks.launchers import ChildProcessLauncher, ShardTimedOut
from tests.integration.conftest import split_sample

pytestmark = pytest.mark.slow


def test_a_shard_past_its_time_limit_is_stopped_and_fails_with_the_reason(tmp_path, sample_table):
    (path,) = split_sample(sample_table, tmp_path / "in", parts=1, rows_each=4)
    (spec,) = plan_shards([str(path)], str(tmp_path / "out"), "cv", "dev")
    # 20 s: the child is still starting Ray and its engines.
    cfg = build_config(overrides=["shard_timeout_s=20"])
    with pytest.raises(ShardTimedOut, match=r"ran past shard_timeout_s \(20 s\); its processes were stopped"):
        ChildProcessLauncher().launch(spec, cfg, logging.getLogger("test"))
    assert not (Path(spec.output) / "manifest.json").exists()
    # Nothing it started is left: no process names the shard's output.
    time.sleep(2)
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if spec.output in " ".join(p.info["cmdline"] or [])]
    assert left == []
