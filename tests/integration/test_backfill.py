"""Backfill curates only what the tables lack: a quarter of releases at once, then nothing to do."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.backfill import backfill
from scripts.make_cv_release import build_cumulative, build_release
from tests.conftest import NO_JUDGE, NO_JUDGE_ARGS
from tests.integration.conftest import split_sample
from tests.table import engine_rows, rows, summaries

pytestmark = pytest.mark.slow


def test_curate_backfill_over_full_n_delta_and_full_n_plus_1(tmp_path):
    """`curate backfill` on the embedded default (ephemeral Prefect), as a user runs it: one engine start-up
    for the three releases, each clip through the engines once, the newest release's word on every clip.
    Beside them a German download cut short: it fails alone (it failed the whole backfill, every locale)."""
    root = tmp_path / "downloads"
    c = build_cumulative(root, clips=8, new=4)
    whole = build_release(tmp_path / "de", clips=2, locale="de", version="22.0").path
    cut = root / whole.name
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out = tmp_path / "curated"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "HF_HUB_OFFLINE": "1"}
    cmd = [
        str(Path(sys.executable).parent / "curate"),
        "backfill",
        "--source-root",
        str(root),
        "--output-root",
        str(out),
        *NO_JUDGE_ARGS,
    ]

    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]
    assert "found: 4" in first.stdout and "curate.en_clips (validated): snapshot" in first.stdout
    failed = [ln for ln in first.stderr.splitlines() if ln.startswith("curate: failed: ")]
    assert len(failed) == 1 and failed[0].startswith("curate: failed: de (validated): "), first.stderr[-3000:]
    assert f"{cut}: broken tar archive" in failed[0]
    got = rows(out)
    # Every validated clip of full N+1 once; the moved ones too, with their reason.
    assert sorted(got) == sorted({*c.current, *c.moved})
    assert {rid for rid, r in got.items() if r["cv_status"] == "validated"} == set(c.current)
    for rid in c.moved:
        assert got[rid]["reasons"] == ["cv_invalidated"] and not got[rid]["kept"] and got[rid]["score"] is None
    assert "sentence_reported" in got[c.reported]["reasons"] and not got[c.reported]["kept"]
    # The promoted clip went through the engines (a transcript under today's engine key); the judge is off.
    assert (
        got[c.promoted]["transcription"] and got[c.promoted]["engine_key"] and got[c.missing_in_first]["error"] is None
    )
    # Each clip through the engines once, read from the snapshots: the moved ones never.
    assert engine_rows(out) == len(c.current)
    (snap,) = [s for s in summaries(out) if s.get("curate.operation") != "compaction"]
    assert set(snap["curate.releases"].split(",")) == {
        "cv-corpus-22.0-2025-06-20",
        "cv-corpus-23.0-delta-2025-09-05",
        "cv-corpus-23.0-2025-09-05",
    }

    before = summaries(out)
    cut.unlink()  # the download thrown away, to be fetched again
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    # A run that went well shows no ERROR line: offline, Prefect's temporary server opened every backfill with
    # "ERROR | prefect.server.services.telemetry - Failed to send telemetry".
    assert not re.search(r"\| ERROR +\|", second.stdout + second.stderr), second.stdout + second.stderr
    assert "nothing to do: every input is already in the tables" in second.stdout
    assert summaries(out) == before  # no new snapshot
    assert "through the engines" not in second.stdout  # no engine started


def test_a_parquet_mirror_backfill_curates_only_the_new_split(tmp_path, sample_table, monkeypatch):
    import flows.curation

    built = []
    real = flows.curation.build_config
    monkeypatch.setattr(flows.curation, "build_config", lambda *a, **k: built.append(1) or real(*a, **k))
    root = tmp_path / "cv-corpus-17.0" / "en"
    split_sample(sample_table.slice(0, 10), root / "dev", parts=1)
    out = tmp_path / "out"

    first = backfill(source_root=str(root), output_root=str(out), limit=2, config_overrides=[NO_JUDGE])
    assert first["found"] == ["dev"] and [t["nothing_to_do"] for t in first["tables"]] == [False]
    assert len(built) == 1  # the config is built once by the backfill, and handed to its curation run
    # A new split lands in the mirror; only it is curated.
    split_sample(sample_table.slice(10, 10), root / "test", parts=1)
    second = backfill(source_root=str(root), output_root=str(out), limit=2, config_overrides=[NO_JUDGE])
    assert second["found"] == ["dev", "test"]
    assert [(t["split"], t["nothing_to_do"]) for t in second["tables"]] == [("dev", True), ("test", False)]
    assert len(rows(out)) == 4
    # Nothing new: nothing runs.
    again = backfill(source_root=str(root), output_root=str(out), limit=2, config_overrides=[NO_JUDGE])
    assert all(t["nothing_to_do"] for t in again["tables"])
