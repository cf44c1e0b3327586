import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.io import commit
from pipeline.io.sink import block_tally, output_schemas, split_block
from pipeline.io.storage import list_parquet_files
from pipeline.manifest import Manifest
from tests.conftest import write_parquet


def _stage(root, run_id, rel, rows):
    path = root / "_staging" / run_id / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": [str(i) for i in range(rows)]}), path)
    return {"kind": rel.split("/")[0], "path": rel, "rows": rows, "bytes": path.stat().st_size}


def _manifest(run_id, files):
    return Manifest(
        run_id=run_id,
        created_at="2026-11-26T00:00:00+00:00",
        source="in.parquet",
        form="parquet",
        inputs=["in.parquet"],
        files=files,
        wall_time_s=1.0,
        throughput={},
        models={},
        config={},
    )


def test_commit_replaces_and_never_appends(tmp_path):
    root = tmp_path / "out"
    f1 = _stage(root, "r1", "curated/part-a.parquet", 3)
    commit.commit(str(root), "r1", _manifest("r1", [f1]))
    assert commit.is_committed(str(root))
    f2 = _stage(root, "r2", "curated/part-b.parquet", 2)
    commit.commit(str(root), "r2", _manifest("r2", [f2]))
    assert sorted(p.name for p in (root / "curated").iterdir()) == ["part-b.parquet"]
    assert json.loads((root / "manifest.json").read_text())["files"] == [f2]
    assert not (root / "_staging").exists()


def test_unlisted_staging_files_from_a_failed_attempt_are_not_committed(tmp_path):
    root = tmp_path / "out"
    _stage(root, "r1", "curated/part-retried-task-leftover.parquet", 5)
    f = _stage(root, "r1", "curated/part-ok.parquet", 3)
    commit.commit(str(root), "r1", _manifest("r1", [f]))
    assert [p.name for p in (root / "curated").iterdir()] == ["part-ok.parquet"]


def test_missing_manifest_or_file_means_not_committed(tmp_path):
    root = tmp_path / "out"
    assert not commit.is_committed(str(root))
    f = _stage(root, "r1", "scores/part-a.parquet", 1)
    commit.commit(str(root), "r1", _manifest("r1", [f]))
    (root / "scores" / "part-a.parquet").unlink()
    assert not commit.is_committed(str(root))


def test_split_block_routes_every_row_exactly_once():
    schemas = output_schemas(pa.schema([]), (), has_sentence=False, keep_audio=False)
    table = pa.table(
        {
            "id": ["k", "r", "q"],
            "transcription": ["a", "b", ""],
            "score": [4, 1, None],
            "score_expected": [3.9, 1.2, None],
            "duration_s": [1.0, 1.0, 0.0],
            "error": [None, None, "bad"],
            "stage": [None, None, "decode"],
            "kept": [True, False, False],
            "reasons": [[], ["judge_below"], []],
            "wer": [0.0, 0.1, None],
            "cer": [0.0, 0.05, None],
            "avg_logprob": [-0.1, -0.2, None],
            "no_speech_prob": [0.0, 0.01, None],
            "compression_ratio": [1.0, 1.1, None],
            "language": [None, None, None],
            "language_prob": [None, None, None],
        }
    )
    parts = split_block(table, schemas)
    assert parts["curated"].column("id").to_pylist() == ["k"]
    assert parts["scores"].column("id").to_pylist() == ["k", "r"]
    assert parts["quarantine"].to_pylist() == [{"id": "q", "error": "bad", "stage": "decode"}]
    assert parts["scores"].column("reasons").to_pylist() == [[], ["judge_below"]]
    tally = block_tally(table, parts)
    assert tally.reasons == {"judge_below": 1} and tally.quarantined_by_stage == {"decode": 1}
    assert tally.counts.model_dump(by_alias=True) == {"in": 3, "kept": 1, "rejected": 1, "quarantined": 1}
    assert tally.wer_bins["0.0-0.1"] == 1 and tally.wer_bins["0.1-0.2"] == 1


def test_listing_is_sorted_and_skips_private_dirs(tmp_path):
    for name in ["b.parquet", "a.parquet", "_staging/x.parquet", "sub/c.parquet"]:
        write_parquet([{"id": "1"}], tmp_path / name)
    found = list_parquet_files(str(tmp_path))
    assert [p.split(str(tmp_path))[1] for p in found] == ["/a.parquet", "/b.parquet", "/sub/c.parquet"]
    assert list_parquet_files(str(tmp_path / "*.parquet")) == found[:2]
    with pytest.raises(FileNotFoundError):
        list_parquet_files(str(tmp_path / "nope"))


def test_double_star_glob_spans_directories(tmp_path):
    for name in ["cv/en/dev/a.parquet", "cv/en/test/b.parquet", "cv/en/test/notes.txt"]:
        write_parquet([{"id": "1"}], tmp_path / name)
    found = list_parquet_files(str(tmp_path / "cv/**/*.parquet"))
    assert [p.rsplit("/", 1)[1] for p in found] == ["a.parquet", "b.parquet"]


def test_shard_plan_is_deterministic_and_splits_are_discovered(tmp_path, monkeypatch):
    from pipeline.shards import discover_splits, plan_shards

    for name in ["en/dev/b.parquet", "en/dev/a.parquet", "en/test/c.parquet", "en/readme.parquet"]:
        write_parquet([{"id": "1"}], tmp_path / name)
    monkeypatch.chdir(tmp_path)
    splits = discover_splits("en")  # a relative root works like an absolute one
    assert sorted(splits) == ["dev", "test"]
    assert [f.rsplit("/", 1)[1] for f in splits["dev"]] == ["a.parquet", "b.parquet"]

    one = plan_shards(splits["dev"], "out", "Common Voice", "dev", num_shards=2)
    again = plan_shards(list(reversed(splits["dev"])), "out", "Common Voice", "dev", num_shards=2)
    assert one == again
    assert [s.shard_id[:11] for s in one] == ["shard-00000", "shard-00001"]
    assert one[0].output == f"out/common-voice/dev/{one[0].shard_id}"
    assert plan_shards(splits["dev"], "out", "cv", "dev", num_shards=5)[-1].files == (splits["dev"][1],)


def test_a_shard_committed_for_another_request_is_not_done(tmp_path):
    """A shard committed by a run with `limit` (or other gates, or other inputs) never stands in for
    the full request: later runs redo it instead of reporting its partial counts forever."""
    from pipeline.config import build_config
    from pipeline.shards import is_done, plan_shards, request_key

    write_parquet([{"id": "a"}], tmp_path / "in.parquet")
    (spec,) = plan_shards([str(tmp_path / "in.parquet")], str(tmp_path / "out"), "cv", "dev")
    limited = build_config(limit=2)
    f = _stage(Path(spec.output), "r1", "scores/part-a.parquet", 2)
    m = _manifest("r1", [f]).model_copy(update={"request_key": request_key(limited, spec.files, "dev")})
    commit.commit(spec.output, "r1", m)
    assert is_done(spec, limited)
    assert not is_done(spec, build_config())  # the full run
    assert not is_done(spec, build_config(limit=2, overrides=["gates.max_wer=0.3"]))
    assert not is_done(spec, build_config(limit=2, threshold=4))
    assert is_done(spec, build_config(limit=2, overrides=["judge.batch_size=64", "reader.clips_per_task=8"]))
    old = _manifest("r0", [f])  # written before request keys existed: redone once
    (Path(spec.output) / "_staging" / "r0").mkdir(parents=True)
    commit.commit(spec.output, "r0", old.model_copy(update={"files": []}))
    assert not is_done(spec, limited)
