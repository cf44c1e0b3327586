"""Run the curation once: per locale, plan against the dataset's table, run the engines only on the clips
that need them, check every id came out once, and commit one snapshot.

Every input problem, an output that is not a table root, and an unreachable catalog are raised before
Ray or a model starts.  A run whose every unit of work the table has applied already does nothing:
no Ray, no engine, no snapshot.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data import DataContext

from pipeline.columns import ID, KEPT
from pipeline.config import CurationConfig, refuse_secrets
from pipeline.dag import Models, build_curation_dataset, curation_stages
from pipeline.io.inputs import VIEW_ONLY, ParquetInputs, ReleaseInputs, open_inputs
from pipeline.io.table_sink import SAMPLE_CAP, TableSink, rejected_sample, tally_of
from pipeline.languages import hears_every_language, language_check, transcriber_for, whisper_language
from pipeline.manifest import DataFileInfo, LocaleResult, ModelInfo, RunResult, Tally, combine
from pipeline.models import resolve_model
from pipeline.progress import ConsoleProgress, start_counter, stop_counter
from pipeline.ray_init import ensure_ray
from pipeline.stages.gates import build_gates, decide_row, judge_gates, metadata_gates
from pipeline.storage import resolve_filesystem
from pipeline.table import commit as commits
from pipeline.table.catalog import TableRoot, check_output_root, load_or_create, table_root
from pipeline.table.plan import Plan, plan_work, rows_table
from pipeline.table.schema import AUDIO_TABLE, clips_schema, conform
from pipeline.version import code_version

if TYPE_CHECKING:
    from pyiceberg.table import Table

    from pipeline.console import Console

log = logging.getLogger("pipeline")


class RowAccountingError(RuntimeError):
    """Rows out did not equal rows in: something was lost or duplicated."""


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


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def engine_key(cfg: CurationConfig, models: Models) -> str:
    """What a clip's scores are a function of besides its audio: the models, their revisions, the settings
    that change what they output.  Rows scored under another key are scored again."""
    content = cfg.content_settings()
    return _digest(
        {
            "audio": content["audio"],
            "quality": content["quality"],
            "transcriber": content["transcriber"],
            "judge": content["judge"],
            "revisions": [models.transcriber.revision, models.judge.revision],
        }
    )


def settings_key(cfg: CurationConfig, models: Models, split: str | None) -> str:
    """What a unit of work's result is a function of besides its input: engines, gates, split, limit."""
    return _digest({"engine": engine_key(cfg, models), "content": cfg.content_settings(), "split": split})


def check_ids(expected: Counter, written: Counter) -> None:
    """Every id that went to the engines came out exactly once: none lost, none doubled."""
    if expected != written:
        lost, extra = expected - written, written - expected
        raise RowAccountingError(
            f"ids out differ from ids in: {sum(lost.values())} lost (e.g. {list(lost)[:5]}), "
            f"{sum(extra.values())} extra (e.g. {list(extra)[:5]})"
        )


def shard_of(rid: str, count: int) -> int:
    return int(hashlib.sha1(rid.encode()).hexdigest()[:8], 16) % count


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
        sources, cfg.storage, split=split, default_locale=cfg.table.locale or cfg.transcriber.language or "en"
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


def _existing(table: Table, shard: tuple[int, int]) -> dict[str, dict[str, Any]]:
    if table.current_snapshot() is None:
        return {}
    rows = table.scan().to_arrow().to_pylist()
    i, k = shard
    return {r[ID]: r for r in rows if k == 1 or shard_of(r[ID], k) == i}


def _view_rows(ctx: RunContext, view: pa.Table) -> list[dict[str, Any]]:
    """The view's rows for this shard, limited to ``limit`` curated clips (the first by id)."""
    i, k = ctx.shard
    rows = view.sort_by(ID).to_pylist() if view.num_rows else []
    if k > 1:
        rows = [r for r in rows if shard_of(r[ID], k) == i]
    limit = ctx.cfg.limit
    if limit is not None:
        picked = [r for r in rows if ctx.inputs.selected(r)][:limit]
        rows = picked
    return rows


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
    # Every TSV is read and checked before anything is written: a malformed release leaves no trace.
    view = ctx.inputs.view(locale, pending)
    catalog = ctx.root.catalog()
    clips = load_or_create(catalog, clips_id, clips_schema(ctx.inputs.passthrough()))
    audio = load_or_create(catalog, audio_id, AUDIO_TABLE)
    resolve = lambda uri: resolve_filesystem(uri, cfg.storage)  # noqa: E731
    for t in (clips, audio):
        gone = commits.remove_orphans(t, cfg.table.orphan_min_age_s, resolve)
        if gone:
            log.info("removed %d orphan data file(s) of %s (a killed write's)", len(gone), ".".join(t.name()))
    gates, cv_gates = build_gates(cfg, ctx.split), metadata_gates(cfg, ctx.split)
    plan = plan_work(
        _view_rows(ctx, view),
        _existing(clips, ctx.shard),
        selected=ctx.inputs.selected,
        engine_key=engine_key(cfg, ctx.models),
        decide=lambda row: decide_row(row, gates, cfg.transcriber.language, cfg.gates.fold_diacritics),
        unscored=lambda row: judge_gates(row, cv_gates),
        ever_selected=ctx.inputs.ever_selected,
        full_releases=ctx.inputs.full_releases(pending) if cfg.limit is None else (),
        force=ctx.force,
    )
    log.info("%s: plan %s", clips_id, dict(plan.counts))
    schema = clips_schema(ctx.inputs.passthrough())
    now = datetime.now(UTC)
    engine_written = _run_engines(ctx, plan, view.schema, clips, audio, schema, now) if plan.engine else None
    clip_files = list(engine_written["clips"]) if engine_written else []
    audio_files = list(engine_written["audio"]) if engine_written else []
    try:
        updates = conform(
            rows_table(plan.updates, schema)
            .drop_columns(["updated_run", "updated_at", "code_version"])
            .append_column("updated_run", pa.array([ctx.run_id] * len(plan.updates), pa.string()))
            .append_column("updated_at", pa.array([now] * len(plan.updates), pa.timestamp("us", tz="UTC")))
            .append_column("code_version", pa.array([code_version()] * len(plan.updates), pa.string())),
            schema,
        )
        update_files = commits.write_rows(clips, updates)
        written_ids = (engine_written["ids"] if engine_written else []) + updates.column(ID).to_pylist()
        tally = combine([engine_written["tally"] if engine_written else Tally(), tally_of(updates)])
        kept_now = {
            **(engine_written["kept"] if engine_written else {}),
            **dict(zip(updates.column(ID).to_pylist(), updates.column(KEPT).to_pylist(), strict=True)),
        }
        result.changes = _changes(plan, kept_now)
        result.tally = tally
        sampled = (engine_written["rejected"] if engine_written else []) + rejected_sample(updates, SAMPLE_CAP)
        result.rejected = sampled[:SAMPLE_CAP]
        props = _properties(ctx, locale, clips_id, pending, result)
        if audio_files:
            commits.append_audio(lambda: catalog.load_table(audio_id), audio_files, props)
            audio_files = []  # committed (or dropped as duplicates): no longer ours to delete
        table = commits.upsert(
            lambda: catalog.load_table(clips_id),
            [*clip_files, *update_files],
            pa.array(written_ids, pa.string()),
            props,
            units=[u.key(ctx.settings) for u in pending],
            shard=ctx.shard,
            run_id=ctx.run_id,
        )
    except BaseException:
        # Never committed: the previous snapshot is the table still; these files are nobody's.
        commits.delete_files(clips, clip_files)
        commits.delete_files(audio, audio_files)
        raise
    snap = table.current_snapshot()
    result.snapshot_id = snap.snapshot_id
    result.tag = commits.tag(table, snap.snapshot_id, cfg.table.tag or f"run-{now:%Y%m%dT%H%M%SZ}")
    result.files = [
        DataFileInfo(table=clips_id, path=f.file_path, rows=f.record_count, bytes=f.file_size_in_bytes)
        for f in [*clip_files, *update_files]
    ]
    _upkeep(ctx, catalog, clips_id, audio_id, props)
    kept = catalog.load_table(clips_id).scan(selected_fields=(KEPT,)).to_arrow().column(KEPT)
    result.table_rows, result.table_kept = len(kept), pc.sum(pc.fill_null(kept, False).cast(pa.int64())).as_py() or 0
    log.info("committed %s snapshot %s (%s): %s", clips_id, result.snapshot_id, result.tag, result.changes)
    return result


def _run_engines(
    ctx: RunContext, plan: Plan, view: pa.Schema, clips: Table, audio: Table, schema: pa.Schema, now: datetime
) -> dict[str, Any]:
    """Whisper and the judge on the plan's engine rows; returns their uncommitted files, ids and tally."""
    cfg = ctx.cfg
    rows = pa.Table.from_pylist(plan.engine, schema=view)  # the view's types, even for an all-null column
    columns = [c for c in rows.column_names if c not in VIEW_ONLY]
    ensure_ray(cfg)
    constants = {
        "engine_key": engine_key(cfg, ctx.models),
        "processed_run": ctx.run_id,
        "updated_run": ctx.run_id,
        "request_key": ctx.settings,
        "transcriber": f"{ctx.models.transcriber.ref}@{ctx.models.transcriber.revision}",
        "judge": f"{ctx.models.judge.ref}@{ctx.models.judge.revision}",
        "code_version": code_version(),
        "processed_at": now,
        "updated_at": now,
    }
    sink = TableSink(clips, audio if cfg.keep_audio else None, schema, constants, cfg.table.rows_per_file)
    stages = curation_stages(cfg, ctx.models, columns, ctx.split)
    counter, name, display = None, None, None
    if ctx.console is not None:
        counter, name = start_counter(ctx.run_id)
        where = ", ".join(ctx.inputs.describe()["inputs"])[:100]
        ctx.console.say(f"curating {rows.num_rows} clips from {where} into {'.'.join(clips.name())}")
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
        _drop_written(sink, clips, audio)
        raise
    finally:
        if display is not None:
            display.stop()
            stop_counter(counter)
    out = {
        "clips": [f for r in sink.results for f in r["clips"]],
        "audio": [f for r in sink.results for f in r["audio"]],
        "ids": [i for r in sink.results for i in r["ids"]],
        "kept": {i: k for r in sink.results for i, k in r["kept"].items()},
        "tally": combine(Tally.model_validate(r["tally"]) for r in sink.results),
        "rejected": [row for r in sink.results for row in r["rejected"]],
    }
    try:
        check_ids(Counter(r[ID] for r in plan.engine), Counter(out["ids"]))
    except RowAccountingError:
        _drop_written(sink, clips, audio)
        raise
    return out


def _drop_written(sink: TableSink, clips: Table, audio: Table) -> None:
    commits.delete_files(clips, [f for r in sink.results for f in r["clips"]])
    commits.delete_files(audio, [f for r in sink.results for f in r["audio"]])


def _changes(plan: Plan, kept_now: dict[str, bool]) -> dict[str, int]:
    """What changed tonight: clips added, scored again, updated, re-decided and withdrawn."""
    before = plan.previous_kept
    c = Counter()
    for rid, kept in kept_now.items():
        if rid not in before:
            c["added"] += 1
        elif before[rid] != bool(kept):
            c["redecided"] += 1
            c["withdrawn"] += before[rid] and not kept
    c["rescored"] = sum(1 for r in plan.engine if r[ID] in before)
    c["engine_rows"] = len(plan.engine)
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
