"""Backfill curates only what the ledger of committed shards lacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.backfill import backfill
from tests.integration.conftest import split_sample

pytestmark = pytest.mark.slow


def test_backfill_processes_only_the_new_split(tmp_path, sample_table):
    root = tmp_path / "cv-corpus-17.0" / "en"
    split_sample(sample_table.slice(0, 10), root / "dev", parts=1)
    out = tmp_path / "out"

    first = backfill(source_root=str(root), output_root=str(out), limit=2)
    assert first == {"splits_found": ["dev"], "splits_processed": ["dev"]}
    (dev_manifest,) = list(out.glob("common-voice/dev/*/manifest.json"))
    dev_run = json.loads(dev_manifest.read_text())["run_id"]

    # A new split lands in the release; only it is curated.
    split_sample(sample_table.slice(10, 10), root / "test", parts=1)
    second = backfill(source_root=str(root), output_root=str(out), limit=2)
    assert second == {"splits_found": ["dev", "test"], "splits_processed": ["test"]}
    assert json.loads(dev_manifest.read_text())["run_id"] == dev_run
    (test_manifest,) = list(out.glob("common-voice/test/*/manifest.json"))
    assert json.loads(test_manifest.read_text())["counts"]["in"] == 2

    # Nothing new: nothing runs.
    assert backfill(source_root=str(root), output_root=str(out), limit=2)["splits_processed"] == []


def test_curate_backfill_commits_a_full_and_a_delta_release_once(tmp_path):
    """`curate backfill` on the embedded default (ephemeral Prefect), as a user runs it."""
    from scripts.make_cv_release import build_release

    root = tmp_path / "downloads"
    full = build_release(root, clips=5)  # tarball
    delta = build_release(
        root, clips=4, delta=True, version="24.0", date="2025-12-05", folder=True, start_id=42_000_000
    )
    out = tmp_path / "curated"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "HF_HUB_OFFLINE": "1"}
    cmd = [
        str(Path(sys.executable).parent / "curate"),
        "backfill",
        "--source-root",
        str(root),
        "--output-root",
        str(out),
    ]

    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1200)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "committed 2 shard(s)" in first.stdout
    manifests = {}
    for rel in (full, delta):
        (m,) = (out / rel.release / "en" / "validated").glob("shard-*/manifest.json")
        manifests[rel.release] = json.loads(m.read_text())
        assert manifests[rel.release]["counts"]["in"] == len(rel.rows)
        assert manifests[rel.release]["releases"][0]["release"] == rel.release

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "nothing to do: all 2 shard(s) are already committed" in second.stdout
    for rel in (full, delta):
        (m,) = (out / rel.release / "en" / "validated").glob("shard-*/manifest.json")
        assert json.loads(m.read_text())["run_id"] == manifests[rel.release]["run_id"]  # untouched
