"""Backfill curates only what the ledger of committed shards lacks."""

from __future__ import annotations

import json

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
