"""The run report the Prefect artifacts show: built from shard results, readable at a glance."""

from __future__ import annotations

from pipeline.config import build_config
from pipeline.result import Counts, DataFileInfo, LocaleResult, ModelInfo, RunResult, Tally
from pipeline.show import report, trend


def _result(shard: str, kept: int, reasons: dict[str, int]) -> RunResult:
    tally = Tally(
        counts=Counts(in_=10, kept=kept, rejected=10 - kept - 1, quarantined=1),
        audio_seconds=72.0,
        reasons=reasons,
        quarantined_by_stage={"read": 1},
        quarantined_why={"read": {"clip missing from release": 1}},
        wer_bins={"0.0-0.1": kept, ">1.0": 1},
        wer_bins_kept={"0.0-0.1": kept},
        wer_sum=0.05 * kept + 1.5,
        wer_count=kept + 1,
    )
    tally.histogram.score["4"] = kept
    tally.histogram.score_kept["4"] = kept
    tally.histogram.score["2"] = 10 - kept - 1
    loc = LocaleResult(
        locale="en",
        table="curate.en_clips",
        audio_table="curate.en_audio",
        snapshot_id=42,
        tag="nightly-2026-12-01",
        tally=tally,
        changes={"added": kept},
        files=[DataFileInfo(table="curate.en_clips", path="file:///out/warehouse/d/1.parquet", rows=10, bytes=123_456)],
        rejected=[
            {"id": "r1", "sentence": "s", "transcription": "t", "score": 2, "wer": 0.1, "reasons": ["judge_below"],
             "error": None, "stage": None},
            {"id": "q1", "sentence": "s", "transcription": None, "score": None, "wer": None, "reasons": [],
             "error": "clip missing from release", "stage": "read"},
        ],
    )  # fmt: skip
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


def test_histograms_split_kept_and_rejected_on_one_scale_and_mark_the_thresholds():
    a, b = _result("s1", 7, {"judge_below": 2}), _result("s2", 5, {"judge_below": 4})
    run = report.aggregate([a, b])
    md = report.histogram_markdown(run)
    assert md.startswith("18 judged clips")
    # Score 4: 12 kept of 18 judged, two thirds of the width; score 3 is where kept starts.
    assert "| 4 | 12 | 0 | 67% | " + "█" * 16 + " |" in md
    assert "| 2 | 0 | 6 | 33% | " + "░" * 8 + " |" in md
    assert "| 3 ◀ threshold ≥ 3 | 0 | 0 | 0% |" in md
    assert "| 0.7-0.8 ◀ max_wer 0.75 |" in md and "| >1.0 | 0 | 2 |" in md
    assert "rejected: `judge_below`" in md
    (row,) = [line for line in md.splitlines() if line.startswith("| quarantined at `read` | 2 | 10% |")]
    assert row.endswith("| clip missing from release (2) |")
    assert run.changes == {"added": 12}


def test_headline_files_rejected_rows():
    run = report.aggregate([_result("s1", 7, {})])
    assert report.headline(run) == "7/10 kept (70%), mean WER 0.23, 1 quarantined"
    rows = report.file_rows(run, ["/out/_logs/run.log"])
    assert rows[0] == {
        "kind": "data",
        "table": "curate.en_clips",
        "rows": 10,
        "size": "120.6 KB",
        "path": "file:///out/warehouse/d/1.parquet",
    }
    assert rows[1]["kind"] == "log" and rows[1]["path"] == "/out/_logs/run.log"
    rejected = report.rejected_rows(run)
    assert [r["why"] for r in rejected] == ["judge_below", "read: clip missing from release"]
    empty = report.aggregate([RunResult.model_validate(_result("s", 0, {}).model_dump() | {"locales": []})])
    assert report.headline(empty).startswith("nothing to do")


def test_summary_says_what_kept_meant_where_the_input_and_output_are():
    run = report.aggregate([_result("s1", 7, {})])
    md = report.summary_markdown(run, 12.0, "Curation", "s3://bucket/curated", skipped=0, source="s3://cv/en.tar.gz")
    assert "**7/10 kept (70%)" in md
    assert "| input | `s3://cv/en.tar.gz` |" in md and "| output | `s3://bucket/curated` |" in md
    assert "`curate.en_clips` @ 42 (nightly-2026-12-01)" in md
    assert "| kept when: judge | `score` ≥ 3.0 |" in md and "WER ≤ 0.75" in md
    assert "| audio | 72 s |" in md  # not "0.020 audio hours"
    assert "| kept | 7 (70%) |" in md and "| mean WER | 0.231 |" in md


def test_the_trend_carries_nights_on_and_flags_a_kept_drop():
    night = lambda n, pct: {"night": f"2026-12-{n:02d}", "run": f"r{n}", "clips": 10, "kept %": pct}  # noqa: E731
    rows = []
    for n, pct in enumerate([90.0, 92.0, 88.0], 1):
        rows = trend.trend(rows, night(n, pct), nights=3)
    assert [r["night"] for r in rows] == ["2026-12-01", "2026-12-02", "2026-12-03"]
    rows = trend.trend(rows, night(4, 70.0), nights=3)
    assert [r["night"] for r in rows] == ["2026-12-02", "2026-12-03", "2026-12-04"]  # the last three
    assert trend.kept_drop(rows, points=10, min_nights=2) == {
        "tonight": 70.0,
        "trailing_mean": 90.0,
        "drop_points": 20.0,
        "nights": 2,
        "before": "the 2 nights before",
    }
    assert trend.kept_drop(rows, points=25, min_nights=2) is None  # within the tolerance
    # One row per night: a second run for a night (a retry) replaces its row; a manual run is shown
    # last in its own trend, and is never carried on as a night.
    again = trend.trend(rows, night(4, 75.0), nights=3)
    assert [(r["night"], r["kept %"]) for r in again][-2:] == [("2026-12-03", 88.0), ("2026-12-04", 75.0)]
    manual = {**night(4, 10.0), "kind": "manual", "run": "validated-en-manual-2026-12-04-1530"}
    with_manual = trend.trend(again, manual, nights=3)
    assert with_manual[-1]["kind"] == "manual" and len(trend.nights(with_manual)) == 2
    assert trend.trend(with_manual, night(5, 80.0), nights=3)[-2]["night"] == "2026-12-04"
    assert trend.kept_drop(rows, points=10, min_nights=3) is None  # too few nights to judge
    idle = {**night(5, None), "clips": 0}
    assert trend.kept_drop([*rows, idle], points=1, min_nights=1) is None  # nothing to do is no drop
    tonight = trend.trend_row(report.aggregate([_result("s1", 7, {})]), "2026-12-05", "validated-en-2026-12-05")
    assert tonight["kept %"] == 70.0 and tonight["mean WER"] == 0.231 and tonight["clips"] == 10


def test_the_table_now_is_the_last_shards_view_not_a_sum():
    a, b = _result("s1", 2, {}), _result("s2", 2, {})
    a.locales[0].table_rows, a.locales[0].table_kept = 2, 2  # the first shard's commit
    b.locales[0].table_rows, b.locales[0].table_kept = 4, 3  # the second's, which holds the first's rows
    run = report.aggregate([a, b])
    assert run.tables_now == {"curate.en_clips": (4, 3)}
    assert trend.trend_row(run, "2026-12-01", "r")["table clips"] == 4
    assert "| table now | `curate.en_clips`: 4 clips, 3 kept |" in report.summary_markdown(run, 1.0, "t", "/out")


def test_the_summary_has_a_row_per_locale_saying_how_it_was_heard_and_judged():
    es, rw = _result("s1", 7, {}), _result("s2", 5, {})
    es.locales[0] = es.locales[0].model_copy(
        update={"locale": "es", "table": "curate.es_clips", "transcriber": "bundled:whisper-base@ct2-sha256:d01c",
                "language": "es", "language_check": "whisper", "judge": "off (judge.locales)"}
    )  # fmt: skip
    rw.locales[0] = rw.locales[0].model_copy(
        update={"locale": "rw", "table": "curate.rw_clips", "transcriber": "bundled:whisper-base@ct2-sha256:d01c",
                "language": None, "language_check": "unsupported", "judge": "off (judge.locales)"}
    )  # fmt: skip
    md = report.summary_markdown(report.aggregate([es, rw]), 1.0, "t", "/out")
    assert "| locale es | 10 in, 7 kept; bundled:whisper-base@ct2-sha256:d01c, es; language check: whisper; " in md
    assert "judge off (judge.locales) |" in md
    assert "| locale rw | 10 in, 5 kept; " in md and "language check: unsupported (agreement gates only)" in md
    yue = es.locales[0].model_copy(update={"locale": "yue", "language": "yue", "decoded_as": "zh"})
    assert report.language_words(yue) == "yue (this Whisper has no yue: decoded as zh); language check: whisper"


def test_the_changes_line_counts_clips_not_in_their_release_apart_from_the_engines_work():
    from pipeline.show.report import changes_words

    assert changes_words({"engine_rows": 20, "added": 20}).startswith("20 clip(s) through the engines; 20 added")
    line = changes_words({"engine_rows": 200_020, "absent": 200_000, "added": 200_020})
    assert line.startswith("20 clip(s) through the engines, 200000 not in their release (not read); 200020 added")


def test_why_rows_were_quarantined_adds_up_across_shards_and_stays_small():
    """The kinds of quarantine reason per stage sum across shards; past ``KINDS_PER_STAGE`` the rarest go under
    one "other reasons" entry, and a reason's pipe cannot break the Markdown table."""
    from pipeline.result import KINDS_PER_STAGE, OTHER_KINDS, combine

    a, b = _result("s1", 7, {}), _result("s2", 5, {})
    b.locales[0].tally.quarantined_why = {"read": {"clip missing from release": 1, "a | b": 1}}
    b.locales[0].tally.quarantined_by_stage = {"read": 2}
    t = combine([a.locales[0].tally, b.locales[0].tally])
    assert t.quarantined_why == {"read": {"clip missing from release": 2, "a | b": 1}}
    md = report.histogram_markdown(report.aggregate([a, b]))
    (row,) = [line for line in md.splitlines() if line.startswith("| quarantined at `read` | 3 | 15% |")]
    assert row.endswith("| clip missing from release (2); a ¦ b (1) |")  # why, after the counts
    many = {f"kind {i}": 100 - i for i in range(KINDS_PER_STAGE + 5)}
    (capped,) = combine(
        [a.locales[0].tally.model_copy(update={"quarantined_why": {"decode": many}})]
    ).quarantined_why.values()
    assert len(capped) == KINDS_PER_STAGE + 1 and sum(capped.values()) == sum(many.values())
    assert capped[OTHER_KINDS] == sum(100 - i for i in range(KINDS_PER_STAGE, KINDS_PER_STAGE + 5))
