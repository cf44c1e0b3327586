"""Commits to the dataset's clips table: one atomic snapshot per unit of work.

- ``upsert`` replaces the rows of the given ids and adds the new ones in one snapshot (copy on write:
  the files that hold any of the ids are rewritten without them, the new files added).  Its snapshot
  properties carry the run, the counts and the ledger.  Until the catalog takes the new metadata the
  previous snapshot is the table: a failed or killed write loses nothing, it leaves orphan files.
- A concurrent writer that committed first makes the catalog refuse ours (pyiceberg's own retry is
  off: it would replay a plan made on the old snapshot and could double an id both writers added).
  Then the whole upsert is planned again on the new snapshot, so every id stays once.
- Every snapshot's summary carries the ledger (``table/ledger.py``).  The audio table's appends are
  ``table/audio.py``'s; compaction, expiry and the orphan sweep ``table/upkeep.py``'s.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import ID
from pipeline.table.ledger import LEDGER, merge_ledger, read_ledger
from pipeline.table.schema import conform

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger("pipeline")

MAX_ATTEMPTS = 12


class CommitConflict(RuntimeError):
    """The table kept changing under us for ``MAX_ATTEMPTS`` plans in a row."""


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

    retry("the table's ledger", attempt)


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


def retry(what: str, attempt: Callable[[], Any]) -> Any:
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


class CommitInterrupted(KeyboardInterrupt):
    """Ctrl-C arrived while the catalog committed, and the snapshot landed or cannot be told: its data files
    must stay (a later sweep removes them if unreferenced).  Still an interrupt, so the run stops as one."""


COMMIT_ID = "curate.commit-id"


def _landed(load: Callable[[], Table], token: str) -> bool | None:
    """Whether a snapshot carrying ``token`` is in the table now (None: the table cannot be read)."""
    try:
        table = load()
    except Exception:
        return None
    return any((s.summary.additional_properties or {}).get(COMMIT_ID) == token for s in table.snapshots() if s.summary)


def commit_txn(txn, load: Callable[[], Table], token: str, what: str) -> Table:
    """Commit ``txn``.  A refusal (another writer first, a failed validation) is raised as it is: nothing
    landed.  Any other error leaves the outcome unknown (Postgres can commit and still lose the reply), so
    the table is read again: the snapshot there is success; absent, the error stands; unreadable,
    ``CommitUnknown``."""
    from pyiceberg.exceptions import CommitFailedException, ValidationException

    try:
        return txn.commit_transaction()
    except (CommitFailedException, ValidationException):
        raise
    except KeyboardInterrupt:
        # Deleting "our" files now would rob a snapshot that landed just before the interrupt.
        if _landed(load, token) is not False:
            raise CommitInterrupted(f"{what}: interrupted while committing; no file was deleted") from None
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
            return commit_txn(txn, load, token, what)
        except CommitUnknown:
            raise  # the preserved files may be the table's now
        except Exception:
            delete_files(table, [*preserved, *rebuilt])  # never referenced: ours to remove
            raise

    committed = retry(what, attempt)
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
