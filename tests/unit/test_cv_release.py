"""Common Voice releases: TSV parsing, both schemas, discovery, tarball streaming, input forms.

Fixtures are real releases built by ``scripts/make_cv_release.py`` (real MP3s, CV's exact columns).
"""

from __future__ import annotations

import io

import pyarrow as pa
import pytest

from pipeline.config import AudioConfig, StorageConfig
from pipeline.io.cv_datasource import read_folder_chunk, read_tarball
from pipeline.io.cv_release import (
    CV_COLUMNS,
    MISSING_CLIP,
    canonical_clip_table,
    discover_releases,
    load_split,
    parse_tarball_name,
    read_tsv,
)
from pipeline.io.inputs import ACCEPTED_FORMS, ParquetInputs, ReleaseInputs, open_inputs
from pipeline.io.schema import InputSchemaError
from pipeline.shards import plan_release_shards
from pipeline.stages.decode import decode_clip
from scripts.make_cv_release import QUOTED_SENTENCE, build_release
from tests.conftest import SAMPLE

ST = StorageConfig()


def test_tsv_keeps_quotes_verbatim_and_every_column_a_string():
    body = b'client_id\tpath\tsentence\tup_votes\nc1\ta.mp3\tShe said "hi" and it\'s 12\t2\nc2\tb.mp3\t007\t0\n'
    t = read_tsv(io.BytesIO(body), "x.tsv")
    assert t.column("sentence").to_pylist() == ['She said "hi" and it\'s 12', "007"]
    assert all(pa.types.is_string(f.type) for f in t.schema)


def test_stray_tab_names_the_file_and_line():
    body = b"client_id\tpath\tsentence\nc1\ta.mp3\tfine\nc2\tb.mp3\tone\textra\n"
    with pytest.raises(InputSchemaError, match=r"x\.tsv: line 3: expected 3 fields, got 4"):
        read_tsv(io.BytesIO(body), "x.tsv")


@pytest.mark.parametrize("body", [b"", b"a\ta\tb\nx\ty\tz\n"])
def test_empty_or_repeated_header_is_refused(body):
    with pytest.raises(InputSchemaError):
        read_tsv(io.BytesIO(body), "x.tsv")


def test_pre_v17_and_current_clip_lists_load_into_one_shape():
    old = pa.table({c: ["x"] for c in ["client_id", "path", "sentence", "up_votes", "down_votes", "accent", "locale"]})
    old = old.set_column(3, "up_votes", pa.array(["3"])).set_column(4, "down_votes", pa.array([""]))
    t = canonical_clip_table(old, "old.tsv")
    assert t.column_names == list(CV_COLUMNS)
    row = t.to_pylist()[0]
    assert row["accents"] == "x" and row["sentence_id"] is None and row["sentence_domain"] is None
    assert row["up_votes"] == 3 and row["down_votes"] is None


def test_a_clip_list_without_path_or_sentence_is_refused():
    with pytest.raises(InputSchemaError, match=r"missing column\(s\) \['path'\]"):
        canonical_clip_table(pa.table({"client_id": ["c"], "sentence": ["s"]}), "bad.tsv")


def test_tarball_names():
    assert parse_tarball_name("s3://b/x/cv-corpus-23.0-2025-09-05-zh-CN.tar.gz") == (
        "cv-corpus-23.0-2025-09-05",
        "zh-CN",
    )
    assert parse_tarball_name("cv-corpus-24.0-delta-2025-12-05-en.tar.gz") == ("cv-corpus-24.0-delta-2025-12-05", "en")
    assert parse_tarball_name("clips.tar.gz") is None


@pytest.mark.parametrize("form", ["tarball-tsv-last", "tarball-tsv-first", "folder"])
def test_split_rows_carry_the_cv_columns(tmp_path, form):
    r = build_release(tmp_path, clips=6, folder=form == "folder", tsv_first=form == "tarball-tsv-first")
    (src,) = discover_releases(str(tmp_path))
    assert (src.release, src.locale, src.form) == ("cv-corpus-23.0-2025-09-05", "en", form.split("-")[0])
    t = load_split(src, "validated", ST)
    assert t.column("id").to_pylist() == [row["path"] for row in r.rows]  # the TSV's path, unchanged
    rows = t.to_pylist()
    assert rows[1]["sentence"] == QUOTED_SENTENCE
    assert rows[0]["sentence_reported"] is True and not any(x["sentence_reported"] for x in rows[1:])
    assert {x["release"] for x in rows} == {"cv-corpus-23.0-2025-09-05"} and {x["split"] for x in rows} == {"validated"}
    # clip_durations.tsv has every clip with audio; the missing and the corrupt one are measured later.
    assert all(x["duration_ms"] > 1000 for x in rows[:4]) and rows[-1]["duration_ms"] is None
    assert load_split(src, "train", ST, limit=2).num_rows == 2


def test_old_schema_release_loads(tmp_path):
    build_release(tmp_path, clips=4, old_schema=True, version="16.1", date="2023-12-06")
    (src,) = discover_releases(str(tmp_path))
    t = load_split(src, "validated", ST)
    assert t.column("accents").to_pylist()[1] == "United States English" or t.column("accents").to_pylist()[1] == "us"
    assert t.column("sentence_id").null_count == t.num_rows


def test_a_delta_has_no_train_and_says_which_lists_it_has(tmp_path):
    build_release(tmp_path, clips=4, delta=True, version="24.0", date="2025-12-05", folder=True)
    (src,) = discover_releases(str(tmp_path))
    assert src.delta
    with pytest.raises(InputSchemaError, match=r"delta release has no train\.tsv; its clip lists are: .*validated"):
        load_split(src, "train", ST)


def test_a_malformed_tsv_inside_a_tarball_is_refused_before_any_clip(tmp_path):
    r = build_release(tmp_path, clips=4, folder=True)
    (r.path / "validated.tsv").write_text("client_id\tpath\tsentence\nc\ta.mp3\thello\tstray\n")
    with pytest.raises(InputSchemaError, match=r"validated\.tsv: line 2"):
        open_inputs([str(r.path)], ST)


@pytest.mark.parametrize("folder", [False, True])
def test_every_row_comes_out_once_and_a_missing_clip_says_so(tmp_path, folder):
    r = build_release(tmp_path, clips=7, folder=folder)
    inputs = open_inputs([str(r.path)], ST)
    assert isinstance(inputs, ReleaseInputs) and inputs.total_rows == 7
    (src,), (table,) = inputs.releases, inputs.tables
    read = read_folder_chunk if folder else read_tarball
    out = pa.concat_tables(list(read(src.uri, table, ST, 2)))
    assert sorted(out.column("id").to_pylist()) == sorted(row["path"] for row in r.rows)
    by_id = {row["id"]: row for row in out.to_pylist()}
    assert by_id[r.missing]["read_error"] == MISSING_CLIP and by_id[r.missing]["audio_bytes"] is None
    assert by_id[r.corrupt]["audio_bytes"] and by_id[r.corrupt]["read_error"] is None
    good = [row for row in by_id.values() if row["id"] not in (r.missing, r.corrupt)]
    assert all(decode_clip(row["audio_bytes"], AudioConfig()).size > 16_000 for row in good)


def test_a_root_holding_full_and_delta_releases_plans_one_shard_each(tmp_path):
    build_release(tmp_path, clips=4)  # full, tarball
    build_release(tmp_path / "x", clips=4, folder=True)  # the same release extracted: curated once
    build_release(tmp_path, clips=4, delta=True, version="24.0", date="2025-12-05", folder=True, start_id=42_000_000)
    found = discover_releases(str(tmp_path))
    assert len(found) == 3
    specs, skipped = plan_release_shards(found, "OUT", "validated")
    assert [s.output.rsplit("/", 1)[0] for s in specs] == [
        "OUT/cv-corpus-23.0-2025-09-05/en/validated",
        "OUT/cv-corpus-24.0-delta-2025-12-05/en/validated",
    ]
    assert specs[0].files[0].endswith("x/cv-corpus-23.0-2025-09-05/en")  # the folder wins over the tarball
    specs, skipped = plan_release_shards(found, "OUT", "train")
    assert len(specs) == 1 and skipped == ["cv-corpus-24.0-delta-2025-12-05/en has no train.tsv"]


def test_input_forms(tmp_path):
    assert isinstance(open_inputs([str(SAMPLE)], ST), ParquetInputs)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputSchemaError) as err:
        open_inputs([str(tmp_path / "notes.txt")], ST)
    assert ACCEPTED_FORMS in str(err.value)
    (tmp_path / "fake.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputSchemaError, match="not a readable Parquet file"):
        open_inputs([str(tmp_path / "fake.parquet")], ST)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputSchemaError, match="holds no input"):
        open_inputs([str(tmp_path / "empty")], ST)
    r = build_release(tmp_path / "rel", clips=4)
    with pytest.raises(InputSchemaError, match="mixing"):
        open_inputs([str(r.path), str(SAMPLE)], ST)
    broken = tmp_path / "cv-corpus-23.0-2025-09-05-fr.tar.gz"
    broken.write_bytes(r.path.read_bytes()[:5000])
    with pytest.raises(InputSchemaError, match=r"broken tar archive|not a readable tar"):
        open_inputs([str(broken)], ST)
