"""The upkeep step, after the commit and never in its way: expire what is past retention, compact."""

from __future__ import annotations

import logging

from pipeline.run.context import RunContext
from pipeline.run.tables import Tables
from pipeline.table import upkeep as table_upkeep

log = logging.getLogger("pipeline")
SMALL_FILE_ROWS_FACTOR = 4


def upkeep(ctx: RunContext, tables: Tables) -> None:
    """Expire what is past retention, compact small files: after the commit, never in its way."""
    t = ctx.cfg.table
    catalog = tables.catalog
    props = {"curate.run-id": ctx.run_id, "curate.operation": "compaction"}
    for ident in (tables.clips_id, tables.audio_id):
        try:
            table_upkeep.expire(catalog.load_table(ident), t.retention_days)
            # A write task's file holds about rows_per_file rows; one written whole holds many times more.
            small_rows = SMALL_FILE_ROWS_FACTOR * t.rows_per_file
            replaced = table_upkeep.compact(
                lambda ident=ident: catalog.load_table(ident),
                t.target_file_mb << 20,
                t.compact_min_files,
                props,
                small_rows=small_rows,
            )
            if replaced:
                log.info("compacted %d small data files of %s", replaced, ident)
        except Exception as exc:  # upkeep is retried next run; the data is committed
            log.warning("upkeep of %s failed, left for the next run: %s: %s", ident, type(exc).__name__, exc)
