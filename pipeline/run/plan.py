"""The plan step: the table's rows beside the release view in the workspace, then one columnar plan."""

from __future__ import annotations

import functools
import logging

from pipeline.commonvoice.releases import release_key
from pipeline.run.context import RunContext
from pipeline.run.tables import Tables
from pipeline.shards import agreement_key, engine_key
from pipeline.stages.gate_rules import build_gates, metadata_gates
from pipeline.stages.gates import decide_table
from pipeline.table.plan import Rules, TablePlan, plan_table
from pipeline.table.scan import load_existing
from pipeline.table.workspace import Workspace

log = logging.getLogger("pipeline")


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
