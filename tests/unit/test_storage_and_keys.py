"""Storage listing, the tally of written rows, shard planning, and the keys that decide what is done."""

import os

import pyarrow as pa
import pytest

from pipeline.config import build_config
from pipeline.dag import Models
from pipeline.io.inputs import Unit, open_inputs
from pipeline.io.table_sink import audio_rows, tally_of
from pipeline.models import ResolvedModel
from pipeline.runtime.storage import list_parquet_files, locate
from pipeline.shards import _digest, agreement_key, agreement_parts, engine_key, settings_key, shard_of
from tests.conftest import write_parquet

MODELS = Models(ResolvedModel("w", "/w", "rev1"), ResolvedModel("j", "/j", "rev1"))


def test_quarantine_reasons_are_counted_by_kind_their_numbers_as_n():
    """A clip's own seconds and bytes differ per row, a setting's value does not: one kind per cause."""
    from pipeline.io.table_sink import quarantine_kinds

    errors = ["audio is 700.5 s, over max_duration_s=600.0", "audio is 612.0 s, over max_duration_s=600.0",
              "audio is 2049 bytes, over max_clip_bytes=1024", "audio is empty (0 bytes)", "empty transcript",
              None]  # fmt: skip
    stages = ["decode", "decode", "decode", "decode", "transcribe", None]
    decode = {
        "audio is N s, over max_duration_s=600.0": 2,
        "audio is N bytes, over max_clip_bytes=1024": 1,
        "audio is empty (0 bytes)": 1,
    }
    assert quarantine_kinds(pa.table({"error": errors, "stage": stages})) == {
        "decode": decode,
        "transcribe": {"empty transcript": 1},
        "unknown": {"": 1},
    }


def test_the_tally_counts_every_row_once_by_outcome():
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
            "audio_sha256": ["s1", "s1", None],
            "audio_size": [3, 3, None],
            "audio_bytes": [b"abc", b"abc", None],
        }
    )
    tally = tally_of(table)
    assert tally.reasons == {"judge_below": 1} and tally.quarantined_by_stage == {"decode": 1}
    assert tally.quarantined_why == {"decode": {"bad": 1}}
    assert tally.counts.model_dump(by_alias=True) == {"in": 3, "kept": 1, "rejected": 1, "quarantined": 1}
    assert tally.wer_bins["0.0-0.1"] == 1 and tally.wer_bins["0.1-0.2"] == 1
    # Two clips with the same bytes share one audio row; a quarantined row has none.
    assert audio_rows(table).column("audio_sha256").to_pylist() == ["s1"]


def test_listing_is_sorted_and_skips_private_dirs(tmp_path):
    for name in ["b.parquet", "a.parquet", "_staging/x.parquet", "sub/c.parquet"]:
        write_parquet([{"id": "1"}], tmp_path / name)
    found = [f.uri for f in list_parquet_files(locate(str(tmp_path)))]
    assert [p.split(str(tmp_path))[1] for p in found] == ["/a.parquet", "/b.parquet", "/sub/c.parquet"]
    assert [f.uri for f in list_parquet_files(locate(str(tmp_path / "*.parquet")))] == found[:2]
    with pytest.raises(FileNotFoundError):
        list_parquet_files(locate(str(tmp_path / "nope")))


def test_a_table_root_inside_a_parquet_folder_is_not_read_as_input(tmp_path):
    """``--input mirror --output mirror/curated`` curated the mirror, and the next night read the table's own
    data files as input ("no audio column") and failed.  An Iceberg table's data files (``T/data/`` beside
    ``T/metadata/*.metadata.json``) are left out of a folder's or a glob's listing, and the run says so."""
    from pipeline.config import StorageConfig

    write_parquet([{"id": "a", "audio_bytes": b"x"}], tmp_path / "mirror.parquet")
    table = tmp_path / "curated" / "warehouse" / "curate" / "en_clips"
    (table / "metadata").mkdir(parents=True)
    (table / "metadata" / "00001-abc.metadata.json").write_text("{}")
    write_parquet([{"id": "1"}], table / "data" / "00000-0-abc.parquet")
    write_parquet([{"id": "2"}], tmp_path / "curated" / "data" / "loose.parquet")  # no metadata beside: an input
    for src in (str(tmp_path), str(tmp_path / "**" / "*.parquet")):
        notes: list[str] = []
        found = [f.uri.split(str(tmp_path))[1] for f in list_parquet_files(locate(src), notes)]
        assert found == ["/curated/data/loose.parquet", "/mirror.parquet"], src
        assert notes == [f"{src}: left out 1 data file(s) of Iceberg tables there ({table})"]
    (tmp_path / "curated" / "data" / "loose.parquet").unlink()
    inputs = open_inputs([str(tmp_path)], StorageConfig())
    assert [f.uri for f in inputs.files] == [str(tmp_path / "mirror.parquet")]
    assert inputs.notes and str(table) in inputs.notes[0]


def test_double_star_glob_spans_directories(tmp_path):
    for name in ["cv/en/dev/a.parquet", "cv/en/test/b.parquet", "cv/en/test/notes.txt"]:
        write_parquet([{"id": "1"}], tmp_path / name)
    found = [f.uri for f in list_parquet_files(locate(str(tmp_path / "cv/**/*.parquet")))]
    assert [p.rsplit("/", 1)[1] for p in found] == ["a.parquet", "b.parquet"]


def test_shards_cut_by_id_hash_cover_every_clip_once():
    from pipeline.shards import plan_shards

    specs = plan_shards(["b", "a"], "out", "dev", 3)
    assert [s.shard_id for s in specs] == ["shard-1-of-3", "shard-2-of-3", "shard-3-of-3"]
    assert all(s.sources == ("a", "b") for s in specs)
    ids = [f"common_voice_en_{i}.mp3" for i in range(300)]
    owners = [shard_of(i, 3) for i in ids]
    assert sorted(set(owners)) == [0, 1, 2] and all(owners.count(k) > 50 for k in range(3))
    assert owners == [shard_of(i, 3) for i in ids]  # stable across processes and runs
    # The plan's SQL cuts the same way (it shards a release of millions of rows without Python).
    from pipeline.table.plan import shard_sql
    from pipeline.table.workspace import Workspace

    with Workspace(memory_limit_mb=64, threads=1) as ws:
        ws.put("ids", pa.table({"id": ids}))
        for k in range(3):
            got = {i for (i,) in ws.rows(f"SELECT id FROM ids WHERE {shard_sql('id', (k, 3))}")}
            assert got == {i for i, o in zip(ids, owners, strict=True) if o == k}


def test_the_agreement_rules_of_2026_12_measure_again_only_the_tables_they_changed():
    """A stored WER/CER is measured again when its key differs.  Rules 2 changed unsupported locales (no
    Whisper language) and the scripts without word spaces, rules 3 the scripts with vowel signs; an English
    table of millions keeps its key.  Rules 4 (invisible format characters dropped) those and the scripts
    written with zero-width joiners and bidi marks; rules 5 (Chinese folded to Simplified, Serbian to Latin
    letters, Persian's and Urdu's yeh and kaf to theirs, Korean in characters, Turkish ı as i, Catalan l·l as
    ll) those and the unsupported locales (Taiwanese Hokkien is written like Chinese).  Rules 6 (numbers
    spelled out in the language) every language num2words spells and the unsupported locales; rules 7
    Japanese (katakana read as hiragana); rules 8 Arabic, Persian and Urdu (ة/ه, ى/ي, the tatweel dropped)."""
    from importlib.metadata import version

    def cfg(language):
        return build_config(overrides=[f"transcriber.language={language}"])

    before = {"normaliser": version("transformers"), "fold_diacritics": True, "language": "en"}
    assert agreement_parts(cfg("en")) == before and agreement_key(cfg("en")) == _digest(before)
    # Greek: no rule changed how it is measured (folded accents, no number speller), so its key stays.
    assert "rules" not in agreement_parts(cfg("el"))
    # Rules 3 (marks stay with their letters) changed the Indic scripts, the unspaced ones (Thai's vowel
    # signs), unsupported locales, and any language but English whose accents are not folded.
    for language in ("hi", "ta"):
        assert agreement_parts(cfg(language))["rules"] == 4, language
    for language in ("ar", "fa", "ur"):
        assert agreement_parts(cfg(language))["rules"] == 8, language
    for language in ("null", "de", "es", "th", "zh", "yue", "sr", "ko", "tr", "az", "ca"):
        assert agreement_parts(cfg(language))["rules"] == 6, language
    assert agreement_parts(cfg("ja"))["rules"] == 7  # its katakana read as hiragana
    unfolded = build_config(overrides=["transcriber.language=el", "gates.fold_diacritics=false"])
    assert agreement_parts(unfolded)["rules"] == 4
    english = build_config(overrides=["transcriber.language=en", "gates.fold_diacritics=false"])
    assert "rules" not in agreement_parts(english)


def test_parquet_splits_are_discovered(tmp_path, monkeypatch):
    from pipeline.shards import discover_splits

    for name in ["en/dev/b.parquet", "en/dev/a.parquet", "en/test/c.parquet", "en/readme.parquet"]:
        write_parquet([{"id": "1"}], tmp_path / name)
    monkeypatch.chdir(tmp_path)
    splits = discover_splits("en")  # a relative root works like an absolute one
    assert sorted(splits) == ["dev", "test"] and splits["dev"].endswith("/en/dev")


def test_what_a_unit_of_work_is_keyed_by(tmp_path):
    """Content and the settings that change results, never position: a rewritten input, other gates,
    a limit or new model revisions make a new unit; batch sizes and where it runs do not."""
    base = settings_key(build_config(), MODELS, "validated")
    assert (
        settings_key(build_config(overrides=["judge.batch_size=64", "reader.clips_per_task=8"]), MODELS, "validated")
        == base
    )
    for cfg in (build_config(limit=2), build_config(threshold=4), build_config(overrides=["gates.max_wer=0.3"])):
        assert settings_key(cfg, MODELS, "validated") != base
    assert settings_key(build_config(), MODELS, "train") != base
    newer = Models(MODELS.transcriber, ResolvedModel("j", "/j", "rev2"))
    assert settings_key(build_config(), newer, "validated") != base
    assert engine_key(build_config(), newer) != engine_key(build_config(), MODELS)
    # Gates change the unit but not the engines' key: new gates decide again from stored scores.
    assert engine_key(build_config(threshold=4), MODELS) == engine_key(build_config(), MODELS)

    path = tmp_path / "a.parquet"
    write_parquet([{"id": "x", "audio_bytes": b"1"}], path)
    inputs = open_inputs([str(path)], build_config().storage)
    (unit,) = inputs.units("en")
    assert isinstance(unit, Unit) and unit.key(base) == inputs.units("en")[0].key(base)
    os.utime(path, (1, 1))  # the same path, rewritten
    assert inputs.units("en")[0].key(base) != unit.key(base)


def test_one_s3_filesystem_per_settings_and_credentials(monkeypatch):
    from pipeline.config import StorageConfig
    from pipeline.runtime.storage import resolve_filesystem

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "first")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "x")
    storage = StorageConfig(s3_endpoint_url="http://127.0.0.1:9", s3_region="us-east-1")
    a, path = resolve_filesystem("s3://bucket/release/x.tar", storage)
    b, _ = resolve_filesystem("s3://bucket/other", storage)
    assert a is b and path == "bucket/release/x.tar"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "rotated")  # a Secret block applied again with new keys
    c, _ = resolve_filesystem("s3://bucket/other", storage)
    assert c is not a


@pytest.mark.parametrize("uri", ["gs://bucket/cv.tar.gz", "https://example.com/cv.tar.gz", "hdfs://nn/x", "abfs://c/x"])
def test_a_scheme_other_than_s3_is_refused_naming_what_is_read(uri, tmp_path):
    """Arrow took gs:// and hdfs:// too, but every path is rebuilt as S3's, and gs:// with no route to Google
    sat for minutes printing nothing; https:// said "Unrecognized filesystem type"."""
    from pipeline.runtime.storage import resolve_filesystem

    with pytest.raises(ValueError, match=r"only local paths and s3:// are read or written \(Google Cloud Storage"):
        resolve_filesystem(uri)
    assert resolve_filesystem(f"file://{tmp_path}")[1] == str(tmp_path)


def test_a_shard_s_run_id_is_the_same_for_each_retry_and_distinct_per_split():
    """A Ray Job's submission id comes from the run id: a retry must find its own job, never another
    split's job of the same flow run (#31)."""
    from pipeline.shards import plan_shards

    dev = plan_shards(["/in/a.parquet"], "/out", "dev", count=2)
    train = plan_shards(["/in/a.parquet"], "/out", "train", count=2)
    flow = "8f1c2e9a-1111-2222-3333-444455556666"
    assert dev[0].run_id(flow) == plan_shards(["/in/a.parquet"], "/out", "dev", count=2)[0].run_id(flow)
    ids = {s.run_id(flow) for s in dev + train}
    assert len(ids) == 4 and all(i.startswith("8f1c2e9a-") for i in ids)


@pytest.mark.process
def test_a_killed_runs_plan_folder_is_removed_by_the_next_run(tmp_path):
    """A run killed by SIGKILL (the OOM killer) cannot clean up its workspace; at a release's size that is
    gigabytes a night.  The next workspace on the host removes it, and leaves live runs' and other hosts'."""
    import signal
    import subprocess
    import sys

    from pipeline.runtime.owner import OWNER
    from pipeline.table.workspace import PREFIX, Workspace, _host

    code = (
        "import os, sys, time\n"
        "from pipeline.table.workspace import Workspace\n"
        f"ws = Workspace(memory_limit_mb=64, threads=1, temp_root={str(tmp_path)!r})\n"
        "open(os.path.join(ws.folder, 'spilled.parquet'), 'wb').write(b'x' * 1000)\n"
        "print(ws.folder, flush=True)\n"
        "time.sleep(600)\n"
    )
    killed = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        killed_folder = killed.stdout.readline().strip()
        live_folder = live.stdout.readline().strip()
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert os.path.isdir(killed_folder)  # SIGKILL left it behind
        other_host = tmp_path / f"{PREFIX}another-host-{killed.pid}-abc"
        other_host.mkdir()
        # A container gives each night's run the same process id: a killed run's folder named for this
        # process, its lock free, is stale all the same (it was kept as "this run's own").
        same_pid = tmp_path / f"{PREFIX}{_host()}-{os.getpid()}-oldnight"
        same_pid.mkdir()
        (same_pid / OWNER).touch()
        with Workspace(memory_limit_mb=64, threads=1, temp_root=str(tmp_path)) as ws:
            assert os.path.basename(ws.folder).startswith(f"{PREFIX}{_host()}-{os.getpid()}-")
            assert not os.path.exists(killed_folder) and not same_pid.exists()
            assert os.path.isdir(live_folder) and other_host.is_dir()
        assert not os.path.exists(ws.folder)  # its own, on a clean exit
    finally:
        for p in (killed, live):
            p.kill()
            p.wait(timeout=30)


def test_a_path_over_or_inside_the_table_s_own_files_is_found(tmp_path):
    """``curate export --to OUTPUT --overwrite`` swapped the table root away and deleted it, catalog and
    warehouse; an export inside the root made the next night's run refuse the root."""
    from pipeline.table.catalog import table_root

    out = tmp_path / "data" / "out"
    root = table_root(str(out), build_config())
    for path in (out, out.parent, tmp_path, out / "hf", out / "warehouse" / "x"):
        assert root.overlap(str(path)) == str(out), path
    for path in (tmp_path / "data" / "out-hf", tmp_path / "data" / "o", tmp_path / "elsewhere"):
        assert root.overlap(str(path)) is None, path
    os.makedirs(out)
    os.symlink(out, tmp_path / "link")
    assert root.overlap(str(tmp_path / "link")) == str(out)
    # A warehouse and a SQLite catalog kept apart from the root are the table's too; an S3 warehouse is not local.
    apart = table_root(
        str(out),
        build_config(
            overrides=[f"table.warehouse={tmp_path / 'wh'}", f"table.catalog_uri=sqlite:///{tmp_path}/c/cat.db"]
        ),
    )
    assert apart.overlap(str(tmp_path / "wh" / "ns")) == str(tmp_path / "wh")
    assert apart.overlap(str(tmp_path / "c")) == str(tmp_path / "c" / "cat.db")
    assert apart.overlap(str(tmp_path / "c2")) is None
    on_s3 = table_root("s3://bucket/out", build_config(overrides=["table.catalog_uri=http://catalog:8181"]))
    assert on_s3.overlap("/") is None
