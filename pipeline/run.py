"""Run the curation once: per locale, plan against the dataset's table, run the engines only on the clips
that need them, check every id came out once, and commit one snapshot.

Every input problem, an output that is not a table root, and an unreachable catalog are raised before
Ray or a model starts.  A run whose every unit of work the table has applied already does nothing:
no Ray, no engine, no snapshot.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import DataContext

from pipeline.columns import ID, KEPT
from pipeline.config import CurationConfig, refuse_secrets
from pipeline.dag import Models, build_curation_dataset, curation_stages
from pipeline.io.cv_view import releases_json
from pipeline.io.inputs import VIEW_ONLY, ParquetInputs, ReleaseInputs, open_inputs
from pipeline.io.table_sink import SAMPLE_CAP, TableSink, rejected_sample, tally_of
from pipeline.languages import hears_every_language, language_check, transcriber_for, whisper_language
from pipeline.manifest import DataFileInfo, LocaleResult, ModelInfo, RunResult, Tally, combine
from pipeline.models import resolve_model
from pipeline.progress import ConsoleProgress, start_counter, stop_counter
from pipeline.ray_init import ensure_ray
from pipeline.releases import release_key
from pipeline.shards import agreement_key, engine_key, settings_key
from pipeline.stages.gates import build_gates, decide_table, kept_statuses, metadata_gates
from pipeline.storage import resolve_filesystem
from pipeline.table import commit as commits
from pipeline.table import writers
from pipeline.table.catalog import TableRoot, check_output_root, load_or_create, table_root
from pipeline.table.plan import OLD_KEPT, Rules, TablePlan, plan_table
from pipeline.table.plan_rows import reconcile_rows
from pipeline.table.scan import kept_counts, load_existing
from pipeline.table.schema import AUDIO_TABLE, clips_schema, conform
from pipeline.table.workspace import Workspace
from pipeline.version import code_version

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from pipeline.console import Console

log = logging.getLogger("pipeline")


class RowAccountingError(RuntimeError):
    """Rows out did not equal rows in: something was lost or duplicated."""


def check_ids(expected: Counter, written: Counter) -> None:
    """Every id that went to the engines came out exactly once: none lost, none doubled."""
    if expected != written:
        lost, extra = expected - written, written - expected
        raise RowAccountingError(
            f"ids out differ from ids in: {sum(lost.values())} lost (e.g. {list(lost)[:5]}), "
            f"{sum(extra.values())} extra (e.g. {list(extra)[:5]})"
        )


def resolve_models(cfg: CurationConfig) -> Models:
    return Models(transcriber=resolve_model(cfg.transcriber.model), judge=resolve_model(cfg.judge.model))


def locale_setups(cfg: CurationConfig, models: Models, locales: list[str]) -> dict[str, tuple[CurationConfig, Models]]:
    """Per locale: the config its clips run under (its Whisper, told its language) and the models."""
    t = cfg.transcriber
    main_hears_all = hears_every_language(t.model, models.transcriber.path)
    resolved = {t.model: models.transcriber}
    out = {}
    for locale in locales:
        ref = transcriber_for(locale, t.model, main_hears_all, t.multilingual_model)
        if ref not in resolved:
            resolved[ref] = resolve_model(ref)
        language = whisper_language(locale)
        if language is None:
            log.warning("%s: Whisper has no language for this locale; its clips are gated on agreement alone "
                        "(language_check: unsupported)", locale)  # fmt: skip
        judged = cfg.judge.locales is None or locale in cfg.judge.locales
        if not judged:
            log.info("%s: the judge scores only %s (judge.locales); the gates decide alone", locale,
                     ", ".join(cfg.judge.locales))  # fmt: skip
        local = cfg.model_copy(
            update={
                "transcriber": t.model_copy(update={"model": ref, "language": language}),
                "judge": cfg.judge.model_copy(update={"enabled": judged}),
            }
        )
        out[locale] = (local, Models(transcriber=resolved[ref], judge=models.judge))
    return out


@dataclass
class RunContext:
    cfg: CurationConfig
    root: TableRoot
    inputs: ParquetInputs | ReleaseInputs
    models: Models
    split: str | None
    run_id: str
    shard: tuple[int, int]
    force: bool
    console: Console | None

    @property
    def settings(self) -> str:
        return settings_key(self.cfg, self.models, self.split)


def run_curation(
    cfg: CurationConfig,
    sources: list[str],
    output: str,
    *,
    split: str | None = None,
    run_id: str | None = None,
    shard: tuple[int, int] = (0, 1),
    force: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Curate ``sources`` (releases or Parquet) into the dataset's tables at ``output``."""
    started = time.time()
    run_id = run_id or uuid.uuid4().hex[:12]
    refuse_secrets(cfg, where="curate run")  # engine_env becomes Ray actors' runtime env: no secrets
    cfg, hardware = cfg.for_this_machine()
    log.info("hardware: %s", hardware)
    check_output_root(output)
    root = table_root(output, cfg)
    if not root.fresh:
        root.catalog()  # an unreachable catalog fails here, before any input is read or engine started
    inputs = open_inputs(
        sources,
        cfg.storage,
        split=split,
        default_locale=cfg.table.locale or cfg.transcriber.language or "en",
        max_tsv_bytes=cfg.reader.max_tsv_bytes,
    )
    models = resolve_models(cfg)
    # Every locale's Whisper is chosen (and resolved) before any work: one that cannot be heard stops here.
    per_locale = locale_setups(cfg, models, sorted(inputs.locales()))
    split = getattr(inputs, "split", split)
    root.preflight(cfg.storage)
    for note in getattr(inputs, "notes", []):
        log.warning("%s", note)
    results = []
    for locale, (locale_cfg, locale_models) in per_locale.items():
        ctx = RunContext(locale_cfg, root, inputs, locale_models, split, run_id, shard, force, console)
        results.append(curate_locale(ctx, locale))
    return RunResult(
        run_id=run_id,
        created_at=datetime.now(UTC).isoformat(),
        output=output,
        catalog=root.catalog_uri,
        form=inputs.form,
        split=split,
        sources=list(sources),
        notes=list(getattr(inputs, "notes", [])),
        locales=results,
        wall_time_s=round(time.time() - started, 2),
        models=_model_info(cfg, models),
        config=cfg.public_dict(),
        hardware=hardware,
        shard={"index": shard[0], "count": shard[1]} if shard[1] > 1 else None,
    )


def _model_info(cfg: CurationConfig, models: Models) -> dict[str, ModelInfo]:
    return {
        "transcriber": ModelInfo(
            backend=cfg.transcriber.backend, ref=models.transcriber.ref, revision=models.transcriber.revision
        ),
        "judge": ModelInfo(ref=models.judge.ref, revision=models.judge.revision, engine="vllm"),
    }


@contextlib.contextmanager
def timed(clock: dict[str, float], step: str):
    """Adds the block's seconds to ``clock[step]``, and logs the driver's memory after it."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[step] = round(clock.get(step, 0.0) + time.perf_counter() - t0, 3)
        log.info("%s took %.1f s; driver memory %s", step, time.perf_counter() - t0, _memory())


def _memory() -> str:
    try:
        with open("/proc/self/status") as f:
            got = {k: v.split()[0] for k, _, v in (line.partition(":") for line in f) if k in ("VmRSS", "VmHWM")}
        return f"{int(got['VmRSS']) >> 10} MiB (peak {int(got['VmHWM']) >> 10} MiB)"
    except (OSError, KeyError, ValueError):
        return "unknown"


@dataclass
class Tables:
    """One locale's two tables, opened (created if new) for this run."""

    catalog: Any
    clips_id: str
    audio_id: str
    clips: Table
    audio: Table
    schema: pa.Schema  # the clips table's, with the input's own pass-through columns
    resolve: Callable[[str], Any]

    def load_clips(self) -> Table:
        return self.catalog.load_table(self.clips_id)

    def load_audio(self) -> Table:
        return self.catalog.load_table(self.audio_id)


KEPT_STATUSES = "curate.kept-statuses"


class MixedSplitsError(ValueError):
    """A run would decide ``kept`` under other Common Voice statuses than the table was curated with."""


def check_kept_statuses(table: Table | None, cfg: CurationConfig, split: str | None) -> None:
    """``kept`` is a clip's verdict under every gate, Common Voice's status among them; which split it is in
    is its ``split`` (and its history), never ``kept``.  Curating train, dev, test or validated into one
    table gives each clip one verdict (they all keep validated clips).  Curating ``other`` (which keeps
    other clips too) into the same table would flip every other clip's verdict at each run: refused."""
    if table is None:
        return
    have = table.properties.get(KEPT_STATUSES)
    want = ",".join(sorted(kept_statuses(split, cfg.gates.keep_cv_status)))
    if have is not None and have != want:
        raise MixedSplitsError(
            f"{'.'.join(table.name())} keeps clips of status {have}; curating split {split!r} keeps {want}, which "
            "would decide every clip again under other rules at each run. Curate it into another output root, "
            "or set gates.keep_cv_status to the same statuses for both"
        )


def _remember_kept_statuses(table: Table, cfg: CurationConfig, split: str | None) -> None:
    want = ",".join(sorted(kept_statuses(split, cfg.gates.keep_cv_status)))
    if table.properties.get(KEPT_STATUSES) != want:
        with table.transaction() as txn:
            txn.set_properties({KEPT_STATUSES: want})


def open_tables(ctx: RunContext, locale: str) -> Tables:
    """The locale's tables, and their upkeep before any write: orphan files of dead writers removed."""
    cfg = ctx.cfg
    clips_id, audio_id = ctx.root.identifiers(locale)
    catalog = ctx.root.catalog()
    schema = clips_schema(ctx.inputs.passthrough())
    clips = load_or_create(catalog, clips_id, schema)
    _remember_kept_statuses(clips, cfg, ctx.split)
    clips = catalog.load_table(clips_id)
    audio = load_or_create(catalog, audio_id, AUDIO_TABLE)
    resolve = lambda uri: resolve_filesystem(uri, cfg.storage)  # noqa: E731
    for t in (clips, audio):
        gone = commits.remove_orphans(t, cfg.table.orphan_min_age_s, resolve, cfg.table.writer_ttl_s)
        if gone:
            log.info("removed %d orphan data file(s) of %s (a dead writer's)", len(gone), ".".join(t.name()))
    return Tables(catalog, clips_id, audio_id, clips, audio, schema, resolve)


def make_plan(ctx: RunContext, ws: Workspace, pending: list, tables: Tables) -> TablePlan:
    """The table's rows beside the view in the workspace, then the plan over both."""
    cfg = ctx.cfg
    load_existing(ws, tables.clips, tables.schema, ctx.shard)
    newest = max(ctx.inputs.full_releases(pending), key=release_key, default=None) if cfg.limit is None else None
    rules = Rules(
        engine_key=engine_key(cfg, ctx.models),
        split=ctx.inputs.curated_list,
        newest_full=newest,
        force=ctx.force,
        shard=ctx.shard,
        limit=cfg.limit,
    )
    decide = functools.partial(
        decide_table,
        gates=build_gates(cfg, ctx.split),
        unscored_gates=metadata_gates(cfg, ctx.split),
        language=cfg.transcriber.language,
        fold_diacritics=cfg.gates.fold_diacritics,
        agreement_key=agreement_key(cfg),
    )
    snap = tables.clips.current_snapshot()
    plan = plan_table(ws, rules, decide, base=snap.snapshot_id if snap else None)
    log.info("%s: plan %s, %d for the engines", tables.clips_id, dict(plan.counts), plan.engine.num_rows)
    return plan


@dataclass
class Written:
    """Data files a run wrote, not yet committed, and what they hold."""

    clips: list = field(default_factory=list)
    audio: list = field(default_factory=list)
    ids: list = field(default_factory=list)  # arrays of the ids written
    tallies: list = field(default_factory=list)
    rejected: list = field(default_factory=list)
    changes: Counter = field(default_factory=Counter)

    def all_ids(self) -> pa.ChunkedArray:
        return pa.chunked_array([pa.array(i, pa.string()) if isinstance(i, list) else i.cast(pa.string())
                                 for i in self.ids], pa.string())  # fmt: skip


def curate_locale(ctx: RunContext, locale: str) -> LocaleResult:
    cfg = ctx.cfg
    clips_id, audio_id = ctx.root.identifiers(locale)
    result = LocaleResult(
        locale=locale,
        table=clips_id,
        audio_table=audio_id,
        transcriber=f"{ctx.models.transcriber.ref}@{ctx.models.transcriber.revision}",
        language=cfg.transcriber.language,
        language_check=language_check(locale),
        judge=f"{ctx.models.judge.ref}" if cfg.judge.enabled else "off (judge.locales)",
    )
    known = ctx.root.existing(clips_id)
    check_kept_statuses(known, cfg, ctx.split)
    ledger = commits.read_ledger(known) if known is not None else {}
    units = ctx.inputs.units(locale)
    keyed = {u.key(ctx.settings): u for u in units}
    pending = [u for key, u in keyed.items() if ctx.force or not commits.is_applied(ledger, key, ctx.shard)]
    if not pending:
        result.nothing_to_do = True
        if ctx.console:
            ctx.console.say(f"{clips_id}: nothing to do: every input is already applied ({len(units)} source(s))")
        return result
    result.units = [u.uri for u in pending]
    now = datetime.now(UTC)
    clock = result.timings
    with Workspace(cfg.table.plan_memory_mb) as ws:
        # Every TSV is read and checked before anything is written: a malformed release leaves no trace.
        with timed(clock, "view"):
            ctx.inputs.load_view(ws, locale, pending)
        tables = open_tables(ctx, locale)
        # Writers record their intent beside each table's data: another run's sweep spares these files.
        with writers.writing([tables.clips, tables.audio], ctx.run_id, tables.resolve):
            with timed(clock, "plan"):
                plan = make_plan(ctx, ws, pending, tables)
            table, props, written = _engines_and_commit(ctx, locale, result, pending, plan, tables, now)
    if table is None:  # nothing changed: no snapshot, no tag; the units are recorded as applied
        result.nothing_to_do = True
        result.table_rows, result.table_kept = kept_counts(tables.load_clips())
        if ctx.console:
            ctx.console.say(f"{clips_id}: nothing changed: every clip the inputs list is already up to date")
        log.info("%s: nothing changed (%s); no snapshot", clips_id, result.changes)
        return result
    snap = table.current_snapshot()
    result.snapshot_id = snap.snapshot_id
    result.tag = commits.tag(table, snap.snapshot_id, cfg.table.tag or f"run-{now:%Y%m%dT%H%M%SZ}")
    result.files = [
        DataFileInfo(table=clips_id, path=f.file_path, rows=f.record_count, bytes=f.file_size_in_bytes)
        for f in written.clips
    ]
    with timed(clock, "upkeep"):
        _upkeep(ctx, tables.catalog, clips_id, audio_id, props)
    with timed(clock, "count"):
        result.table_rows, result.table_kept = kept_counts(tables.load_clips())
    log.info("%s: seconds per step %s", clips_id, {k: round(v, 1) for k, v in clock.items()})
    log.info("committed %s snapshot %s (%s): %s", clips_id, result.snapshot_id, result.tag, result.changes)
    return result


def _engines_and_commit(
    ctx: RunContext, locale: str, result: LocaleResult, pending: list, plan: TablePlan, tables: Tables, now: datetime
) -> tuple[Table | None, dict[str, str], Written]:
    """The engines on the plan's new clips, the updates written, both tables committed: one snapshot each.
    No table (None) when nothing changed: no snapshot then, only the units recorded as applied."""
    written = Written()
    clock = result.timings
    try:
        if plan.engine.num_rows:
            with timed(clock, "engines"):
                _run_engines(ctx, plan, tables, now, written)
        with timed(clock, "updates"):
            _write_updates(ctx, plan, tables, now, written)
        result.changes = _changes(plan, written)
        result.tally = combine(written.tallies)
        result.rejected = written.rejected[:SAMPLE_CAP]
        props = _properties(ctx, locale, tables.clips_id, pending, result)
        units = [u.key(ctx.settings) for u in pending]
        if not written.clips and not written.audio:
            commits.record_applied(tables.load_clips, units, ctx.shard, ctx.run_id)
            return None, props, written
        with timed(clock, "commit"):
            if written.audio:
                commits.append_audio(tables.load_audio, written.audio, props)
                written.audio = []  # committed (or dropped as duplicates): no longer ours to delete
            table = commits.upsert(
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
    except commits.CommitUnknown:
        log.error("the commit's outcome is unknown: its data files are kept (the table's if it landed; a "
                  "later run's sweep removes them if it did not)")  # fmt: skip
        raise
    except BaseException:
        # Known not committed: the previous snapshot is the table still; these files are nobody's.
        commits.delete_files(tables.clips, written.clips)
        commits.delete_files(tables.audio, written.audio)
        raise
    return table, props, written


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

    out.clips += commits.write_stream(tables.clips, tables.schema, rows())


def _run_engines(ctx: RunContext, plan: TablePlan, tables: Tables, now: datetime, out: Written) -> None:
    """Whisper and the judge on the plan's engine rows; their uncommitted files, ids and tally into ``out``."""
    cfg = ctx.cfg
    rows = releases_json(plan.engine).drop_columns(["releases"])
    columns = [c for c in rows.column_names if c not in VIEW_ONLY]
    ensure_ray(cfg)
    constants = {
        "engine_key": engine_key(cfg, ctx.models),
        "agreement_key": agreement_key(cfg),
        "processed_run": ctx.run_id,
        "updated_run": ctx.run_id,
        "request_key": ctx.settings,
        "transcriber": f"{ctx.models.transcriber.ref}@{ctx.models.transcriber.revision}",
        "judge": f"{ctx.models.judge.ref}@{ctx.models.judge.revision}",
        "code_version": code_version(),
        "processed_at": now,
        "updated_at": now,
    }
    sink = TableSink(
        tables.clips, tables.audio if cfg.keep_audio else None, tables.schema, constants, cfg.table.rows_per_file
    )
    stages = curation_stages(cfg, ctx.models, columns, ctx.split)
    counter, name, display = None, None, None
    if ctx.console is not None:
        counter, name = start_counter(ctx.run_id)
        where = ", ".join(ctx.inputs.describe()["inputs"])[:100]
        ctx.console.say(f"curating {rows.num_rows} clips from {where} into {tables.clips_id}")
        counted = [s.name for s in stages if s.counted]
        display = ConsoleProgress(counter, counted, rows.num_rows, ctx.console.out, ctx.console.tty).start()
    # Bounded: an engine that cannot start (or an actor that cannot be placed) fails the run.
    DataContext.get_current().execution_no_progress_timeout_s = cfg.stall_timeout_s
    try:
        ds = build_curation_dataset(ctx.inputs.dataset(rows, cfg), columns, stages, cfg, progress=name)
        ds.write_datasink(sink)
    except Exception as exc:
        if display is not None:
            exc.waiting_stage = display.first_unfinished()  # type: ignore[attr-defined]
        _drop_written(sink, tables)
        raise
    finally:
        if display is not None:
            display.stop()
            stop_counter(counter)
    out.clips += [f for r in sink.results for f in r["clips"]]
    out.audio += [f for r in sink.results for f in r["audio"]]
    ids = [i for r in sink.results for i in r["ids"]]
    try:
        check_ids(Counter(rows.column(ID).to_pylist()), Counter(ids))
    except RowAccountingError:
        _drop_written(sink, tables)
        out.clips, out.audio = [], []
        raise
    out.ids.append(ids)
    out.tallies += [Tally.model_validate(r["tally"]) for r in sink.results]
    out.rejected += [row for r in sink.results for row in r["rejected"]][:SAMPLE_CAP]
    # What the engines changed: new clips added, and the kept flag of clips scored again.
    kept_now = {i: k for r in sink.results for i, k in r["kept"].items()}
    before = dict(
        zip(
            plan.engine_kept_before.column(ID).to_pylist(),
            plan.engine_kept_before.column(KEPT).to_pylist(),
            strict=True,
        )
    )
    for rid, kept in kept_now.items():
        if rid not in before:
            out.changes["added"] += 1
        elif bool(before[rid]) != bool(kept):
            out.changes["redecided"] += 1
            out.changes["withdrawn"] += bool(before[rid]) and not kept


def _drop_written(sink: TableSink, tables: Tables) -> None:
    commits.delete_files(tables.clips, [f for r in sink.results for f in r["clips"]])
    commits.delete_files(tables.audio, [f for r in sink.results for f in r["audio"]])


def _changes(plan: TablePlan, written: Written) -> dict[str, int]:
    """What changed tonight: clips added, scored again, updated, re-decided and withdrawn."""
    c = Counter({k: written.changes.get(k, 0) for k in ("added", "redecided", "withdrawn")})
    c["rescored"] = plan.engine_kept_before.num_rows
    c["engine_rows"] = plan.engine.num_rows
    for key in ("updated", "unchanged", "held", "unscored", "not_selected"):
        c[key] = plan.counts.get(key, 0)
    c["deleted_from_release"] = plan.counts.get("withdrawn", 0)
    return dict(c)


def _properties(ctx: RunContext, locale: str, table: str, pending, result: LocaleResult) -> dict[str, str]:
    """The snapshot's summary: who made it, from what, and what it holds (LocaleResult, as JSON)."""
    return {
        "curate.run-id": ctx.run_id,
        "curate.table": table,
        "curate.locale": locale,
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
            {k: v.model_dump(exclude_none=True) for k, v in _model_info(ctx.cfg, ctx.models).items()}
        ),
        "curate.code-version": code_version(),
    }


def _upkeep(ctx: RunContext, catalog, clips_id: str, audio_id: str, props: dict[str, str]) -> None:
    """Expire what is past retention, compact small files: after the commit, never in its way."""
    t = ctx.cfg.table
    upkeep = {"curate.run-id": ctx.run_id, "curate.operation": "compaction"}
    for ident in (clips_id, audio_id):
        try:
            commits.expire(catalog.load_table(ident), t.retention_days)
            replaced = commits.compact(
                lambda ident=ident: catalog.load_table(ident), t.target_file_mb << 20, t.compact_min_files, upkeep
            )
            if replaced:
                log.info("compacted %d small data files of %s", replaced, ident)
        except Exception as exc:  # upkeep is retried next run; the data is committed
            log.warning("upkeep of %s failed, left for the next run: %s: %s", ident, type(exc).__name__, exc)
