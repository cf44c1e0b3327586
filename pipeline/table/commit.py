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
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import AUDIO_SHA, ID

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
    current branch that carries one (every snapshot we make does; one made by another tool may not)."""
    snap = table.current_snapshot()
    while snap is not None:
        text = snap.summary.additional_properties.get(LEDGER) if snap.summary else None
        if text:
            return json.loads(text)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return {}


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


# ------------------------------------------------------------------------------------------ upsert


def upsert(
    load: Callable[[], Table],
    files: Sequence[DataFile],
    ids: pa.Array | pa.ChunkedArray,
    properties: dict[str, str],
    units: Iterable[str] = (),
    shard: tuple[int, int] = (0, 1),
    run_id: str = "",
) -> Table:
    """One snapshot: every row whose id is in ``ids`` replaced by the rows of ``files``."""
    units = list(units)
    keys = pc.unique(ids)

    def attempt() -> Table:
        table = load()
        doomed, preserved = _rewrite_without(table, keys)
        ledger = merge_ledger(read_ledger(table), units, shard, run_id)
        props = {**properties, LEDGER: json.dumps(ledger, separators=(",", ":"), sort_keys=True)}
        txn = table.transaction()
        try:
            with txn.update_snapshot(snapshot_properties=props).overwrite() as snap:
                for f in doomed:
                    snap.delete_data_file(f)
                for f in [*preserved, *files]:
                    snap.append_data_file(f)
            return txn.commit_transaction()
        except Exception:
            delete_files(table, preserved)  # never referenced: ours to remove
            raise

    return _retry(f"commit to {properties.get('curate.table', 'the table')}", attempt)


def _rewrite_without(table: Table, keys: pa.Array) -> tuple[list[DataFile], list[DataFile]]:
    """(files holding any of ``keys``, new files holding their other rows)."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    if table.current_snapshot() is None or len(keys) == 0:
        return [], []
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
    """

    def attempt() -> Table | None:
        table = load()
        taken = _existing_shas(table)
        keep, written, dropped = [], [], []
        for f in files:
            rows = read_file(table, f)
            shas = rows.column(AUDIO_SHA).to_pylist()
            first = {s: i for i, s in reversed(list(enumerate(shas)))}
            mask = [s not in taken and first[s] == i for i, s in enumerate(shas)]
            taken |= set(shas)
            if all(mask):
                keep.append(f)
                continue
            dropped.append(f)
            if any(mask):
                new = write_rows(table, rows.filter(pa.array(mask)))
                written += new
                keep += new
        if not keep:
            delete_files(table, dropped)
            return None
        txn = table.transaction()
        try:
            with txn.update_snapshot(snapshot_properties=properties).fast_append() as snap:
                for f in keep:
                    snap.append_data_file(f)
            committed = txn.commit_transaction()
        except Exception:
            delete_files(table, written)
            raise
        delete_files(table, dropped)
        return committed

    return _retry("commit to the audio table", attempt)


def _existing_shas(table: Table) -> set[str]:
    if table.current_snapshot() is None:
        return set()
    return set(table.scan(selected_fields=(AUDIO_SHA,)).to_arrow().column(AUDIO_SHA).to_pylist())


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


def expire(table: Table, retention_days: float) -> int:
    """Drop tags and snapshots older than the retention (never the current one).  Returns how many."""
    cutoff = datetime.now(UTC) - timedelta(days=retention_days)
    cutoff_ms = int(cutoff.timestamp() * 1000)
    current = table.current_snapshot()
    old_tags = [
        name
        for name, ref in table.refs().items()
        if ref.snapshot_ref_type == "tag"
        and (s := table.snapshot_by_id(ref.snapshot_id)) is not None
        and s.timestamp_ms < cutoff_ms
    ]
    if old_tags:
        manage = table.manage_snapshots()
        for name in old_tags:
            manage = manage.remove_tag(name)
        manage.commit()
        table = table.refresh()
    old = [
        s.snapshot_id
        for s in table.snapshots()
        if s.timestamp_ms < cutoff_ms and (current is None or s.snapshot_id != current.snapshot_id)
    ]
    if old:
        table.maintenance.expire_snapshots().older_than(cutoff).commit()
    return len(old)


def compact(load: Callable[[], Table], target_bytes: int, min_files: int, properties: dict[str, str]) -> int:
    """Rewrite small data files into files of about ``target_bytes`` once ``min_files`` are small.

    One snapshot; rows are unchanged (same ids, same values).  Returns the number of files replaced.
    """

    def attempt() -> int:
        table = load()
        if table.current_snapshot() is None:
            return 0
        tasks = [t for t in table.scan().plan_files() if t.file.file_size_in_bytes < target_bytes // 2]
        if len(tasks) < min_files:
            return 0
        bins: list[list] = [[]]
        size = 0
        for t in sorted(tasks, key=lambda t: t.file.file_path):
            if bins[-1] and size + t.file.file_size_in_bytes > target_bytes:
                bins.append([])
                size = 0
            bins[-1].append(t)
            size += t.file.file_size_in_bytes
        written = []
        # The ledger rides along: the newest snapshot must carry it (read_ledger reads that one first).
        props = {**properties, LEDGER: json.dumps(read_ledger(table), separators=(",", ":"), sort_keys=True)}
        try:
            for b in bins:
                rows = pa.concat_tables([_read_task(table, t) for t in b], promote_options="permissive")
                written += write_rows(table, rows)
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


def remove_orphans(table: Table, min_age_s: float, resolve: Callable[[str], tuple[Any, str]]) -> list[str]:
    """Delete data files under the table's ``data/`` that no snapshot references and that are older than
    ``min_age_s`` (a killed write's; a live writer's files are younger).  Returns their paths."""
    import pyarrow.fs as pafs

    referenced = set(table.inspect.all_files().column("file_path").to_pylist()) if table.snapshots() else set()
    fs, base = resolve(f"{table.location().rstrip('/')}/data")
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    now = time.time()
    scheme = table.location().split("://", 1)[0] + "://"
    gone = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        uri = scheme + info.path if scheme == "s3://" else f"file://{info.path}"
        if uri in referenced or (info.mtime and now - info.mtime.timestamp() < min_age_s):
            continue
        fs.delete_file(info.path)
        gone.append(uri)
    return gone
