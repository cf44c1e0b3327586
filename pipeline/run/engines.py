"""The engines step: the DAG (Whisper, the judge, the gates) on the plan's clips that need it, written as
uncommitted data files, with every id checked to come out exactly once."""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data import DataContext

from pipeline.columns import DURATION, ERROR, ID, KEPT, STAGE, TRANSCRIPT
from pipeline.commonvoice.datasource import absent_clips
from pipeline.commonvoice.reader import MISSING_CLIP
from pipeline.commonvoice.view import releases_json, tarball_members
from pipeline.dag import build_curation_dataset, curation_stages
from pipeline.io.inputs import VIEW_ONLY
from pipeline.io.table_sink import SAMPLE_CAP, WRITE_REMOTE_ARGS, TableSink
from pipeline.result import Tally, add_stats
from pipeline.run.context import RunContext
from pipeline.run.tables import Tables
from pipeline.runtime.ray_init import ensure_ray
from pipeline.runtime.scratch import engine_scratch
from pipeline.runtime.version import code_version
from pipeline.shards import agreement_key, engine_key
from pipeline.show.progress import ConsoleProgress, stage_stats, start_counter, start_line, stop_counter
from pipeline.stage import READ
from pipeline.stages.gates import NAME as GATES
from pipeline.table import commit as commits
from pipeline.table.plan import TablePlan
from pipeline.table.schema import conform

log = logging.getLogger("pipeline")


class RowAccountingError(RuntimeError):
    """Rows out did not equal rows in: something was lost or duplicated."""


def _id_counts(ids: pa.Array | pa.ChunkedArray, name: str) -> pa.Table:
    return (
        pa.table({ID: pc.cast(ids, pa.string())}).group_by(ID).aggregate([([], "count_all")]).rename_columns([ID, name])
    )


def _sorted(ids: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    ids = pa.chunked_array([ids]) if isinstance(ids, pa.Array) else ids
    ids = pc.cast(ids, pa.string())
    return pc.take(ids, pc.sort_indices(ids))


def check_ids(expected: pa.Array | pa.ChunkedArray, written: pa.Array | pa.ChunkedArray) -> None:
    """Every id that went to the engines came out exactly once: none lost, none doubled.  Columnar: a first
    night holds every clip of the release (2 M+ of English).  The two sorted are equal when all is well (a
    quarter of the memory of counting each id and joining the counts, 800 MB at 2 M); only a mismatch is
    counted, to name the ids."""
    if len(expected) == len(written) and _sorted(expected).equals(_sorted(written)):
        return
    both = _id_counts(expected, "n_in").join(_id_counts(written, "n_out"), ID, join_type="full outer")
    n_in, n_out = (pc.fill_null(both.column(c), 0) for c in ("n_in", "n_out"))
    lost, extra = pc.max_element_wise(pc.subtract(n_in, n_out), 0), pc.max_element_wise(pc.subtract(n_out, n_in), 0)
    n_lost, n_extra = pc.sum(lost).as_py() or 0, pc.sum(extra).as_py() or 0
    if n_lost or n_extra:
        lost_ids = both.filter(pc.greater(lost, 0)).column(ID).slice(0, 5).to_pylist()
        extra_ids = both.filter(pc.greater(extra, 0)).column(ID).slice(0, 5).to_pylist()
        raise RowAccountingError(
            f"ids out differ from ids in: {n_lost} lost (e.g. {lost_ids}), {n_extra} extra (e.g. {extra_ids})"
        )


@dataclass
class Written:
    """Data files a run wrote, not yet committed, and what they hold."""

    clips: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    ids: list = field(default_factory=list)  # arrays of the ids written
    tallies: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    changes: Counter = field(default_factory=Counter)
    stages: dict = field(default_factory=dict)  # per stage: rows in, out, quarantined, seconds

    def all_ids(self) -> pa.ChunkedArray:
        return pa.chunked_array([pa.array(i, pa.string()) if isinstance(i, list) else i.cast(pa.string())
                                 for i in self.ids], pa.string())  # fmt: skip


def run_engines(ctx: RunContext, locale: str, plan: TablePlan, tables: Tables, now: datetime, out: Written) -> None:
    """Whisper and the judge on the plan's engine rows; their uncommitted files, ids and tally into ``out``."""
    cfg = ctx.cfg
    # The DAG carries the history as JSON text; rows stored without it (absent clips) keep the list as it is.
    rows = releases_json(plan.engine)
    columns = [c for c in rows.column_names if c not in VIEW_ONLY and c != "releases"]
    absent = pa.array([False] * rows.num_rows)
    if ctx.inputs.form == "common-voice":
        members = functools.partial(tarball_members, plan.ws)
        absent = absent_clips(rows, ctx.inputs.releases, cfg.storage, cfg.reader.list_clips_from, members)
    todo = rows.filter(pc.invert(absent)).drop_columns(["releases"])
    ensure_ray(cfg)
    constants = {
        "engine_key": engine_key(cfg, ctx.models),
        "agreement_key": agreement_key(cfg),
        "processed_run": ctx.run_id,
        "updated_run": ctx.run_id,
        "request_key": ctx.settings,
        "transcriber": f"{ctx.models.transcriber.ref}@{ctx.models.transcriber.revision}",
        # Null where the judge is off (judge.locales, judge.enabled): no model scored these rows.
        "judge": f"{ctx.models.judge.ref}@{ctx.models.judge.revision}" if cfg.judge.enabled else None,
        "code_version": code_version(),
        "processed_at": now,
        "updated_at": now,
    }
    sink = TableSink(
        tables.clips, tables.audio if cfg.keep_audio else None, tables.schema, constants, cfg.table.rows_per_file
    )
    # The engines' temporary files go to a folder of this run's, removed when they are done.
    with engine_scratch() as scratch:
        stages = curation_stages(cfg, ctx.models, columns, ctx.split, scratch)
        counter, name = start_counter(ctx.run_id)  # every stage counts itself into it
        display = None
        if ctx.console is not None:
            ctx.console.say(start_line(rows.num_rows, ctx.inputs.describe(), locale, tables.clips_id))
            if todo.num_rows < rows.num_rows:
                ctx.console.say(f"note: {rows.num_rows - todo.num_rows} of them are not in their release's clips/: "
                                f"stored quarantined ({MISSING_CLIP}), not read")  # fmt: skip
            counted = [s.name for s in stages if s.counted]
            display = ConsoleProgress(counter, counted, todo.num_rows, ctx.console.out, ctx.console.tty).start()
        # Bounded: an engine that cannot start (or an actor that cannot be placed) fails the run.
        DataContext.get_current().execution_no_progress_timeout_s = cfg.stall_timeout_s
        try:
            held = np.flatnonzero(absent.to_numpy(zero_copy_only=False))
            out.changes["absent"] += len(held)  # planned for the engines, stored without them
            for start in range(0, len(held), HELD_ROWS_PER_FILE):  # a file's rows at a time, never all copied
                some = rows.take(pa.array(held[start : start + HELD_ROWS_PER_FILE]))
                sink.results += sink.write([held_at_read(some, stages, tables)], None)
            if todo.num_rows:
                ds = build_curation_dataset(ctx.inputs.dataset(todo, cfg), columns, stages, cfg, progress=name)
                ds.write_datasink(sink, ray_remote_args=WRITE_REMOTE_ARGS)
        except BaseException as exc:  # Ctrl-C too: what this run wrote and did not commit goes
            if display is not None and isinstance(exc, Exception):
                exc.waiting_stage = display.first_unfinished()  # type: ignore[attr-defined]
            drop_written(sink, tables)
            raise
        finally:
            if display is not None:
                display.stop()
            for stage, totals in stage_stats(counter).items():
                add_stats(out.stages, stage, **totals)
            stop_counter(counter)
    out.clips += [f for r in sink.results for f in r["clips"]]
    out.audio += [f for r in sink.results for f in r["audio"]]
    written = pa.table(
        {
            ID: pa.chunked_array([pc.cast(r["ids"], pa.string()) for r in sink.results], pa.string()),
            KEPT: pa.chunked_array([pc.cast(r["kept"], pa.bool_()) for r in sink.results], pa.bool_()),
        }
    )
    try:
        check_ids(rows.column(ID), written.column(ID))
    except RowAccountingError:
        drop_written(sink, tables)
        out.clips, out.audio = [], []
        raise
    out.ids.append(written.column(ID))
    out.tallies += [Tally.model_validate(r["tally"]) for r in sink.results]
    out.rejected += [row for r in sink.results for row in r["rejected"]][:SAMPLE_CAP]
    out.changes.update(kept_changes(plan.engine_kept_before, written))


def kept_changes(before: pa.Table, now: pa.Table) -> Counter:
    """What the engines changed, from (id, kept) before (the engine rows the table held) and now: clips
    added, and clips scored again whose kept flag moved (re-decided; withdrawn: kept before, not now)."""
    old = before.select([ID, KEPT]).rename_columns([ID, "_before"])
    both = now.select([ID, KEPT]).join(old.cast(pa.schema([(ID, pa.string()), ("_before", pa.bool_())])), ID)
    was, kept = pc.fill_null(both.column("_before"), False), pc.fill_null(both.column(KEPT), False)
    known = pc.is_valid(both.column("_before"))
    moved = pc.and_(known, pc.not_equal(was, kept))
    return Counter(
        {
            "added": pc.sum(pc.invert(known)).as_py() or 0,
            "redecided": pc.sum(moved).as_py() or 0,
            "withdrawn": pc.sum(pc.and_(moved, was)).as_py() or 0,
        }
    )


# Rows per data file of the clips stored quarantined without the DAG (a folder's absent clips).
HELD_ROWS_PER_FILE = 100_000


def held_at_read(rows: pa.Table, stages: list, tables: Tables) -> pa.Table:
    """``rows`` whose clip the release lacks, as the DAG would have stored them: quarantined at read (no
    audio, an empty transcript, no verdict of the gates), without passing through its stages."""
    n = rows.num_rows
    batch = conform(rows, tables.schema)
    for col, values in (
        (ERROR, pa.array([MISSING_CLIP] * n, pa.string())),
        (STAGE, pa.array([READ] * n, pa.string())),
        (DURATION, pa.array([0.0] * n, pa.float64())),
        (TRANSCRIPT, pa.array([""] * n, pa.string())),
    ):
        batch = batch.set_column(batch.schema.get_field_index(col), col, values)
    gates = next(s for s in stages if s.name == GATES)
    return gates.call(batch.drop_columns([c for c in gates.writes if c in batch.column_names]))


def drop_written(sink: TableSink, tables: Tables) -> None:
    commits.delete_files(tables.clips, [f for r in sink.results for f in r["clips"]])
    commits.delete_files(tables.audio, [f for r in sink.results for f in r["audio"]])
