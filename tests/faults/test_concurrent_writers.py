"""Writers that meet on one table: two real processes at once, and two flow runs under the table's lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from tests.conftest import NO_JUDGE, NO_JUDGE_ARGS, REPO
from tests.flow_process import flow_result, start_flow
from tests.integration.conftest import split_sample
from tests.table import engine_rows, result_of, rows, summaries

pytestmark = pytest.mark.slow


def test_two_writers_on_one_table_both_land_and_every_id_appears_once(tmp_path):
    """No lock between them (two `curate run`s): both score their clips, the later commit finds the
    table changed under it, plans again on the new snapshot, and every id is in the table once."""
    out = tmp_path / "table"
    runs = []
    for limit in ("3", "5"):
        log = tmp_path / f"run-{limit}.log"
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(out), "--limit", limit, "--emit-result",
               *NO_JUDGE_ARGS]  # fmt: skip
        with open(log, "w") as f:
            runs.append((subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT), log))
    for proc, log in runs:
        assert proc.wait(timeout=1500) == 0, log.read_text()[-3000:]
    results = [result_of(log.read_text()) for _, log in runs]
    got = rows(out)  # asserts each id once
    assert len(got) == 5
    snaps = [s for s in summaries(out) if s.get("curate.operation") != "compaction"]
    assert sorted(s["curate.run-id"] for s in snaps) == sorted(r.run_id for r in results)
    # The 3 clips both picked were scored twice (no lock here), but stored once.
    assert engine_rows(out) == 8


def test_two_flow_runs_on_one_table_take_turns_and_never_score_a_clip_twice(tmp_path, sample_table, prefect_api):
    """The nightly run and a backfill aimed at the same tables: Prefect's global concurrency limit keyed
    by the output root makes the second wait, and then it finds nothing to do."""
    src = tmp_path / "in"
    split_sample(sample_table, src, parts=1, rows_each=4)
    out = tmp_path / "out"
    api = prefect_api
    with temporary_settings({PREFECT_API_URL: api}):
        env = {**os.environ, "PREFECT_API_URL": api, "HF_HUB_OFFLINE": "1"}
        kwargs = {"source": str(src), "output_root": str(out), "split": "dev", "config_overrides": [NO_JUDGE]}
        procs = []
        for name in ("a", "b"):
            procs.append(start_flow(kwargs, env, tmp_path / f"flow-{name}.log"))
            time.sleep(1)
        for proc, name in zip(procs, ("a", "b"), strict=True):
            assert proc.wait(timeout=1500) == 0, (tmp_path / f"flow-{name}.log").read_text()[-4000:]
        results = [flow_result(tmp_path / f"flow-{n}.log") for n in ("a", "b")]
    assert all(r["completed"] for r in results)
    messages = sorted(r["message"] for r in results)
    assert messages[1].startswith("nothing to do"), messages
    assert len(rows(out)) == 4 and engine_rows(out) == 4  # scored once, by whichever ran first
