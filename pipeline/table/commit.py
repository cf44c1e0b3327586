"""Commits to the dataset's tables: one atomic snapshot per unit of work, and the table's upkeep.

- ``upsert`` replaces the rows of the given ids and adds the new ones in one snapshot (copy on write:
  the files that hold any of the ids are rewritten without them, the new files added).  Its snapshot
  properties carry the run, the counts and the ledger.  Until the catalog takes the new metadata the
  previous snapshot is the table: a failed or killed write loses nothing, it leaves orphan files.
- A concurrent writer that committed first makes the catalog refuse ours (pyiceberg's own retry is
  off: it would replay a plan made on the old snapshot and could double an id both writers added).
  Then the whole upsert is planned again on the new snapshot, so every id stays once.
- The ledger (``curate.ledger``) is cumulative: every snapshot's summary holds every unit of work
  applied so far, so expiring old snapshots forgets nothing.
- ``append_audio`` adds only audio whose sha256 the table lacks; ``compact``, ``expire`` and
  ``remove_orphans`` keep file counts and storage bounded.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import AUDIO_SHA, ID
from pipeline.table import writers
from pipeline.table.schema import conform

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger("pipeline")

LEDGER = "curate.ledger"
MAX_ATTEMPTS = 12


class CommitConflict(RuntimeError):
    """The table kept changing under us for ``MAX_ATTEMPTS`` plans in a row."""


# ------------------------------------------------------------------------------------------ ledger


def read_ledger(table: Table) -> dict[str, dict[str, Any]]:
    """unit key -> {"shards": k, "done": [shard indices], "run": run id}: from the newest snapshot of the
    current branch that carries one (every snapshot we make does; one made by another tool may not),
    joined with the units applied without a snapshot (nothing changed; the table's ``curate.ledger``
    property)."""
    ledger: dict[str, dict[str, Any]] = {}
    snap = table.current_snapshot()
    while snap is not None:
        text = snap.summary.additional_properties.get(LEDGER) if snap.summary else None
        if text:
            ledger = json.loads(text)
            break
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    idle = json.loads(table.properties.get(LEDGER) or "{}")
    for unit, entry in idle.items():
        have = ledger.get(unit)
        if have is None or have["shards"] != entry["shards"]:
            ledger[unit] = entry
        else:
            ledger[unit] = {**have, "done": sorted(set(have["done"]) | set(entry["done"]))}
    return ledger


def record_applied(
    load: Callable[[], Table], units: Iterable[str], shard: tuple[int, int] = (0, 1), run_id: str = ""
) -> None:
    """Mark ``units`` applied without a snapshot: the run changed nothing, so it commits no data, but the next
    run must not do it again.  A table property (a metadata commit, not a snapshot); the next snapshot's
    ledger folds it in."""
    units = list(units)

    def attempt() -> None:
        table = load()
        idle = json.loads(table.properties.get(LEDGER) or "{}")
        merged = merge_ledger(idle, units, shard, run_id)
        with table.transaction() as txn:
            txn.set_properties({LEDGER: json.dumps(merged, separators=(",", ":"), sort_keys=True)})

    _retry("the table's ledger", attempt)


def is_applied(ledger: dict[str, dict[str, Any]], unit: str, shard: tuple[int, int] | None = None) -> bool:
    """Whether every shard of ``unit`` is committed, or with ``shard``, whether that shard is."""
    entry = ledger.get(unit)
    if not entry:
        return False
    if set(range(entry["shards"])) <= set(entry["done"]):
        return True
    return shard is not None and entry["shards"] == shard[1] and shard[0] in entry["done"]


def merge_ledger(
    ledger: dict[str, dict[str, Any]], units: Iterable[str], shard: tuple[int, int], run_id: str
) -> dict[str, dict[str, Any]]:
    """``ledger`` with ``units`` marked done by shard ``i`` of ``k``."""
    out = {k: dict(v) for k, v in ledger.items()}
    i, k = shard
    for unit in units:
        entry = out.get(unit)
        if entry is None or entry["shards"] != k:
            entry = {"shards": k, "done": []}
        entry["done"] = sorted(set(entry["done"]) | {i})
        entry["run"] = run_id
        out[unit] = entry
    return out


# ------------------------------------------------------------------------------------------- files


def write_rows(table: Table, rows: pa.Table) -> list[DataFile]:
    """Data files of ``rows`` (already conformed to the table's schema) in the table's location."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    if rows.num_rows == 0:
        return []
    return list(_dataframe_to_data_files(table_metadata=table.metadata, df=rows, io=table.io))


def write_stream(table: Table, schema: pa.Schema, batches: Iterable[pa.Table]) -> list[DataFile]:
    """Data files of a stream of tables (each conformed to ``schema``), written as they come: a file is
    cut every ``write.target-file-size-bytes`` of Arrow data (``TABLE_PROPERTIES``), so memory holds one
    file's worth, whatever the stream's length."""
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    def record_batches():
        for t in batches:
            yield from t.to_batches()

    reader = pa.RecordBatchReader.from_batches(schema, record_batches())
    return list(_dataframe_to_data_files(table_metadata=table.metadata, df=reader, io=table.io))


def read_file(table: Table, data_file: DataFile) -> pa.Table:
    import pyarrow.parquet as pq

    with table.io.new_input(data_file.file_path).open() as f:
        return pq.read_table(f)


def _read_task(table: Table, task) -> pa.Table:
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    return ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue()).to_table([task])


def delete_files(table: Table, files: Iterable[DataFile | str]) -> None:
    for f in files:
        path = f if isinstance(f, str) else f.file_path
        try:
            table.io.delete(path)
        except Exception:  # an orphan left behind is removed later by remove_orphans
            log.warning("could not delete uncommitted file %s", path)


def _retry(what: str, attempt: Callable[[], Any]) -> Any:
    from pyiceberg.exceptions import CommitFailedException

    for n in range(MAX_ATTEMPTS):
        try:
            return attempt()
        except CommitFailedException as exc:
            wait = min(10.0, 0.2 * 2**n) * (0.5 + random.random())
            log.info("%s: another writer committed first (%s); planning again in %.1f s", what, exc, wait)
            time.sleep(wait)
    raise CommitConflict(f"{what}: the table changed under every one of {MAX_ATTEMPTS} attempts")


class CommitUnknown(RuntimeError):
    """The catalog's answer to a commit was an error, and whether the snapshot landed could not be read
    afterwards: the data files are left where they are (a later sweep removes them if unreferenced)."""


COMMIT_ID = "curate.commit-id"


def _landed(load: Callable[[], Table], token: str) -> bool | None:
    """Whether a snapshot carrying ``token`` is in the table now (None: the table cannot be read)."""
    try:
        table = load()
    except Exception:
        return None
    return any((s.summary.additional_properties or {}).get(COMMIT_ID) == token for s in table.snapshots() if s.summary)


def _commit(txn, load: Callable[[], Table], token: str, what: str) -> Table:
    """Commit ``txn``.  A refusal (another writer first, a failed validation) is raised as it is: nothing
    landed.  Any other error leaves the outcome unknown (Postgres can commit and still lose the reply), so
    the table is read again: the snapshot there is success; absent, the error stands; unreadable,
    ``CommitUnknown``."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    try:
        return txn.commit_transaction()
    except (CommitFailedException, ValidationException):
        raise
    except Exception as exc:
        landed = _landed(load, token)
        if landed:
            log.warning("%s: the catalog answered %s, but the snapshot is in the table: committed", what, exc)
            return load()
        if landed is None:
            raise CommitUnknown(
                f"{what}: the catalog answered {type(exc).__name__}: {str(exc).splitlines()[0][:200]}, and the "
                "table could not be read again to tell whether the snapshot landed; no file was deleted"
            ) from exc
        raise


class Replaced(Protocol):
    """Where the rows a commit replaces are, as the plan found them on snapshot ``base``."""

    base: int | None

    def counts(self) -> Mapping[str, int]:
        """Data file -> how many of its rows are replaced."""
        ...

    def ids(self, path: str) -> pa.Array:
        """The replaced ids held by data file ``path``."""
        ...


# ------------------------------------------------------------------------------------------ upsert


def upsert(
    load: Callable[[], Table],
    files: Sequence[DataFile],
    ids: pa.Array | pa.ChunkedArray,
    properties: dict[str, str],
    units: Iterable[str] = (),
    shard: tuple[int, int] = (0, 1),
    run_id: str = "",
    replaced: Replaced | None = None,
    reconcile: Callable[[pa.Table, pa.Table], pa.Table] | None = None,
) -> Table:
    """One snapshot: every row whose id is in ``ids`` replaced by the rows of ``files``.

    With ``replaced`` (the plan's account of which data files hold the replaced rows), the files to
    rewrite are known without a scan: a file whose rows are all replaced is dropped unread; one partly
    replaced is rewritten without them; a brand-new id touches no file.  A file another writer added
    since the plan's snapshot is read for our ids: those clips are contested, and with ``reconcile``
    (ours, theirs -> rows) our rows for them are built again from the table as it stands now, so a
    retry never moves their metadata backwards or drops the other writer's history.  Without
    ``replaced`` every file that may hold one of the ids is read.
    """
    units = list(units)
    keys = pc.unique(ids)
    what = f"commit to {properties.get('curate.table', 'the table')}"
    superseded: list[DataFile] = []  # our files a reconciled attempt replaced: never committed

    def attempt() -> Table:
        table = load()
        doomed, preserved, theirs = _doomed(table, keys, replaced)
        ours, rebuilt = list(files), []
        if theirs is not None and theirs.num_rows and reconcile is not None:
            ours, rebuilt, dropped = _rebuild(table, files, theirs, reconcile)
            log.info("%s: %d clip(s) changed by another writer since the plan: built again", what, theirs.num_rows)
            superseded.extend(dropped)
        ledger = merge_ledger(read_ledger(table), units, shard, run_id)
        token = uuid.uuid4().hex
        props = {**properties, LEDGER: json.dumps(ledger, separators=(",", ":"), sort_keys=True), COMMIT_ID: token}
        txn = table.transaction()
        try:
            with txn.update_snapshot(snapshot_properties=props).overwrite() as snap:
                for f in doomed:
                    snap.delete_data_file(f)
                for f in [*preserved, *ours]:
                    snap.append_data_file(f)
            return _commit(txn, load, token, what)
        except CommitUnknown:
            raise  # the preserved files may be the table's now
        except Exception:
            delete_files(table, [*preserved, *rebuilt])  # never referenced: ours to remove
            raise

    committed = _retry(what, attempt)
    delete_files(committed, superseded)
    return committed


def _rebuild(
    table: Table, files: Sequence[DataFile], theirs: pa.Table, reconcile: Callable[[pa.Table, pa.Table], pa.Table]
) -> tuple[list[DataFile], list[DataFile], list[DataFile]]:
    """(our files for this attempt, the new ones among them, our files they supersede): our rows for the
    contested clips (those in ``theirs``) reconciled with theirs, the rest kept as they were."""
    contested = theirs.column(ID)
    keep, rebuilt, dropped, mine = [], [], [], []
    for f in files:
        rows = read_file(table, f)
        hit = pc.is_in(rows.column(ID), value_set=contested)
        if not pc.any(hit).as_py():
            keep.append(f)
            continue
        dropped.append(f)
        mine.append(rows.filter(hit))
        rest = rows.filter(pc.invert(hit))
        if rest.num_rows:
            rebuilt += write_rows(table, rest)
    if mine:
        ours = pa.concat_tables(mine, promote_options="permissive")
        rebuilt += write_rows(table, conform(reconcile(ours, theirs), ours.schema))
    return [*keep, *rebuilt], rebuilt, dropped


def _live(table: Table, snapshot_id: int | None = None) -> dict[str, DataFile] | None:
    """The data files of a snapshot (the current one by default); None when it is gone (expired)."""
    if snapshot_id is not None and table.snapshot_by_id(snapshot_id) is None:
        return None
    return {t.file.file_path: t.file for t in table.scan(snapshot_id=snapshot_id).plan_files()}


def _doomed(
    table: Table, keys: pa.Array, replaced: Replaced | None
) -> tuple[list[DataFile], list[DataFile], pa.Table | None]:
    """(files holding any of ``keys``, new files holding their other rows, the rows of ``keys`` another
    writer committed since the plan's snapshot)."""
    if table.current_snapshot() is None or len(keys) == 0:
        return [], [], None
    known = _live(table, replaced.base) if replaced is not None and replaced.base is not None else None
    if known is None:
        return (*_rewrite_without(table, keys), None)
    live = _live(table) or {}
    doomed, preserved, theirs = [], [], []
    for path, n in replaced.counts().items():
        f = live.get(path)
        if f is None:
            continue  # rewritten since the plan: its rows are in a file added since (read below)
        doomed.append(f)
        if n < f.record_count:
            rows = read_file(table, f)
            preserved += write_rows(table, rows.filter(pc.invert(pc.is_in(rows.column(ID), replaced.ids(path)))))
    for path in live.keys() - known.keys():  # added by another writer since the plan
        rows = read_file(table, live[path])
        hit = pc.is_in(rows.column(ID), value_set=keys)
        if pc.any(hit).as_py():
            doomed.append(live[path])
            preserved += write_rows(table, rows.filter(pc.invert(hit)))
            theirs.append(rows.filter(hit))
    return doomed, preserved, pa.concat_tables(theirs, promote_options="permissive") if theirs else None


def _rewrite_without(table: Table, keys: pa.Array) -> tuple[list[DataFile], list[DataFile]]:
    """(files holding any of ``keys``, new files holding their other rows), by reading every file that
    may hold one: the fallback when the plan's snapshot is gone (expired) or there was no plan."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    bounds = pc.min_max(keys)
    coarse = And(GreaterThanOrEqual(ID, bounds["min"].as_py()), LessThanOrEqual(ID, bounds["max"].as_py()))
    doomed, preserved = [], []
    for task in table.scan(row_filter=coarse).plan_files():
        rows = _read_task(table, task)
        hit = pc.is_in(rows.column(ID), value_set=keys)
        if not pc.any(hit).as_py():
            continue
        doomed.append(task.file)
        preserved += write_rows(table, rows.filter(pc.invert(hit)))
    return doomed, preserved


# ------------------------------------------------------------------------------------------- audio


def append_audio(load: Callable[[], Table], files: Sequence[DataFile], properties: dict[str, str]) -> Table | None:
    """Add the audio of ``files`` whose sha256 the table does not hold yet, in one snapshot.

    Audio is content-addressed: a clip scored again (new models) or listed by two releases keeps its
    one copy.  A file with no new audio is dropped; one with some is rewritten to hold only the new.
    The table's shas are read a file at a time and only ours are kept, so memory holds this run's.
    """
    import pyarrow.parquet as pq

    what = "commit to the audio table"

    def attempt() -> Table | None:
        table = load()
        ours = {}
        for f in files:
            with table.io.new_input(f.file_path).open() as stream:
                ours[f.file_path] = pq.read_table(stream, columns=[AUDIO_SHA]).column(AUDIO_SHA).cast(pa.string())
        candidates = pa.chunked_array([c for c in ours.values()], pa.string()).combine_chunks() if ours else None
        taken = _existing_shas(table, candidates) if candidates is not None else set()
        keep, written, dropped = [], [], []
        for f in files:
            shas = ours[f.file_path].to_pylist()
            first = {s: i for i, s in reversed(list(enumerate(shas)))}
            mask = [s not in taken and first[s] == i for i, s in enumerate(shas)]
            taken |= set(shas)
            if all(mask):
                keep.append(f)
                continue
            dropped.append(f)
            if any(mask):
                new = write_rows(table, read_file(table, f).filter(pa.array(mask)))
                written += new
                keep += new
        if not keep:
            delete_files(table, dropped)
            return None
        token = uuid.uuid4().hex
        txn = table.transaction()
        try:
            with txn.update_snapshot(snapshot_properties={**properties, COMMIT_ID: token}).fast_append() as snap:
                for f in keep:
                    snap.append_data_file(f)
            committed = _commit(txn, load, token, what)
        except CommitUnknown:
            raise
        except Exception:
            delete_files(table, written)
            raise
        delete_files(table, dropped)
        return committed

    return _retry(what, attempt)


def _existing_shas(table: Table, candidates: pa.Array) -> set[str]:
    """Which of ``candidates`` the table holds already."""
    from pipeline.table.scan import file_batches

    found: set[str] = set()
    for _, t in file_batches(table, (AUDIO_SHA,)):
        col = t.column(AUDIO_SHA).cast(pa.string())
        found |= set(col.filter(pc.is_in(col, value_set=candidates)).to_pylist())
    return found


# ------------------------------------------------------------------------------------------ upkeep


def tag(table: Table, snapshot_id: int, name: str) -> str:
    """Tag ``snapshot_id``; a name already taken gets ``-2``, ``-3``, …  Returns the tag given."""
    refs = table.refs()
    final, n = name, 1
    while final in refs:
        n += 1
        final = f"{name}-{n}"
    table.manage_snapshots().create_tag(snapshot_id, final).commit()
    return final


# The tags runs make (``run-<time>``, ``<deployment>-<date>``, ``manual-<time>``): expiry removes only
# these.  A tag a person made to pin a dataset stays, and keeps its snapshot.
PRODUCT_TAG = re.compile(r"^(run-\d{8}T\d{6}Z|nightly-\d{4}-\d{2}-\d{2}|manual-\d{8}T\d{6}Z)(-\d+)?$")


def expire(table: Table, retention_days: float) -> int:
    """Drop the product's own tags and the snapshots older than the retention (never the current one, nor a
    snapshot a person's tag pins).  Returns how many snapshots went."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    old_tags = [
        name
        for name, ref in table.refs().items()
        if ref.snapshot_ref_type == "tag"
        and PRODUCT_TAG.match(name)
        and (s := table.snapshot_by_id(ref.snapshot_id)) is not None
        and s.timestamp_ms < cutoff_ms
    ]
    if old_tags:
        manage = table.manage_snapshots()
        for name in old_tags:
            manage = manage.remove_tag(name)
        manage.commit()
        table = table.refresh()
    pinned = {ref.snapshot_id for ref in table.refs().values()}
    old = [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id not in pinned]
    if old:
        table.maintenance.expire_snapshots().older_than(cutoff).commit()
    return len(old)


def compact(load: Callable[[], Table], target_bytes: int, min_files: int, properties: dict[str, str]) -> int:
    """Rewrite small data files (a write task's, under an eighth of ``target_bytes``) into files of about
    ``target_bytes`` once ``min_files`` are small.  Files the run wrote whole (``write_stream``) are not
    small.  One snapshot; rows are unchanged (same ids, same values).  Streamed: memory holds one output
    file's worth.  Returns the number of files replaced."""
    from pipeline.table.scan import arrow_schema, file_batches_of

    def attempt() -> int:
        table = load()
        if table.current_snapshot() is None:
            return 0
        tasks = [t for t in table.scan().plan_files() if t.file.file_size_in_bytes < target_bytes // 8]
        if len(tasks) < min_files:
            return 0
        schema = arrow_schema(table)
        written = []
        # The ledger rides along: the newest snapshot must carry it (read_ledger reads that one first).
        props = {**properties, LEDGER: json.dumps(read_ledger(table), separators=(",", ":"), sort_keys=True)}
        try:
            ordered = sorted(tasks, key=lambda t: t.file.file_path)
            written += write_stream(
                table, schema, (conform(b, schema) for t in ordered for b in file_batches_of(table, t))
            )
            txn = table.transaction()
            with txn.update_snapshot(snapshot_properties=props).overwrite() as snap:
                for t in tasks:
                    snap.delete_data_file(t.file)
                for f in written:
                    snap.append_data_file(f)
            txn.commit_transaction()
        except Exception:
            delete_files(table, written)
            raise
        return len(tasks)

    return _retry("compaction", attempt)


# Clock skew between a writer's host and the store allowed for when sparing a live writer's files.
SKEW_S = 300.0


def remove_orphans(
    table: Table,
    min_age_s: float,
    resolve: Callable[[str], tuple[Any, str]],
    writer_ttl_s: float = writers.DEFAULT_TTL_S,
) -> list[str]:
    """Delete data files under the table's ``data/`` that no snapshot references, that are older than
    ``min_age_s``, and that no live writer may own (``pipeline.table.writers``).  Returns their paths.

    Order matters: files are listed first, live writers next, the table's references last (reloaded),
    so a file listed either has a writer whose intent is seen, or was committed before the references
    were read, or is a dead writer's.  Locations are compared without their scheme, as the table's
    FileIO parses them, so a plain-path warehouse and ``file://`` one are the same.
    """
    import pyarrow.fs as pafs

    location = table.location().rstrip("/")
    scheme, where = writers.normalised(location)
    if scheme not in writers.SWEEPABLE:
        log.warning(
            "orphan sweep of %s skipped: its location %s is on %s://, which the sweep cannot list and compare "
            "(it handles local paths and s3://)",
            ".".join(table.name()),
            location,
            scheme,
        )
        return []
    uri = writers.as_uri
    fs, base = resolve(uri(scheme, f"{where}/data"))
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    files = [i for i in infos if i.type == pafs.FileType.File]
    if not files:
        return []
    live = writers.live_since(uri(scheme, where), resolve, writer_ttl_s)
    table = table.refresh()
    referenced = (
        {writers.normalised(p)[1] for p in table.inspect.all_files().column("file_path").to_pylist()}
        if table.snapshots()
        else set()
    )
    now = time.time()
    gone = []
    for info in files:
        written = info.mtime.timestamp() if info.mtime else now
        if writers.normalised(uri(scheme, info.path))[1] in referenced or now - written < min_age_s:
            continue
        if live is not None and written >= live - SKEW_S:
            continue  # a live writer's, or too near one to tell
        fs.delete_file(info.path)
        gone.append(uri(scheme, info.path))
    return gone
