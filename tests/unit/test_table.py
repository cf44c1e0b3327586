"""The table layer against a real pyiceberg SQL catalog on SQLite: commits, conflicts, ledger, upkeep."""

from __future__ import annotations

import json
import os
import socket
import time

import pyarrow as pa
import pytest
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipeline.config import build_config
from pipeline.runtime.storage import resolve_filesystem
from pipeline.table import audio as audio_table
from pipeline.table import commit as commits
from pipeline.table import ledger as ledgers
from pipeline.table import upkeep as table_upkeep
from pipeline.table import writers
from pipeline.table.catalog import TableError, check_output_root, load_or_create, redact_uri, table_root
from pipeline.table.schema import AUDIO_TABLE

SCHEMA = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("v", pa.int64())])


@pytest.fixture
def catalog(tmp_path):
    root = table_root(str(tmp_path / "out"), build_config())
    return root.catalog()


def _rows(table, **values) -> pa.Table:
    return pa.table({"id": list(values), "v": list(values.values())}).cast(schema_to_pyarrow(table.schema()))


def _read(catalog, ident="curate.t") -> dict:
    got = catalog.load_table(ident).scan().to_arrow().to_pylist()
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)), ids
    return {r["id"]: r["v"] for r in got}


def _upsert(catalog, rows: pa.Table, load=None, **kw):
    table = catalog.load_table("curate.t")
    files = commits.write_rows(table, rows)
    return commits.upsert(load or (lambda: catalog.load_table("curate.t")), files, rows.column("id"), {"p": "1"}, **kw)


def test_two_writers_creating_the_namespace_at_once_both_get_the_table(tmp_path, monkeypatch):
    """Two first runs on one new root: the second's "does the namespace exist?" says no just before the
    first inserts it, so its own insert meets the database's UNIQUE constraint (pyiceberg's SQL catalog
    raises IntegrityError then, not NamespaceAlreadyExists).  Found by two `curate run`s in CI."""
    root = table_root(str(tmp_path / "out"), build_config())
    first, second = root.catalog(), root.catalog()
    real, asked = type(second).namespace_exists, []

    def stale_first_answer(ns):
        asked.append(ns)
        return False if len(asked) == 1 else real(second, ns)

    monkeypatch.setattr(second, "namespace_exists", stale_first_answer)
    load_or_create(first, "curate.t", SCHEMA)  # the other writer gets there between the check and the insert
    table = load_or_create(second, "curate.t", SCHEMA)
    assert table.name() == ("curate", "t")


def test_upsert_replaces_the_ids_and_keeps_the_rest_in_one_snapshot(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1, b=2, c=3))
    _upsert(catalog, _rows(t, b=20, d=4), units=["u1"], run_id="r2")
    assert _read(catalog) == {"a": 1, "b": 20, "c": 3, "d": 4}
    t = catalog.load_table("curate.t")
    assert len(t.snapshots()) == 2
    props = t.current_snapshot().summary.additional_properties
    assert props["p"] == "1" and ledgers.is_applied(json.loads(props[ledgers.LEDGER]), "u1")


def test_a_writer_that_lost_the_race_plans_again_and_every_id_stays_once(catalog):
    """Both add id x; the second commits on a snapshot the first replaced: the catalog refuses it and
    the upsert is planned again on the new snapshot (pyiceberg's own retry would replay the stale plan)."""
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    stale = catalog.load_table("curate.t")
    _upsert(catalog, _rows(t, x=1, a=2))  # the other writer lands first
    loads = iter([stale])

    def load():
        return next(loads, None) or catalog.load_table("curate.t")

    _upsert(catalog, _rows(t, x=2), load=load)
    assert _read(catalog) == {"a": 2, "x": 2}


def test_the_ledger_counts_a_unit_done_once_every_shard_committed():
    ledger = ledgers.merge_ledger({}, ["u"], (0, 2), "r1")
    assert not ledgers.is_applied(ledger, "u") and ledgers.is_applied(ledger, "u", (0, 2))
    assert not ledgers.is_applied(ledger, "u", (1, 2))
    ledger = ledgers.merge_ledger(ledger, ["u"], (1, 2), "r2")
    assert ledgers.is_applied(ledger, "u") and ledger["u"]["done"] == [0, 1]
    # A plan with another shard count starts the unit over.
    assert ledgers.merge_ledger(ledger, ["u"], (0, 3), "r3")["u"] == {"shards": 3, "done": [0], "run": "r3"}


def test_compaction_keeps_rows_and_the_ledger_and_cuts_files(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    for i in range(6):
        _upsert(catalog, _rows(t, **{f"k{i}": i}), units=[f"u{i}"])
    before = _read(catalog)
    t = catalog.load_table("curate.t")
    assert len(list(t.scan().plan_files())) == 6
    replaced = table_upkeep.compact(
        lambda: catalog.load_table("curate.t"), 1 << 20, 4, {"curate.operation": "compaction"}
    )
    t = catalog.load_table("curate.t")
    assert replaced == 6 and len(list(t.scan().plan_files())) == 1
    assert _read(catalog) == before
    assert all(ledgers.is_applied(ledgers.read_ledger(t), f"u{i}") for i in range(6))
    # Under the threshold nothing happens.
    assert table_upkeep.compact(lambda: catalog.load_table("curate.t"), 1 << 20, 4, {}) == 0
    # A file with more rows than a write task's is not small, however well it compresses: no churn.
    for i in range(6, 12):
        _upsert(catalog, _rows(t, **{f"k{i}": i}), units=[f"u{i}"])
    whole = catalog.load_table("curate.t")
    rows_of_whole = max(f.file.record_count for f in whole.scan().plan_files())
    assert table_upkeep.compact(lambda: catalog.load_table("curate.t"), 1 << 20, 4, {}, small_rows=1) == 0
    assert table_upkeep.compact(lambda: catalog.load_table("curate.t"), 1 << 20, 4, {}, small_rows=2) == 6
    assert max(f.file.record_count for f in catalog.load_table("curate.t").scan().plan_files()) >= rows_of_whole


def test_audio_is_added_once_per_sha(catalog):
    audio = load_or_create(catalog, "curate.a", AUDIO_TABLE)

    def batch(*shas):
        return pa.table(
            {"audio_sha256": list(shas), "id": list(shas), "size": [3] * len(shas), "audio_bytes": [b"abc"] * len(shas)}
        ).cast(schema_to_pyarrow(audio.schema()))

    f1 = commits.write_rows(audio, batch("s1", "s2"))
    audio_table.append_audio(lambda: catalog.load_table("curate.a"), f1, {})
    # A second run scores s2 again (new models) and brings s3 twice: only s3 is added, once.
    f2 = commits.write_rows(audio, batch("s2", "s3", "s3"))
    audio_table.append_audio(lambda: catalog.load_table("curate.a"), f2, {})
    got = catalog.load_table("curate.a").scan().to_arrow().column("audio_sha256").to_pylist()
    assert sorted(got) == ["s1", "s2", "s3"]
    # Nothing new: no snapshot at all.
    n = len(catalog.load_table("curate.a").snapshots())
    assert (
        audio_table.append_audio(lambda: catalog.load_table("curate.a"), commits.write_rows(audio, batch("s1")), {})
        is None
    )
    assert len(catalog.load_table("curate.a").snapshots()) == n


def test_orphan_files_are_removed_once_old_enough_and_referenced_ones_never(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    t = catalog.load_table("curate.t")
    orphans = commits.write_rows(t, _rows(t, z=9))  # written, never committed: a killed writer's
    resolve = lambda uri: resolve_filesystem(uri, None)  # noqa: E731
    assert table_upkeep.remove_orphans(t, 3600, resolve) == []  # too young: it may be a live writer's
    gone = table_upkeep.remove_orphans(t, 0, resolve)
    assert gone == [f.file_path for f in orphans]
    assert _read(catalog) == {"a": 1}


def _plain_path_catalog(tmp_path):
    """A catalog whose warehouse is a plain path, as tables made before warehouses became file:// URIs
    (``--set table.warehouse=/data/wh``) are: their data files are referenced without a scheme."""
    from pyiceberg.catalog import load_catalog

    wh = tmp_path / "wh"
    return load_catalog("t", type="sql", uri=f"sqlite:///{tmp_path}/catalog.db", warehouse=str(wh))


@pytest.mark.parametrize("form", ["plain", "file"])
def test_the_sweep_never_deletes_a_committed_file_whatever_the_warehouse_form(tmp_path, form):
    """The data loss a user met: a plain-path warehouse lost every committed file on the second night,
    because the sweep compared ``file://…`` with ``/…``.  Both forms compare as one path now."""
    catalog = _plain_path_catalog(tmp_path) if form == "plain" else table_root(str(tmp_path), build_config()).catalog()
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1, b=2))
    _upsert(catalog, _rows(t, b=3, c=4))
    t = catalog.load_table("curate.t")
    paths = t.inspect.all_files().column("file_path").to_pylist()
    assert all(p.startswith("/") for p in paths) if form == "plain" else all(p.startswith("file:///") for p in paths)
    resolve = lambda uri: resolve_filesystem(uri, None)  # noqa: E731
    referenced = set(t.inspect.files().column("file_path").to_pylist())
    gone = table_upkeep.remove_orphans(t, 0, resolve)
    assert not {writers.normalised(g)[1] for g in gone} & {writers.normalised(p)[1] for p in referenced}
    assert _read(catalog) == {"a": 1, "b": 3, "c": 4}


def test_a_plain_path_warehouse_setting_becomes_a_file_uri(tmp_path):
    root = table_root(str(tmp_path / "out"), build_config(overrides=[f"table.warehouse={tmp_path}/wh"]))
    assert root.catalog_kwargs["warehouse"] == f"file://{tmp_path}/wh"


def test_a_live_writers_files_are_spared_by_another_runs_sweep(catalog, tmp_path):
    """Writer A writes its data files under its write intent; B sweeps with no minimum age; A commits.
    The table reads back completely, with A's rows."""
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    resolve = lambda uri: resolve_filesystem(uri, None)  # noqa: E731
    t = catalog.load_table("curate.t")
    with writers.writing([t], "run-a", resolve):
        files = commits.write_rows(t, _rows(t, b=2, c=3))
        assert table_upkeep.remove_orphans(catalog.load_table("curate.t"), 0, resolve) == []  # B's sweep
        commits.upsert(lambda: catalog.load_table("curate.t"), files, pa.array(["b", "c"]), {})
    assert _read(catalog) == {"a": 1, "b": 2, "c": 3}
    assert writers.read_intents(writers.as_uri(*writers.normalised(t.location())), resolve) == []  # A is done


def test_a_dead_writers_intent_protects_nothing(catalog):
    """A writer on this host whose process is gone (a SIGKILLed run) is known dead at once; one on
    another host is dead once its heartbeat is older than the TTL."""
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    t = catalog.load_table("curate.t")
    resolve = lambda uri: resolve_filesystem(uri, None)  # noqa: E731
    where = writers.as_uri(*writers.normalised(t.location()))
    intent = writers.WriteIntent(where, "run-dead", resolve)
    intent.body = json.dumps({"run": "run-dead", "host": socket.gethostname(), "pid": 2**22 + 7,
                              "pid_started": 1.0, "started": time.time()}).encode()  # fmt: skip
    intent.fs.create_dir(intent.path.rsplit("/", 1)[0], recursive=True)
    intent._write()
    orphans = commits.write_rows(t, _rows(t, z=9))
    assert writers.live_since(where, resolve) is None
    gone = table_upkeep.remove_orphans(t, 0, resolve)
    assert gone == [f.file_path for f in orphans]
    other = writers.Intent("r", "another-host", 1, None, started=time.time() - 100, beat=time.time() - 100)
    assert other.alive(time.time(), ttl_s=900) and not other.alive(time.time(), ttl_s=60)


def test_the_sweep_refuses_a_location_it_cannot_compare(catalog, caplog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    t = catalog.load_table("curate.t")

    class OnGcs:
        def location(self):
            return "gs://bucket/wh/curate.db/t"

        def name(self):
            return t.name()

    with caplog.at_level("WARNING", logger="pipeline"):
        assert table_upkeep.remove_orphans(OnGcs(), 0, lambda uri: resolve_filesystem(uri, None)) == []
    assert "orphan sweep of curate.t skipped" in caplog.text and "gs://" in caplog.text
    assert _read(catalog) == {"a": 1}


def test_tags_and_expiry(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1), units=["u"])
    t = catalog.load_table("curate.t")
    first = t.current_snapshot().snapshot_id
    load = lambda: catalog.load_table("curate.t")  # noqa: E731
    assert table_upkeep.tag(load, first, "nightly-2026-12-01") == "nightly-2026-12-01"
    assert table_upkeep.tag(load, first, "nightly-2026-12-01") == "nightly-2026-12-01-2"
    _upsert(catalog, _rows(t, b=2))
    time.sleep(0.05)
    t = catalog.load_table("curate.t")
    assert table_upkeep.expire(t, retention_days=1e-9) == 1  # everything but the current snapshot
    t = catalog.load_table("curate.t")
    assert [s.snapshot_id for s in t.snapshots()] == [t.current_snapshot().snapshot_id]
    assert set(t.refs()) == {"main"}
    # The ledger survives: every snapshot carries all of it.
    assert ledgers.is_applied(ledgers.read_ledger(t), "u")
    assert _read(catalog) == {"a": 1, "b": 2}


def test_an_older_table_gains_new_columns_and_keeps_its_rows(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    wider = pa.schema([*SCHEMA, pa.field("snr_db", pa.float64())])
    t = load_or_create(catalog, "curate.t", wider)
    assert "snr_db" in schema_to_pyarrow(t.schema()).names
    assert catalog.load_table("curate.t").scan().to_arrow().to_pylist() == [{"id": "a", "v": 1, "snr_db": None}]


def test_output_roots_and_catalog_errors(tmp_path, monkeypatch):
    check_output_root(str(tmp_path / "missing"))
    (tmp_path / "ours" / "warehouse").mkdir(parents=True)
    (tmp_path / "ours" / "catalog.db").write_bytes(b"")
    check_output_root(str(tmp_path / "ours"))
    (tmp_path / "old" / "curated").mkdir(parents=True)
    (tmp_path / "old" / "manifest.json").write_text("{}")
    with pytest.raises(TableError, match=r"neither empty nor a table root.*earlier per-shard output"):
        check_output_root(str(tmp_path / "old"))
    with pytest.raises(TableError, match=r"table\.catalog_uri"):
        table_root("s3://bucket/out", build_config())
    assert (
        redact_uri("postgresql+psycopg2://curate:hunter2@db:5432/cat") == "postgresql+psycopg2://curate:***@db:5432/cat"
    )
    monkeypatch.setenv("CURATE_CATALOG_URI", "postgresql+psycopg2://curate:hunter2@127.0.0.1:1/cat")
    root = table_root(str(tmp_path / "x"), build_config())
    with pytest.raises(TableError) as err:
        root.catalog().list_namespaces()
    assert "127.0.0.1:1" in str(err.value) and "hunter2" not in str(err.value) and "***" in str(err.value)


def test_a_person_s_tag_outlives_expiry_and_keeps_its_snapshot(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    t = catalog.load_table("curate.t")
    pinned = t.current_snapshot().snapshot_id
    table_upkeep.tag(lambda: catalog.load_table("curate.t"), pinned, "paper-2026-submission")
    table_upkeep.tag(lambda: catalog.load_table("curate.t"), pinned, "run-20261201T020000Z")
    _upsert(catalog, _rows(t, b=2))
    time.sleep(0.05)
    table_upkeep.expire(catalog.load_table("curate.t"), retention_days=1e-9)
    t = catalog.load_table("curate.t")
    assert set(t.refs()) == {"main", "paper-2026-submission"}  # the run's own tag went, the person's stayed
    assert t.snapshot_by_id(pinned) is not None
    assert {r["id"] for r in t.scan(snapshot_id=pinned).to_arrow().to_pylist()} == {"a"}


def test_units_applied_without_a_snapshot_are_in_the_ledger(catalog):
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1), units=["u1"])
    n = len(catalog.load_table("curate.t").snapshots())
    commits.record_applied(lambda: catalog.load_table("curate.t"), ["u2"], (0, 1), "r2")
    t = catalog.load_table("curate.t")
    assert len(t.snapshots()) == n  # no snapshot for a run that changed nothing
    ledger = ledgers.read_ledger(t)
    assert ledgers.is_applied(ledger, "u1") and ledgers.is_applied(ledger, "u2")
    _upsert(catalog, _rows(t, b=2), units=["u3"])  # the next snapshot carries all three
    props = catalog.load_table("curate.t").current_snapshot().summary.additional_properties
    assert {"u1", "u2", "u3"} <= set(json.loads(props[ledgers.LEDGER]))


class _LosesTheReply:
    """A catalog that commits, then raises what Postgres raises when the connection drops before the reply."""

    def __init__(self, catalog, land: bool):
        self.catalog, self.land = catalog, land

    def __getattr__(self, name):
        return getattr(self.catalog, name)

    def commit_table(self, *args, **kwargs):
        from sqlalchemy.exc import OperationalError

        if self.land:
            self.catalog.commit_table(*args, **kwargs)
        raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))


def test_a_commit_whose_reply_is_lost_is_checked_before_anything_is_deleted(catalog, monkeypatch):
    """The catalog took the snapshot and raised anyway: the upsert reads the table again, finds its snapshot,
    and succeeds; no referenced file is deleted.  When it did not land, the error stands; when the table
    cannot even be read, the outcome is unknown and nothing is deleted."""
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1, b=2))
    t = catalog.load_table("curate.t")
    files = commits.write_rows(t, _rows(t, b=20, c=3))
    flaky = _LosesTheReply(catalog, land=True)
    load = lambda: flaky.load_table("curate.t")  # noqa: E731
    real_load = catalog.load_table

    def table_with_flaky_catalog(ident):
        table = real_load(ident)
        table.catalog = flaky
        return table

    monkeypatch.setattr(flaky, "load_table", table_with_flaky_catalog, raising=False)
    committed = commits.upsert(load, files, pa.array(["b", "c"]), {"p": "1"})
    assert _read(catalog) == {"a": 1, "b": 20, "c": 3}
    referenced = catalog.load_table("curate.t").inspect.files().column("file_path").to_pylist()
    assert all(os.path.exists(p.removeprefix("file://")) for p in referenced)
    assert committed.current_snapshot().snapshot_id == catalog.load_table("curate.t").current_snapshot().snapshot_id

    # Not landed, table readable: the error stands, and the upsert's own rewritten files are removed.
    flaky.land = False
    more = commits.write_rows(catalog.load_table("curate.t"), _rows(t, d=4))
    with pytest.raises(Exception, match="server closed"):
        commits.upsert(load, more, pa.array(["d"]), {"p": "1"})
    assert _read(catalog) == {"a": 1, "b": 20, "c": 3}

    # Not landed and the table cannot be read after: unknown, and every file is left where it is.
    reads = {"n": 0}

    def unreadable(ident):
        reads["n"] += 1
        if reads["n"] > 1:
            raise OSError("catalog unreachable")
        return table_with_flaky_catalog(ident)

    monkeypatch.setattr(flaky, "load_table", unreadable, raising=False)
    with pytest.raises(commits.CommitUnknown, match="no file was deleted"):
        commits.upsert(load, more, pa.array(["d"]), {"p": "1"})
    assert all(os.path.exists(f.file_path.removeprefix("file://")) for f in more)


class _InterruptedAfterCommit(_LosesTheReply):
    """Ctrl-C lands just after the catalog took the snapshot, before the reply reaches the run."""

    def commit_table(self, *args, **kwargs):
        self.catalog.commit_table(*args, **kwargs)
        raise KeyboardInterrupt


def test_ctrl_c_as_the_snapshot_lands_deletes_none_of_its_files(catalog, monkeypatch):
    """The run's handler drops the files of a commit that did not happen; one that did must keep them all."""
    t = load_or_create(catalog, "curate.t", SCHEMA)
    _upsert(catalog, _rows(t, a=1))
    files = commits.write_rows(catalog.load_table("curate.t"), _rows(t, b=2))
    flaky = _InterruptedAfterCommit(catalog, land=True)
    real_load = catalog.load_table

    def table_with_flaky_catalog(ident):
        table = real_load(ident)
        table.catalog = flaky
        return table

    monkeypatch.setattr(flaky, "load_table", table_with_flaky_catalog, raising=False)
    with pytest.raises(commits.CommitInterrupted, match="no file was deleted"):
        commits.upsert(lambda: flaky.load_table("curate.t"), files, pa.array(["b"]), {"p": "1"})
    assert _read(catalog) == {"a": 1, "b": 2}
    referenced = catalog.load_table("curate.t").inspect.files().column("file_path").to_pylist()
    assert all(os.path.exists(p.removeprefix("file://")) for p in referenced)


def test_a_retry_builds_contested_rows_again_from_the_table_as_it_stands(catalog):
    """Writer A planned on snapshot S; writer B committed a newer release's word on clip x first.  A's
    commit finds x in a file B added, and builds its row again on B's: the metadata never moves back and
    no release of either history is lost."""
    from pipeline.table.plan_rows import reconcile_rows
    from pipeline.table.schema import CLIPS, conform

    n1, n2, n3 = "cv-corpus-22.0-2025-06-20", "cv-corpus-23.0-2025-09-05", "cv-corpus-24.0-2025-12-05"
    load_or_create(catalog, "curate.clips", CLIPS)

    def row(release, history, votes):
        return {"id": "x", "up_votes": votes, "last_release": release, "first_release": history[0],
                "cv_status": "validated", "engine_key": "k", "transcription": "hello", "kept": True, "reasons": [],
                "releases": [{"release": r, "status": "validated", "split": None} for r in history]}  # fmt: skip

    def write(rows):
        table = catalog.load_table("curate.clips")
        return commits.write_rows(table, conform(pa.Table.from_pylist(rows), CLIPS))

    load = lambda: catalog.load_table("curate.clips")  # noqa: E731
    commits.upsert(load, write([row(n1, [n1], 2)]), pa.array(["x"]), {})
    base = load().current_snapshot().snapshot_id
    (old_file,) = load().inspect.files().column("file_path").to_pylist()
    mine = write([row(n2, [n1, n2], 3)])  # A: release N+1, planned on S
    commits.upsert(load, write([row(n3, [n1, n3], 5)]), pa.array(["x"]), {})  # B: N+2 lands first

    class Replaced:
        def __init__(self):
            self.base = base

        def counts(self):
            return {old_file: 1}

        def ids(self, path):
            return pa.array(["x"])

    keep = lambda t: t.append_column("x", pa.nulls(t.num_rows)).drop_columns(["x"])  # noqa: E731
    commits.upsert(load, mine, pa.array(["x"]), {}, replaced=Replaced(),
                   reconcile=lambda ours, theirs: reconcile_rows(ours, theirs, keep))  # fmt: skip
    (got,) = load().scan().to_arrow().to_pylist()
    assert got["last_release"] == n3 and got["up_votes"] == 5  # B's newer word stands
    assert [e["release"] for e in got["releases"]] == [n1, n2, n3]  # and A's release is in the history
    assert not [f for f in mine if os.path.exists(f.file_path.removeprefix("file://"))]  # A's first files gone


def test_the_clips_table_is_cut_finer_so_a_night_of_revotes_rewrites_one_small_file(catalog):
    """Clips rows are small: the clips table's files are cut at 32 MiB of Arrow data (the audio table's at
    128), so re-votes on the newest clips rewrite one file of the table, not a quarter of it."""
    from pipeline.table.catalog import CLIPS_TABLE_PROPERTIES

    schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("text", pa.string())])
    clips = load_or_create(catalog, "curate.clips", schema, CLIPS_TABLE_PROPERTIES)
    audio_like = load_or_create(catalog, "curate.other", schema)
    row = "x" * 100_000  # ~100 KB a row: 1,000 rows are ~95 MiB of Arrow

    def batches(ids):
        for start in range(0, len(ids), 100):
            chunk = ids[start : start + 100]
            yield pa.table({"id": chunk, "text": [row] * len(chunk)}, schema=schema)

    ids = [f"common_voice_en_{i:07d}.mp3" for i in range(1000)]
    files = commits.write_stream(clips, schema, batches(ids))
    assert len(files) >= 3  # ~95 MiB cut every 32
    assert len(commits.write_stream(audio_like, schema, batches(ids))) == 1  # under 128 MiB: whole
    commits.upsert(lambda: catalog.load_table("curate.clips"), files, pa.array(ids), {"p": "1"})

    newest = ids[-20:]
    rows = pa.table({"id": newest, "text": ["revoted"] * len(newest)}, schema=schema)
    commits.upsert(
        lambda: catalog.load_table("curate.clips"), commits.write_rows(clips, rows), rows.column("id"), {"p": "2"}
    )
    summary = catalog.load_table("curate.clips").current_snapshot().summary
    assert int(summary["deleted-data-files"]) == 1  # the one file that held them
    assert int(summary["total-data-files"]) == len(files) + 1
    got = catalog.load_table("curate.clips").scan(row_filter="text = 'revoted'").to_arrow()
    assert sorted(got.column("id").to_pylist()) == newest


def test_open_time_metadata_and_tags_retry_when_another_writer_commits_first(catalog, monkeypatch):
    """Two runs that start together both open the table.  The catalog reads the table, writes the new
    metadata file, then swaps the pointer only if nobody moved it meanwhile; another writer that moves it
    in that window gets our metadata commit (new columns, properties, kept's statuses) or tag refused.
    The run must read the table again and go on, not fail (seen in CI: two writers on one table)."""
    from pipeline.table.catalog import update_metadata

    load_or_create(catalog, "curate.t", SCHEMA)
    real_write, raced = catalog._write_metadata, []

    def racing_write(*args, **kwargs):  # the other writer commits while ours writes its metadata file
        real_write(*args, **kwargs)
        if not raced:
            raced.append(1)
            with catalog.load_table("curate.t").transaction() as txn:
                txn.set_properties({f"theirs-{len(raced)}": "x"})

    monkeypatch.setattr(catalog, "_write_metadata", racing_write)
    calls = []

    def change(table):
        calls.append(1)
        if "mine" not in table.properties:
            with table.transaction() as txn:
                txn.set_properties({"mine": "y"})

    t = update_metadata(catalog, "curate.t", "a test's property", change)
    assert raced and len(calls) == 2 and t.properties["mine"] == "y" and t.properties["theirs-1"] == "x"

    _upsert(catalog, _rows(t, a=1))
    snap = catalog.load_table("curate.t").current_snapshot().snapshot_id
    raced.clear()
    load = lambda: catalog.load_table("curate.t")  # noqa: E731
    assert table_upkeep.tag(load, snap, "run-20261205T000000Z") == "run-20261205T000000Z"
    assert raced and load().refs()["run-20261205T000000Z"].snapshot_id == snap


def test_history_export_and_query_take_the_root_s_one_locale_or_name_its_locales(tmp_path, capsys):
    """A German root with no ``--locale``: the commands used to look for ``curate.en_clips`` and list table
    names (``curate.zh_cn_clips``) a person must turn back into a locale.  One locale is taken; among
    several, or for a missing one, the error names them as runs do (``zh-CN``)."""
    from pipeline.cli import main

    out = str(tmp_path / "out")
    root = table_root(out, build_config())
    catalog = root.catalog()
    clips_id, _ = root.identifiers("de")
    table = load_or_create(catalog, clips_id, SCHEMA)
    files = commits.write_rows(table, _rows(table, a=1))
    commits.upsert(lambda: catalog.load_table(clips_id), files, pa.array(["a"]), {"curate.locale": "de"})
    load_or_create(catalog, root.identifiers("de")[1], SCHEMA)
    assert root.pick_locale(catalog, None) == "de" and root.pick_locale(catalog, "DE") == "DE"
    assert main(["history", "--output", out]) == 0
    assert str(catalog.load_table(clips_id).current_snapshot().snapshot_id) in capsys.readouterr().out
    with pytest.raises(TableError, match=r"no table of locale 'en'; its locales: de \(pass one as --locale\)"):
        root.pick_locale(catalog, "en")

    table = load_or_create(catalog, root.identifiers("zh-CN")[0], SCHEMA)
    files = commits.write_rows(table, _rows(table, b=2))
    zh = {"curate.locale": "zh-CN"}
    commits.upsert(lambda: catalog.load_table("curate.zh_cn_clips"), files, pa.array(["b"]), zh)
    load_or_create(catalog, root.identifiers("zh-CN")[1], SCHEMA)
    files = commits.write_rows(table, _rows(table, b=2))  # a snapshot that names no locale, as a compaction's
    commits.upsert(lambda: catalog.load_table("curate.zh_cn_clips"), files, pa.array(["b"]), {"p": "1"})
    assert root.locales(catalog) == ["de", "zh-CN"]
    for cmd in (["history"], ["query", "select 1"], ["export", "--format", "parquet", "--to", str(tmp_path / "x")]):
        assert main([cmd[0], "--output", out, *cmd[1:]]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"curate: error: {out} holds several locales; its locales: de, zh-CN (pass one as --locale)"
    assert main(["history", "--output", out, "--locale", "zh-CN"]) == 0
    assert not (tmp_path / "x").exists()
