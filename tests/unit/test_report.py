"""The run report the Prefect artifacts show: built from shard results, readable at a glance."""

from __future__ import annotations

from pipeline import report
from pipeline.config import build_config
from pipeline.manifest import Counts, DataFileInfo, LocaleResult, ModelInfo, RunResult, Tally


def _result(shard: str, kept: int, reasons: dict[str, int]) -> RunResult:
    tally = Tally(
        counts=Counts(in_=10, kept=kept, rejected=10 - kept - 1, quarantined=1),
        audio_seconds=72.0,
        reasons=reasons,
        quarantined_by_stage={"read": 1},
        wer_bins={"0.0-0.1": kept, ">1.0": 1},
    )
    tally.histogram.score["4"] = kept
    loc = LocaleResult(
        locale="en",
        table="curate.en_clips",
        audio_table="curate.en_audio",
        snapshot_id=42,
        tag="nightly-2026-12-01",
        tally=tally,
        changes={"added": kept},
        files=[DataFileInfo(table="curate.en_clips", path="file:///out/warehouse/d/1.parquet", rows=10, bytes=123_456)],
    )
    return RunResult(
        run_id=shard,
        created_at="now",
        output="/out",
        catalog="sqlite:////out/catalog.db",
        form="common-voice",
        sources=["s"],
        locales=[loc],
        wall_time_s=10,
        models={"transcriber": ModelInfo(ref="bundled:whisper-tiny.en", revision="r", backend="ctranslate2")},
        config=build_config().public_dict(),
    )


def test_histograms_reasons_and_files_add_up_across_shards():
    a, b = _result("s1", 7, {"wer_above": 2}), _result("s2", 5, {"wer_above": 1, "too_short": 3})
    run = report.aggregate([a, b])
    md = report.histogram_markdown(run)
    assert "| 4 | 12 | ████████████████████████ |" in md
    assert "rejected: `wer_above`" in md and "| quarantined at `read` | 2 |" in md
    assert "| >1.0 | 2 |" in md
    rows = report.file_rows(run)
    assert len(rows) == 2 and rows[0]["table"] == "curate.en_clips" and rows[0]["size"] == "120.6 KB"
    assert run.changes == {"added": 12}


def test_summary_says_what_kept_meant_where_the_output_is_and_a_sane_duration():
    run = report.aggregate([_result("s1", 7, {})])
    md = report.summary_markdown(run, 12.0, "Curation", "s3://bucket/curated", skipped=0)
    assert "| output | `s3://bucket/curated` |" in md and "`curate.en_clips` @ 42 (nightly-2026-12-01)" in md
    assert "| kept when: judge | `score` ≥ 3.0 |" in md and "WER ≤ 0.75" in md
    assert "| audio | 72 s |" in md  # not "0.020 audio hours"
    assert "| kept | 7 (70%) |" in md
