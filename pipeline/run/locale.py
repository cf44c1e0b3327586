"""One locale's run, as its steps: what is pending, the view, the tables, the plan, the engines and the
commit, upkeep, and what it did."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from pipeline.commonvoice.languages import decoded_as, language_check
from pipeline.result import LocaleResult
from pipeline.run.commit import write_and_commit
from pipeline.run.context import RunContext, timed
from pipeline.run.plan import make_plan
from pipeline.run.tables import check_kept_statuses, open_tables
from pipeline.run.upkeep import upkeep
from pipeline.table import ledger as ledgers
from pipeline.table import writers
from pipeline.table.scan import kept_counts
from pipeline.table.workspace import Workspace

log = logging.getLogger("pipeline")


def curate_locale(ctx: RunContext, locale: str) -> LocaleResult:
    """One locale: its pending units, the view, the tables, the plan, the engines and one commit, upkeep."""
    result = new_result(ctx, locale)
    pending = pending_units(ctx, result)
    if not pending:
        return result
    now = datetime.now(UTC)
    clock = result.timings
    with Workspace(ctx.cfg.table.plan_memory_mb) as ws:
        # Every TSV is read and checked before anything is written: a malformed release leaves no trace.
        with timed(clock, "view"):
            ctx.inputs.load_view(ws, locale, pending)
        tables = open_tables(ctx, locale)
        # Writers record their intent beside each table's data: another run's sweep spares these files.
        with writers.writing([tables.clips, tables.audio], ctx.run_id, tables.resolve):
            with timed(clock, "plan"):
                plan = make_plan(ctx, ws, pending, tables)
            committed = write_and_commit(ctx, result, pending, plan, tables, now)
    if committed:
        with timed(clock, "upkeep"):
            upkeep(ctx, tables)
    with timed(clock, "count"):
        result.table_rows, result.table_kept = kept_counts(tables.load_clips())
    return said(ctx, result, committed)


def new_result(ctx: RunContext, locale: str) -> LocaleResult:
    """The locale's result before any work: its tables, and the Whisper, language and judge it runs with."""
    cfg = ctx.cfg
    clips_id, audio_id = ctx.root.identifiers(locale)
    return LocaleResult(
        locale=locale,
        table=clips_id,
        audio_table=audio_id,
        transcriber=f"{ctx.models.transcriber.ref}@{ctx.models.transcriber.revision}",
        language=cfg.transcriber.language,
        decoded_as=decoded_as(cfg.transcriber.language, ctx.models.transcriber.path),
        language_check=language_check(locale),
        judge=f"off ({off})" if (off := cfg.judge.off_for(locale)) else f"{ctx.models.judge.ref}",
    )


def pending_units(ctx: RunContext, result: LocaleResult) -> list:
    """The locale's units of work that the table's ledger has not applied (all of them when forced); none
    says so, and the result is marked as having nothing to do."""
    known = ctx.root.existing(result.table)
    check_kept_statuses(known, ctx.cfg, ctx.split)
    ledger = ledgers.read_ledger(known) if known is not None else {}
    units = ctx.inputs.units(result.locale)
    keyed = {u.key(ctx.settings): u for u in units}
    pending = [u for key, u in keyed.items() if ctx.force or not ledgers.is_applied(ledger, key, ctx.shard)]
    result.units = [u.uri for u in pending]
    if not pending:
        result.nothing_to_do = True
        if ctx.console:
            ctx.console.say(f"{result.table}: nothing to do: every input is already applied ({len(units)} source(s))")
    return pending


def said(ctx: RunContext, result: LocaleResult, committed: bool) -> LocaleResult:
    """What the locale's run did, in the log and (when nothing changed) on the console."""
    if not committed:  # nothing changed: no snapshot, no tag; the units are recorded as applied
        result.nothing_to_do = True
        if ctx.console:
            ctx.console.say(f"{result.table}: nothing changed: {unchanged_why(ctx, result.changes)}")
        log.info("%s: nothing changed (%s); no snapshot", result.table, result.changes)
        return result
    log.info("%s: seconds per step %s", result.table, {k: round(v, 1) for k, v in result.timings.items()})
    log.info("committed %s snapshot %s (%s): %s", result.table, result.snapshot_id, result.tag, result.changes)
    return result


def unchanged_why(ctx: RunContext, changes: dict[str, int]) -> str:
    """Why a run changed nothing: every clip is up to date, or its list held none to curate (an empty
    ``other.tsv``, a shard no clip hashes to), which "up to date" would hide."""
    if changes.get("selected", 1):
        return "every clip the inputs list is already up to date"
    listed = f"{ctx.inputs.curated_list}.tsv" if ctx.inputs.curated_list else "the input"
    shard = f" in shard {ctx.shard[0] + 1}/{ctx.shard[1]}" if ctx.shard[1] > 1 else ""
    return f"{listed} lists no clip to curate{shard}"
