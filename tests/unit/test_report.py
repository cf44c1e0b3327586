"""The run report the Prefect artifacts show: built from manifests, readable at a glance."""

from __future__ import annotations

from pipeline import report
from pipeline.config import build_config
from pipeline.manifest import Counts, Manifest, ModelInfo, OutputFile


def _manifest(shard: str, kept: int, reasons: dict[str, int]) -> Manifest:
    m = Manifest(
        run_id=shard,
        created_at="now",
        source="s",
        form="common-voice",
        inputs=["s"],
        files=[OutputFile(kind="curated", path="curated/part-1.parquet", rows=kept, bytes=123_456)],
        wall_time_s=10,
        throughput={},
        models={"transcriber": ModelInfo(ref="bundled:whisper-tiny.en", revision="r", backend="ctranslate2")},
        config=build_config().public_dict(),
        counts=Counts(in_=10, kept=kept, rejected=10 - kept - 1, quarantined=1),
        audio_seconds=72.0,
        reasons=reasons,
        quarantined_by_stage={"read": 1},
        wer_bins={"0.0-0.1": kept, ">1.0": 1},
        shard={"shard_id": shard},
    )
    m.histogram.score["4"] = kept
    return m


def test_histograms_reasons_and_files_add_up_across_shards():
    a, b = _manifest("s1", 7, {"wer_above": 2}), _manifest("s2", 5, {"wer_above": 1, "too_short": 3})
    run = report.aggregate([a, b])
    md = report.histogram_markdown(run)
    assert "| 4 | 12 | ████████████████████████ |" in md
    assert "rejected: `wer_above`" in md and "| quarantined at `read` | 2 |" in md
    assert "| >1.0 | 2 |" in md
    rows = report.file_rows([a, b], ["/out/cv/en/validated/s1", "/out/cv/en/validated/s2"], "/out")
    assert rows[0] == {
        "kind": "manifest",
        "rows": "",
        "size": "",
        "file": "manifest.json",
        "shard": "cv/en/validated/s1",
    }
    assert rows[1]["size"] == "120.6 KB" and rows[1]["file"] == "curated/part-1.parquet"


def test_summary_says_what_kept_meant_where_the_output_is_and_a_sane_duration():
    run = report.aggregate([_manifest("s1", 7, {})])
    md = report.summary_markdown(run, 12.0, "Curation", "s3://bucket/curated", skipped=0)
    assert "| output | `s3://bucket/curated` |" in md
    assert "| kept when: judge | `score` ≥ 3.0 |" in md and "WER ≤ 0.75" in md
    assert "| audio | 72 s |" in md  # not "0.020 audio hours"
    assert "| kept | 7 (70%) |" in md
