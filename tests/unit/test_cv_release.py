"""Common Voice releases: TSV parsing, both schemas, discovery, tarball streaming, input forms.

Fixtures are real releases built by ``scripts/make_cv_release.py`` (real MP3s, CV's exact columns).
"""

from __future__ import annotations

import functools
import gzip
import io
import json
import shutil
import tarfile

import pyarrow as pa
import pytest

from pipeline.columns import CV_COLUMNS
from pipeline.commonvoice.datasource import absent_clips, read_folder_chunk, read_tarball
from pipeline.commonvoice.reader import (
    MISSING_CLIP,
    canonical_clip_table,
    discover_releases,
    read_tsv,
)
from pipeline.commonvoice.releases import parse_tarball_name
from pipeline.commonvoice.view import load_release, tarball_members
from pipeline.config import AudioConfig, StorageConfig, build_config
from pipeline.io.inputs import ACCEPTED_FORMS, ParquetInputs, ReleaseInputs, open_inputs, view_table
from pipeline.io.schema import InputSchemaError
from pipeline.runtime.storage import locate
from pipeline.stages.decode import decode_clip
from pipeline.stages.gate_rules import metadata_gates
from pipeline.stages.gates import reasons_of
from pipeline.table.workspace import Workspace
from scripts.make_cv_release import QUOTED_SENTENCE, _reported, build_release, clip_rows, sample_clips, write_release
from tests.conftest import SAMPLE

ST = StorageConfig()


def view_of(path, split="validated"):
    """What a run reads of a release before any clip: its latest view (one release here)."""
    inputs = open_inputs([str(path)], ST, split=split)
    (locale,) = inputs.locales()
    return inputs, view_table(inputs, locale, inputs.units(locale))


def test_tsv_keeps_quotes_verbatim_and_every_column_a_string():
    body = b'client_id\tpath\tsentence\tup_votes\nc1\ta.mp3\tShe said "hi" and it\'s 12\t2\nc2\tb.mp3\t007\t0\n'
    t = read_tsv(io.BytesIO(body), "x.tsv")
    assert t.column("sentence").to_pylist() == ['She said "hi" and it\'s 12', "007"]
    assert all(pa.types.is_string(f.type) for f in t.schema)


def test_a_list_resaved_on_windows_reads_the_same():
    """A byte-order mark and CRLF line ends (a spreadsheet's or a Windows editor's save) change nothing."""
    body = b"client_id\tpath\tsentence\tsegment\nc1\ta.mp3\tHello there.\t\nc2\tb.mp3\tBye.\tx\n"
    windows = b"\xef\xbb\xbf" + body.replace(b"\n", b"\r\n")
    assert read_tsv(io.BytesIO(windows), "x.tsv").to_pylist() == read_tsv(io.BytesIO(body), "x.tsv").to_pylist()
    assert read_tsv(io.BytesIO(windows), "x.tsv").column_names == ["client_id", "path", "sentence", "segment"]


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
def test_the_view_carries_the_cv_columns_and_every_list(tmp_path, form):
    r = build_release(tmp_path, clips=6, folder=form == "folder", tsv_first=form == "tarball-tsv-first")
    (src,) = discover_releases(locate(str(tmp_path)))
    assert (src.release, src.locale, src.form) == ("cv-corpus-23.0-2025-09-05", "en", form.split("-")[0])
    t = load_release(src, "validated", ST).sort_by("id")
    assert t.column("id").to_pylist() == sorted(row["path"] for row in r.rows)  # the TSV's path, unchanged
    rows = {x["id"]: x for x in t.to_pylist()}
    first, second = (rows[r.rows[i]["path"]] for i in (0, 1))
    assert second["sentence"] == QUOTED_SENTENCE
    assert first["sentence_reported"] is True and sum(x["sentence_reported"] for x in rows.values()) == 1
    assert {x["release"] for x in rows.values()} == {"cv-corpus-23.0-2025-09-05"}
    assert {x["cv_status"] for x in rows.values()} == {"validated"}
    assert first["lists"] == ["validated", "train"] and first["split"] == "train"
    # clip_durations.tsv has every clip with audio; the missing and the corrupt one are measured later.
    assert first["duration_ms"] > 1000 and rows[r.missing]["duration_ms"] is None
    inputs, view = view_of(r.path, "train")
    assert sum(inputs.selected(x) for x in view.to_pylist()) == 3  # train.tsv holds half of them
    assert json.loads(view.to_pylist()[0]["releases_json"])[0]["release"] == "cv-corpus-23.0-2025-09-05"


def test_a_renamed_tarball_in_a_folder_is_found_by_what_it_holds(tmp_path, caplog):
    """A browser's second download ("… (1).tar.gz"), or an archive saved under a name of its own, used to be
    skipped without a word, so a backfill over ~/Downloads said "nothing to do".  A tarball that is not a
    release is skipped with a warning, after its first members, not read to its end."""
    r = build_release(tmp_path / "src", clips=2)
    root = tmp_path / "downloads"
    root.mkdir()
    shutil.copy(r.path, root / "cv-corpus-23.0-2025-09-05-en (1).tar.gz")
    shutil.copy(r.path, root / "mdc-dataset-1234.tgz")
    with tarfile.open(root / "photos.tar.gz", "w:gz") as tar:
        for i in range(200):
            info = tarfile.TarInfo(f"photos/{i}.txt")
            tar.addfile(info, io.BytesIO(b""))
    with caplog.at_level("WARNING", logger="pipeline"):
        found = discover_releases(locate(str(root)))
    assert sorted((s.uri.rsplit("/", 1)[-1], s.release, s.locale, s.form) for s in found) == [
        ("cv-corpus-23.0-2025-09-05-en (1).tar.gz", "cv-corpus-23.0-2025-09-05", "en", "tarball"),
        ("mdc-dataset-1234.tgz", "cv-corpus-23.0-2025-09-05", "en", "tarball"),
    ]
    assert "photos.tar.gz: no cv-corpus-<version>-<date>/<locale>/ folder inside" in caplog.text
    # The other Common Voice track is named for what it is, not as "no release".
    sps = tmp_path / "sps-corpus-3.0-2026-03-09-en.tar.gz"
    with tarfile.open(sps, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("sps-corpus-3.0-2026-03-09/en/ss-corpus-en.tsv"), io.BytesIO(b""))
    with pytest.raises(InputSchemaError, match=r"Spontaneous Speech release \(sps-corpus-3\.0-2026-03-09\)"):
        open_inputs([str(sps)], StorageConfig())


def test_old_schema_release_loads(tmp_path):
    build_release(tmp_path, clips=4, old_schema=True, version="16.1", date="2023-12-06")
    (src,) = discover_releases(locate(str(tmp_path)))
    t = load_release(src, "validated", ST).sort_by("id")
    assert set(t.column("accents").to_pylist()) <= {"us", "United States English", ""}
    assert t.column("sentence_id").null_count == t.num_rows


def test_header_only_tsvs_are_empty_lists(tmp_path):
    """Small locales' and deltas' other.tsv, invalidated.tsv and reported.tsv hold only a header."""
    r = build_release(tmp_path, clips=4, folder=True)
    for name in ("other", "invalidated", "reported", "test"):
        (r.path / f"{name}.tsv").write_text((r.path / f"{name}.tsv").read_text().splitlines()[0] + "\n")
    _, view = view_of(r.path)
    assert view.num_rows == 4 and not any(view.column("sentence_reported").to_pylist())


def test_a_delta_has_no_train_and_says_which_lists_it_has(tmp_path):
    build_release(tmp_path, clips=4, delta=True, version="24.0", date="2025-12-05", folder=True)
    (src,) = discover_releases(locate(str(tmp_path)))
    assert src.delta
    with pytest.raises(InputSchemaError, match=r"delta release has no train\.tsv; its clip lists are: .*validated"):
        load_release(src, "train", ST)


def test_a_malformed_or_non_utf8_tsv_is_refused_naming_file_and_line(tmp_path):
    r = build_release(tmp_path, clips=4, folder=True)
    (r.path / "validated.tsv").write_text("client_id\tpath\tsentence\nc\ta.mp3\thello\tstray\n")
    with pytest.raises(InputSchemaError, match=r"validated\.tsv: line 2"):
        view_of(r.path)
    (r.path / "validated.tsv").write_bytes(b"client_id\tpa\xfft\tsentence\n")
    with pytest.raises(InputSchemaError, match=r"validated\.tsv: line 1 is not UTF-8"):
        view_of(r.path)


@pytest.mark.parametrize("folder", [False, True])
def test_every_row_comes_out_once_and_a_missing_clip_says_so(tmp_path, folder):
    r = build_release(tmp_path, clips=7, folder=folder)
    inputs, view = view_of(r.path)
    assert isinstance(inputs, ReleaseInputs) and view.num_rows == 7
    (src,) = inputs.releases
    read = read_folder_chunk if folder else read_tarball
    out = pa.concat_tables(list(read(src.uri, view, ST, 2)))
    assert sorted(out.column("id").to_pylist()) == sorted(row["path"] for row in r.rows)
    by_id = {row["id"]: row for row in out.to_pylist()}
    assert by_id[r.missing]["read_error"] == MISSING_CLIP and by_id[r.missing]["audio_bytes"] is None
    assert by_id[r.corrupt]["audio_bytes"] and by_id[r.corrupt]["read_error"] is None
    good = [row for row in by_id.values() if row["id"] not in (r.missing, r.corrupt)]
    assert all(decode_clip(row["audio_bytes"], AudioConfig()).size > 16_000 for row in good)


def test_a_tarball_is_read_only_until_every_wanted_clip_is_found(tmp_path):
    """``--limit 2`` on an 80 GB release used to decompress all of it after the two clips were found.  Here
    the archive is cut short after its first clips: reading on would fail, so the read must stop."""
    r = build_release(tmp_path, clips=7, missing=False, corrupt=False)
    _, view = view_of(r.path)
    first_two = view.filter(pa.compute.is_in(view.column("id"), pa.array([row["path"] for row in r.rows[:2]])))
    data = r.path.read_bytes()
    r.path.write_bytes(data[: len(data) * 6 // 10])  # the clips come first, in the rows' order
    out = pa.concat_tables(list(read_tarball(str(r.path), first_two, ST, 2)))
    assert sorted(out.column("id").to_pylist()) == sorted(row["path"] for row in r.rows[:2])
    assert all(out.column("read_error").is_null().to_pylist())
    with pytest.raises(OSError, match=r"(?i)truncated|end of"):  # all seven: the cut is met
        list(read_tarball(str(r.path), view, ST, 2))


@pytest.mark.parametrize(
    "name, gzipped",
    [
        ("cv-corpus-23.0-2025-09-05-en.tar.gz", False),  # a browser unpacked the download, kept its name
        ("cv-corpus-23.0-2025-09-05-en.tar", True),  # gzip under a plain tar's name
        ("mdc-dataset-1234.tgz", True),
        ("cv-corpus-23.0-2025-09-05-en.tar", False),
    ],
)
def test_a_tarball_is_read_by_what_it_holds_not_by_its_name(tmp_path, name, gzipped):
    """Arrow inflated any file named ``.gz`` by itself, so a plain tar named ``.tar.gz`` (Safari unpacks a
    download and keeps the name) passed discovery and then failed the run with "zlib inflate failed"."""
    r = build_release(tmp_path / "built", clips=7)
    with gzip.open(r.path) as f:
        plain = f.read()
    stored = tmp_path / name
    stored.write_bytes(gzip.compress(plain) if gzipped else plain)
    inputs, view = view_of(stored)
    assert view.num_rows == 7 and inputs.releases[0].release == "cv-corpus-23.0-2025-09-05"
    out = pa.concat_tables(list(read_tarball(str(stored), view, ST, 3)))
    assert sorted(out.column("id").to_pylist()) == sorted(row["path"] for row in r.rows)
    found = [row for row in out.to_pylist() if row["id"] != r.missing]
    assert all(row["audio_bytes"] and row["read_error"] is None for row in found)


def test_a_file_that_is_no_tarball_under_a_tarballs_name_is_refused_clearly(tmp_path):
    bogus = tmp_path / "cv-corpus-23.0-2025-09-05-en.tar.gz"
    bogus.write_bytes(b"<html>Sign in to download</html>" * 40)  # what a login page saves as
    with pytest.raises(InputSchemaError, match=r"not a readable tar archive"):
        view_of(bogus)


def test_cumulative_releases_give_one_row_per_clip_with_the_newest_word_and_the_history(tmp_path):
    """Full N, then full N+1 listing N's clips again: one row each, N+1's status and split, both in the
    history.  A tarball and its extracted copy are one release, read once (from the folder)."""
    build_release(tmp_path, clips=4, version="22.0", date="2025-06-20")
    build_release(tmp_path / "x", clips=4, version="22.0", date="2025-06-20", folder=True)
    build_release(tmp_path, clips=6, version="23.0", date="2025-09-05")
    inputs = open_inputs([str(tmp_path)], ST)
    assert len(inputs.releases) == 2 and "again" in inputs.notes[0]
    assert inputs.releases[0].form == "tarball" or inputs.releases[1].form == "folder"
    view = {x["id"]: x for x in view_table(inputs, "en", inputs.units("en")).to_pylist()}
    assert len(view) == 6
    old = view["common_voice_en_41000000.mp3"]
    assert old["first_release"] == "cv-corpus-22.0-2025-06-20" and old["last_release"] == "cv-corpus-23.0-2025-09-05"
    assert [e["release"] for e in json.loads(old["releases_json"])] == [old["first_release"], old["last_release"]]
    assert old["_source"].endswith("cv-corpus-23.0-2025-09-05-en.tar.gz")  # audio from the newest release


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
        view_of(broken)


def test_a_part_of_an_extracted_release_is_refused_naming_the_folder_to_give(tmp_path):
    """``--input …/en/clips`` (or a TSV, or one clip) used to get the list of accepted forms alone."""
    folder = build_release(tmp_path, clips=2, folder=True).path
    clip = next((folder / "clips").iterdir())
    # A glob over its clips or TSVs was read as Parquet ("not a readable Parquet file").
    for part in (folder / "clips", folder / "validated.tsv", clip, folder / "clips" / "*.mp3", folder / "*.tsv"):
        with pytest.raises(InputSchemaError) as err:
            open_inputs([str(part)], ST)
        assert f"inside the release folder {folder}: give that folder" in str(err.value), part
        assert ACCEPTED_FORMS in str(err.value)
    assert open_inputs([str(folder)], ST).releases[0].form == "folder"
    (tmp_path / "notes" / "clips").mkdir(parents=True)  # a folder named clips with no TSV beside it: no hint
    with pytest.raises(InputSchemaError) as err:
        open_inputs([str(tmp_path / "notes" / "clips")], ST)
    assert "inside the release" not in str(err.value) and ACCEPTED_FORMS in str(err.value)


def test_a_clip_path_is_a_plain_file_name_inside_clips():
    from pipeline.io.clip_files import clip_name_problem

    assert clip_name_problem("common_voice_en_41000000.mp3") is None
    assert clip_name_problem("clip with spaces and ünïcode.mp3") is None
    for bad in ("", ".", "..", "../../../x.mp3", "/etc/passwd", "a/b.mp3", "a\\b.mp3", "a\x00b.mp3", "a\nb", "x" * 256):
        assert clip_name_problem(bad), repr(bad)


def test_a_read_is_bounded_whatever_the_size_said():
    from pipeline.io.clip_files import read_bounded
    from tests.hostile.make_hostile import Zeros

    data, why = read_bounded(io.BufferedReader(Zeros(10)), 16)
    assert data == bytes(10) and why is None
    endless = Zeros(1 << 40)  # a terabyte that claims nothing: only limit + 1 bytes are ever read
    data, why = read_bounded(io.BufferedReader(endless), 1 << 20)
    assert data is None and why.startswith("too_large")
    assert (1 << 40) - endless.left <= (1 << 20) + io.DEFAULT_BUFFER_SIZE + 1


def test_every_tsv_is_read_whatever_the_tarball_order_and_the_reported_clip_is_not_kept(tmp_path):
    """A repacked tarball: validated.tsv, clips/, reported.tsv, invalidated.tsv, then the rest (#31)."""
    audio = sample_clips(4)
    rows = clip_rows(audio, "en", 41_000_000)
    files = {row["path"]: (mp3, sec) for row, (mp3, _, sec) in zip(rows, audio, strict=True)}
    release = "cv-corpus-23.0-2025-09-05"
    lists = {"validated": rows[:3], "train": rows[:3], "invalidated": [rows[3]], "other": [], "dev": [], "test": []}
    order = ("validated", "clips", "reported", "invalidated")
    tar = write_release(tmp_path, release, "en", lists, files, [_reported(rows[0], "en")], order=order)
    with tarfile.open(tar) as t:
        names = [m.name.split("/", 2)[2] for m in t.getmembers()]
    assert names[0] == "validated.tsv" and names[1].startswith("clips/") and "clip_durations.tsv" in names[-3:]

    _, view = view_of(tar)
    got = {r["id"]: r for r in view.to_pylist()}
    assert got[rows[3]["path"]]["cv_status"] == "invalidated"  # invalidated.tsv, after clips/, was read
    assert all(got[r["path"]]["duration_ms"] > 1000 for r in rows)  # and clip_durations.tsv, last of all
    assert [got[r["path"]]["sentence_reported"] for r in rows] == [True, False, False, False]

    verdicts = reasons_of(view, metadata_gates(build_config())).to_pylist()
    reasons = dict(zip(view.column("id").to_pylist(), verdicts, strict=True))
    assert reasons[rows[0]["path"]] == ["sentence_reported"]  # reported after clips/: still never kept
    assert reasons[rows[3]["path"]] == ["cv_invalidated"]
    assert reasons[rows[1]["path"]] == reasons[rows[2]["path"]] == []


def test_links_out_of_a_release_and_oversized_tsvs_are_refused_before_any_read(tmp_path):
    """A release is outside input: its clips/ and TSVs must be what it holds, and a TSV is bounded (#31)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("path\tsentence\nsecret.mp3\tnot yours\n")

    linked = build_release(tmp_path / "a", clips=4, folder=True).path
    shutil.rmtree(linked / "clips")
    (linked / "clips").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputSchemaError, match=r"clips leads outside the release"):
        view_of(linked)

    tsv = build_release(tmp_path / "b", clips=4, folder=True).path
    (tsv / "reported.tsv").unlink()
    (tsv / "reported.tsv").symlink_to(outside / "secret.txt")
    with pytest.raises(InputSchemaError, match=r"reported\.tsv: not a regular file inside the release"):
        view_of(tsv)

    for form in ("folder", "tarball"):
        big = build_release(tmp_path / f"c-{form}", clips=4, folder=form == "folder").path
        inputs = open_inputs([str(big)], ST, max_tsv_bytes=200)
        (locale,) = inputs.locales()
        with pytest.raises(InputSchemaError, match=r"over reader\.max_tsv_bytes=200"):
            view_table(inputs, locale, inputs.units(locale))


def test_a_folders_absent_clips_are_known_from_one_listing_of_clips(tmp_path):
    """Rows whose clip an extracted release's clips/ lacks are found before the engines, from one listing, so
    they skip the DAG (a 200,000-row list with 20 clips took 8 min through it, 26 s so).  Names that are
    not plain file names, present entries that are links or folders, and a tarball's clips are left to the
    read, which gives each its own reason."""
    folder = build_release(tmp_path / "f", clips=4, folder=True)
    tarball = build_release(tmp_path / "t", clips=4, version="24.0", date="2025-12-05")
    (folder.path / "clips" / "a-folder.mp3").mkdir()
    (folder.path / "clips" / "a-link.mp3").symlink_to("/etc/hostname")
    inputs = open_inputs([str(folder.path), str(tarball.path)], ST)
    assert isinstance(inputs, ReleaseInputs)
    f_uri, t_uri = (next(s.uri for s in inputs.releases if s.form == form) for form in ("folder", "tarball"))
    ids = [r["path"] for r in folder.rows] + ["a-folder.mp3", "a-link.mp3", "../secret.mp3", "a/b.mp3", "..", ""]
    rows = pa.table({"id": ids + [r["path"] for r in tarball.rows], "_source": [f_uri] * len(ids) + [t_uri] * 4})
    absent = absent_clips(rows, inputs.releases, ST, list_from=0)
    assert rows.filter(absent).column("id").to_pylist() == [folder.missing]
    # A tarball's clips/ members are noted as its TSVs are read (one pass to its end, TSVs first or last).
    with Workspace() as ws:
        inputs.load_view(ws, "en", inputs.units("en"))
        members = functools.partial(tarball_members, ws)
        assert sorted(members(t_uri).to_pylist()) == sorted(
            r["path"] for r in tarball.rows if r["path"] != tarball.missing
        )
        assert members(f_uri).to_pylist() == []  # a folder's are listed when needed, not noted
        absent = absent_clips(rows, inputs.releases, ST, list_from=0, members=members)
    assert rows.filter(absent).column("id").to_pylist() == [folder.missing, tarball.missing]
    # A folder with fewer rows to read than list_from is not listed: the read finds its absent clips.
    assert not any(absent_clips(rows, inputs.releases, ST, list_from=len(ids) + 1).to_pylist())
    # A folder without clips/ lists nothing: every plain name is absent.
    shutil.rmtree(folder.path / "clips")
    absent = absent_clips(rows, inputs.releases, ST, list_from=0)
    assert rows.filter(absent).column("id").to_pylist() == [r["path"] for r in folder.rows] + [
        "a-folder.mp3",
        "a-link.mp3",
    ]
