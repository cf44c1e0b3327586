"""The tables' upkeep, after each commit and never in its way: tags, expiry of old snapshots (the product's
own tags only), compaction of small files, and the sweep of orphan files a dead writer left."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pipeline.table import writers
from pipeline.table.commit import delete_files, retry, write_stream
from pipeline.table.ledger import LEDGER, read_ledger
from pipeline.table.schema import conform

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger("pipeline")


def tag(load: Callable[[], Table], snapshot_id: int, name: str) -> str:
    """Tag ``snapshot_id``; a name already taken gets ``-2``, ``-3``, …  Returns the tag given.  A writer that
    commits between our read and the tag's commit refuses it: read again and tag again (the rows are
    committed already; a run must not fail on its tag)."""

    def attempt() -> str:
        table = load()
        refs = table.refs()
        final, n = name, 1
        while final in refs:
            n += 1
            final = f"{name}-{n}"
        table.manage_snapshots().create_tag(snapshot_id, final).commit()
        return final

    return retry(f"tag {name}", attempt)


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


def compact(
    load: Callable[[], Table],
    target_bytes: int,
    min_files: int,
    properties: dict[str, str],
    small_rows: int | None = None,
) -> int:
    """Rewrite small data files (a write task's) into files of about ``target_bytes`` once ``min_files`` are
    small.  Small is under an eighth of ``target_bytes`` on disk and, with ``small_rows``, under that many
    rows: a clips file the run wrote whole (``write_stream``, ``target_bytes`` of Arrow rows) compresses
    far below an eighth on disk, so its row count tells it from a write task's; audio does not compress,
    so its bytes do.  One snapshot; rows are unchanged (same ids, same values).  Streamed: memory holds
    one output file's worth.  Returns the number of files replaced."""
    from pipeline.table.scan import arrow_schema, file_batches_of

    def attempt() -> int:
        table = load()
        if table.current_snapshot() is None:
            return 0
        tasks = [
            t
            for t in table.scan().plan_files()
            if t.file.file_size_in_bytes < target_bytes // 8
            and (small_rows is None or t.file.record_count < small_rows)
        ]
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

    return retry("compaction", attempt)


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
