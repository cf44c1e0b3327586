"""The commit step: the plan's metadata updates written beside the engines' files, and both tables
committed, one snapshot each, whose properties say who made it and what it holds."""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import ID, KEPT
from pipeline.io.table_sink import SAMPLE_CAP, rejected_sample, tally_of
from pipeline.result import DataFileInfo, LocaleResult, combine
from pipeline.run.context import RunContext, model_info, timed
from pipeline.run.engines import Written, run_engines
from pipeline.run.tables import Tables
from pipeline.runtime import cores
from pipeline.runtime.version import code_version
from pipeline.table import audio as audio_table
from pipeline.table import commit as commits
from pipeline.table import upkeep as table_upkeep
from pipeline.table.plan import OLD_KEPT, TablePlan
from pipeline.table.plan_rows import reconcile_rows
from pipeline.table.schema import conform

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger("pipeline")


def write_and_commit(
    ctx: RunContext, result: LocaleResult, pending: list, plan: TablePlan, tables: Tables, now: datetime
) -> bool:
    """The engines on the plan's new clips, the updates written, both tables committed: one snapshot each,
    recorded in ``result``.  False when nothing changed: no snapshot then, only the units recorded as applied."""
    written = Written()
    clock = result.timings
    try:
        if plan.engine.num_rows:
            with timed(clock, "engines"):
                run_engines(ctx, result.locale, plan, tables, now, written)
        with timed(clock, "updates"):
            _write_updates(ctx, plan, tables, now, written)
        result.changes = _changes(plan, written)
        result.tally = combine(written.tallies)
        result.rejected = written.rejected[:SAMPLE_CAP]
        result.stages = written.stages
        props = _properties(ctx, result, pending)
        units = [u.key(ctx.settings) for u in pending]
        if not written.clips and not written.audio:
            commits.record_applied(tables.load_clips, units, ctx.shard, ctx.run_id)
            return False
        with timed(clock, "commit"):
            table = _commit(ctx, plan, tables, written, props, units)
    except (commits.CommitUnknown, commits.CommitInterrupted):
        log.error("the commit's outcome is unknown: its data files are kept (the table's if it landed; a "
                  "later run's sweep removes them if it did not)")  # fmt: skip
        raise
    except BaseException:
        # Known not committed: the previous snapshot is the table still; these files are nobody's.
        commits.delete_files(tables.clips, written.clips)
        commits.delete_files(tables.audio, written.audio)
        raise
    snap = table.current_snapshot()
    result.snapshot_id = snap.snapshot_id
    result.tag = table_upkeep.tag(tables.load_clips, snap.snapshot_id, ctx.cfg.table.tag or f"run-{now:%Y%m%dT%H%M%SZ}")
    result.files = [
        DataFileInfo(table=tables.clips_id, path=f.file_path, rows=f.record_count, bytes=f.file_size_in_bytes)
        for f in written.clips
    ]
    return True


def _commit(
    ctx: RunContext, plan: TablePlan, tables: Tables, written: Written, props: dict[str, str], units: list[str]
) -> Table:
    """The audio appended, then the clips upserted; a retried commit rebuilds contested rows on the other
    writer's (``reconcile_rows``)."""
    if written.audio:
        audio_table.append_audio(tables.load_audio, written.audio, props)
        written.audio = []  # committed (or dropped as duplicates): no longer ours to delete
    return commits.upsert(
        tables.load_clips,
        written.clips,
        written.all_ids(),
        props,
        units=units,
        shard=ctx.shard,
        run_id=ctx.run_id,
        replaced=plan.replaced(),
        reconcile=lambda ours, theirs: reconcile_rows(ours, theirs, plan.decide),
    )


def _provenance(t: pa.Table, ctx: RunContext, now: datetime) -> pa.Table:
    n = t.num_rows
    for name, value, typ in (
        ("updated_run", ctx.run_id, pa.string()),
        ("updated_at", now, pa.timestamp("us", tz="UTC")),
        ("code_version", code_version(), pa.string()),
    ):
        col = pa.array([value] * n, typ)
        t = (
            t.set_column(t.schema.get_field_index(name), name, col)
            if name in t.column_names
            else t.append_column(name, col)
        )
    return t


def _write_updates(ctx: RunContext, plan: TablePlan, tables: Tables, now: datetime, out: Written) -> None:
    """The plan's metadata updates as data files, streamed (a file per ~128 MiB of rows); what they change,
    counted as the rows pass."""

    def rows() -> Iterator[pa.Table]:
        for batch in plan.updates():
            before = batch.column(OLD_KEPT)
            kept = pc.fill_null(batch.column(KEPT), False)
            out.changes["added"] += batch.num_rows - (len(before) - before.null_count)
            flipped = pc.fill_null(pc.not_equal(kept, before), False)
            out.changes["redecided"] += pc.sum(flipped).as_py() or 0
            out.changes["withdrawn"] += pc.sum(pc.and_(flipped, pc.fill_null(before, False))).as_py() or 0
            t = conform(_provenance(batch, ctx, now), tables.schema)
            out.ids.append(t.column(ID))
            out.tallies.append(tally_of(t))
            if len(out.rejected) < SAMPLE_CAP:
                out.rejected += rejected_sample(t, SAMPLE_CAP - len(out.rejected))
            yield t

    try:
        out.clips += commits.write_stream(tables.clips, tables.schema, rows())
    finally:
        cores.shutdown()  # the processes that measured WER again, if any, are not needed past the updates


def _changes(plan: TablePlan, written: Written) -> dict[str, int]:
    """What changed tonight: clips added, scored again, updated, re-decided and withdrawn."""
    c = Counter({k: written.changes.get(k, 0) for k in ("added", "redecided", "withdrawn", "absent")})
    c["rescored"] = plan.engine_kept_before.num_rows
    c["engine_rows"] = plan.engine.num_rows
    for key in ("updated", "unchanged", "held", "unscored", "not_selected"):
        c[key] = plan.counts.get(key, 0)
    c["deleted_from_release"] = plan.counts.get("withdrawn", 0)
    c["selected"] = plan.counts.get("selected", 0)  # the clips the curated list holds (in this shard)
    return dict(c)


def _properties(ctx: RunContext, result: LocaleResult, pending: list) -> dict[str, str]:
    """The snapshot's summary: who made it, from what, and what it holds (LocaleResult, as JSON)."""
    return {
        "curate.run-id": ctx.run_id,
        "curate.table": result.table,
        "curate.locale": result.locale,
        "curate.split": ctx.split or "",
        "curate.releases": ",".join(sorted({u.release for u in pending if u.release})),
        "curate.sources": json.dumps([u.uri for u in pending]),
        "curate.request-key": ctx.settings,
        "curate.shard": f"{ctx.shard[0]}/{ctx.shard[1]}",
        "curate.engine-rows": str(result.changes.get("engine_rows", 0)),
        "curate.counts": result.tally.counts.model_dump_json(by_alias=True),
        "curate.changes": json.dumps(result.changes, sort_keys=True),
        "curate.tally": result.tally.model_dump_json(by_alias=True),
        "curate.models": json.dumps(
            {k: v.model_dump(exclude_none=True) for k, v in model_info(ctx.cfg, ctx.models).items()}
        ),
        "curate.code-version": code_version(),
    }
