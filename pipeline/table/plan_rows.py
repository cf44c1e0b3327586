"""The plan on Python rows (``plan_work``): the columnar plan of ``pipeline.table.plan``, for tests and
small inputs.  The rows are loaded into a workspace, selection and decisions come from Python
predicates, and the outcome is read back as rows."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from pipeline.columns import ERROR, ID, KEPT, REASONS
from pipeline.commonvoice.releases import release_key
from pipeline.table.plan_sql import FILE, OLD_KEPT
from pipeline.table.schema import CLIPS, RELEASE_ENTRY
from pipeline.table.workspace import Workspace, quote

HISTORY = pa.list_(RELEASE_ENTRY)
ROWS_FILE = "rows"  # the one pseudo data file that Python table rows are in


def merge_histories(
    old: Sequence[Sequence[Mapping[str, Any]] | None], new: Sequence[Sequence[Mapping[str, Any]] | None]
):
    """Row by row, the union of two lists of release entries, one per release (``new``'s entry wins), in
    release order: the plan's own rule (``plan_sql.history_sql``), run on these few rows."""
    from pipeline.commonvoice.releases import rank_table
    from pipeline.table.plan_sql import RANK_MAP, history_sql

    names = {e["release"] for h in (*old, *new) for e in h or []}
    with Workspace(64, threads=1) as ws:
        ws.put("ranks", rank_table(names))
        ws.put("h", pa.table({"i": range(len(old)), "old": pa.array(old, HISTORY), "new": pa.array(new, HISTORY)}))
        got = ws.arrow(f"SELECT {history_sql('h.old', 'h.new')} AS releases FROM h CROSS JOIN {RANK_MAP} ORDER BY i")
    return got.column("releases").to_pylist()


@dataclass
class Plan:
    """``plan_work``'s outcome, as Python rows."""

    engine: list[dict[str, Any]] = field(default_factory=list)  # incoming rows, merged, for the DAG
    updates: list[dict[str, Any]] = field(default_factory=list)  # whole table rows to write as they are
    previous_kept: dict[str, bool] = field(default_factory=dict)  # id -> kept before, for what changed
    counts: Counter = field(default_factory=Counter)


@dataclass
class CallableSelection:
    """Selection by Python predicates on merged rows (``plan_work``'s)."""

    selected: Callable[[dict[str, Any]], bool]
    ever_selected: Callable[[dict[str, Any]], bool]

    def mark(self, ws: Workspace, rules) -> tuple[str, str, str]:
        from pipeline.table.plan_sql import RANK_MAP, history_sql

        rows = ws.arrow(f"""
            SELECT i.*, {history_sql("o.releases", "b._in_releases")} AS releases
            FROM merged_base b JOIN incoming i USING (id) LEFT JOIN existing o USING (id) CROSS JOIN {RANK_MAP}
        """).to_pylist()
        marks = pa.table(
            {
                ID: [r[ID] for r in rows],
                "_selected": [bool(self.selected(_row(r))) for r in rows],
                "_ever": [bool(self.ever_selected(_row(r))) for r in rows],
            },
            schema=pa.schema([(ID, pa.string()), ("_selected", pa.bool_()), ("_ever", pa.bool_())]),
        )
        ws.run("DROP TABLE IF EXISTS marks")
        ws.put("marks", marks)
        return "s._selected", "s._ever", "JOIN marks s USING (id)"


def _row(r: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in r.items() if not k.startswith("_") or k in ("_source", "_hold")}
    out["releases_json"] = json.dumps(out.get("releases") or [], separators=(",", ":"))
    return out


def row_decider(
    decide: Callable[[dict[str, Any]], list[str]], unscored: Callable[[dict[str, Any]], list[str]]
) -> Callable[[pa.Table], pa.Table]:
    """A ``Decide`` from per-row functions: a quarantined row is not kept, with no reasons; a row the engines
    never scored is decided by ``unscored`` (Common Voice's own verdicts) and not kept."""

    def run(t: pa.Table) -> pa.Table:
        from pipeline.table.plan import _set

        rows = t.to_pylist()
        kept, reasons = [], []
        for row in rows:
            if row.get(ERROR) is not None:
                kept.append(False)
                reasons.append([])
            elif row.get("engine_key") is None:
                kept.append(False)
                reasons.append(unscored(row) or ["not_scored"])
            else:
                r = decide(row)
                kept.append(not r)
                reasons.append(r)
        out = _set(t, KEPT, pa.array(kept, pa.bool_()))
        out = _set(out, REASONS, pa.array(reasons, pa.list_(pa.string())))
        for col in ("wer", "cer"):  # decide() may have measured agreement again
            if any(col in r for r in rows):
                out = _set(out, col, pa.array([r.get(col) for r in rows], pa.float64()))
        return out

    return run


def _view_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Python view rows as the workspace's ``view``: one row per id (the first copy), ``copies`` the most
    times it is listed, ``releases`` from ``releases_json``."""
    copies = Counter(r[ID] for r in rows)
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        first.setdefault(r[ID], r)
    out = []
    for rid, r in first.items():
        row = {k: v for k, v in r.items() if k != "releases_json"}
        row["releases"] = json.loads(r.get("releases_json") or "[]")
        row["copies"] = max(copies[rid], r.get("copies") or 1)
        row.setdefault("_hold", None)
        row.setdefault("lists", None)
        out.append(row)
    return _typed(out, {"releases": HISTORY, "lists": pa.list_(pa.string()), "copies": pa.int64(),
                        "_hold": pa.string(), "first_release": pa.string(), "last_release": pa.string()})  # fmt: skip


def _typed(rows: list[dict[str, Any]], known: dict[str, pa.DataType], every: pa.Schema | None = None) -> pa.Table:
    """Rows as a table: the clips schema's types for its columns, ``known`` for others, inferred for the rest;
    with ``every``, each of its columns too (null where the rows lack it)."""
    names = list(dict.fromkeys([*(every.names if every is not None else []), *(k for r in rows for k in r)]))
    types = {f.name: f.type for f in CLIPS} | known
    cols = {}
    for n in names:
        values = [r.get(n) for r in rows]
        cols[n] = pa.array(values, types[n]) if n in types else pa.array(values)
        if pa.types.is_null(cols[n].type):
            cols[n] = cols[n].cast(pa.string())
    if not rows:  # no rows: still every column the plan's SQL names
        cols = {ID: pa.array([], pa.string()), **{n: pa.array([], t) for n, t in known.items()}}
    return pa.table(cols)


def table_files(ws: Workspace, files: list[tuple[str, str]]) -> None:
    """Table ``table_files`` (_file, _fno, _sql): each data file of the table, its number, and SQL reading
    its rows (as the table's schema, without ``_file``)."""
    ws.run("DROP TABLE IF EXISTS table_files")
    ws.put("table_files", pa.table({FILE: pa.array([f for f, _ in files], pa.string()),
                                    "_fno": pa.array(range(len(files)), pa.int32()),
                                    "_sql": pa.array([q for _, q in files], pa.string())}))  # fmt: skip


def load_rows(ws: Workspace, incoming: list[dict[str, Any]], existing: Mapping[str, dict[str, Any]]) -> None:
    """Python rows as the workspace's ``view`` and ``existing`` (all in one pseudo data file)."""
    ws.put("view", _view_table(incoming))
    existing_rows = [{**r, FILE: ROWS_FILE, "_fno": 0} for r in existing.values()]
    if existing_rows:
        ws.put("existing", _typed(existing_rows, {FILE: pa.string(), "_fno": pa.int32()}, every=CLIPS))
    else:
        ws.create("existing", pa.schema([*CLIPS, pa.field(FILE, pa.string()), pa.field("_fno", pa.int32())]))
    source = f"SELECT * EXCLUDE ({FILE}, _fno) FROM existing WHERE {FILE} = {quote(ROWS_FILE)}"
    table_files(ws, [(ROWS_FILE, source)] if existing_rows else [])


def as_rows(plan) -> Plan:
    """A ``TablePlan`` read out whole, as Python rows."""
    from pipeline.table.plan import HELPERS

    updates = [r for t in plan.updates() for r in t.to_pylist()]
    out = Plan(counts=plan.counts)
    out.engine = [{**r, "releases_json": json.dumps(r["releases"], separators=(",", ":"))}
                  for r in plan.engine.to_pylist()]  # fmt: skip
    out.previous_kept = {r[ID]: bool(r[OLD_KEPT]) for r in updates if r.get(OLD_KEPT) is not None}
    out.previous_kept |= {r[ID]: bool(r[KEPT]) for r in plan.engine_kept_before.to_pylist()}
    out.updates = [{k: v for k, v in r.items() if k not in HELPERS} for r in updates]
    return out


def plan_work(
    incoming: list[dict[str, Any]],
    existing: Mapping[str, dict[str, Any]],
    *,
    selected: Callable[[dict[str, Any]], bool],
    engine_key: str,
    decide: Callable[[dict[str, Any]], list[str]],
    unscored: Callable[[dict[str, Any]], list[str]] = lambda row: [],
    ever_selected: Callable[[dict[str, Any]], bool] = lambda row: False,
    full_releases: Sequence[str] = (),
    force: bool = False,
) -> Plan:
    """The plan for ``incoming`` rows against ``existing`` table rows (id -> row), on Python rows.

    ``selected`` says whether a merged row is in the curated split as of its newest release, and
    ``ever_selected`` whether any release in its history put it there (a clip validated by N and
    invalidated by N+1 enters the table unscored, rejected with N+1's reason, as if N had been curated
    first).  ``decide`` returns the gate codes a scored row fails, ``unscored`` those of a row the
    engines never saw; ``full_releases`` are this run's full (cumulative) releases, whose newest
    withdraws the table's rows it no longer lists.
    """
    from pipeline.table.plan import Rules, plan_table

    newest = max(full_releases, key=release_key, default=None)
    rules = Rules(engine_key=engine_key, newest_full=newest, force=force)
    with Workspace(memory_limit_mb=256, threads=1) as ws:
        load_rows(ws, incoming, existing)
        plan = plan_table(ws, rules, row_decider(decide, unscored), CallableSelection(selected, ever_selected))
        return as_rows(plan)


def reconcile_rows(ours: pa.Table, theirs: pa.Table, decide: Callable[[pa.Table], pa.Table]) -> pa.Table:
    """Our rows for clips another writer committed after our plan read the table, built again on theirs:
    the newer release's metadata, every release of both histories (our entry winning for a release both
    list), the earlier first release, the scores of whichever row has them under engines (ours when both
    do: they are the newer), and ``kept``/``reasons`` decided again.  The contested clips are the few two
    writers touched at once: rows of Python here."""
    from pipeline.table.plan_sql import METADATA

    theirs_by_id = {r[ID]: r for r in theirs.to_pylist()}
    mine = ours.to_pylist()
    both = [(theirs_by_id[r[ID]].get("releases"), r.get("releases")) for r in mine if r[ID] in theirs_by_id]
    histories = iter(merge_histories([o for o, _ in both], [n for _, n in both]))
    out = []
    cv = {*METADATA, "first_release", "releases", ID, "locale"}
    for row in mine:
        other = theirs_by_id.get(row[ID])
        if other is None:
            out.append(row)
            continue
        merged = dict(row)
        ours_scored = row.get("engine_key") is not None and row.get("stage") != "read"
        theirs_scored = other.get("engine_key") is not None and other.get("stage") != "read"
        if theirs_scored and not ours_scored:
            merged |= {k: v for k, v in other.items() if k not in cv}
        if release_key(other.get("last_release")) > release_key(row.get("last_release")):
            merged |= {k: other.get(k) for k in METADATA}
        firsts = [f for f in (row.get("first_release"), other.get("first_release")) if f]
        merged["first_release"] = min(firsts, key=release_key) if firsts else None
        merged["releases"] = next(histories)
        out.append(merged)
    table = pa.Table.from_pylist(out, schema=ours.schema)
    return decide(table).select(ours.schema.names)
