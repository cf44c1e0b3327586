"""What a run must do to the table, decided before any engine starts: a columnar join, not a loop.

Each incoming clip (the latest view across the run's releases, table ``view`` of the workspace) meets
the table's row for its id (``existing``):

- **engine work** when it is in the curated split and the table has no scores for it under the same
  engines (models, revisions, settings), or its audio was missing before, or ``force``;
- **a metadata update** when the table scored it already: the latest release's status, split, votes
  and reported flag, its history per release, and ``kept``/``reasons`` decided again from the stored
  scores by today's gates (a new threshold re-decides without recomputing);
- **nothing** when none of that changes.

A full release newer than a row's last release that no longer lists the clip withdraws it
(``cv_deleted``).  An id listed twice in one input is one quarantined row (which copy is right is not
defined).  Metadata never moves backwards: an older release applied after a newer one only adds to
the history; a column the input does not carry keeps the table's value.

Everything but the decision runs in DuckDB (``pipeline.table.workspace``, SQL in ``plan_sql``): the
history merge, the classification and the change test, over the whole view and table in bounded
memory, the table's wide columns a data file at a time.  The decision (the gates) runs on Arrow
batches of the rows it concerns, vectorised.  Only the rows that change leave the workspace, a batch
at a time, as rows to write.

``plan_work`` (``plan_rows``) is the same plan on Python rows, for tests and small inputs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import AGREEMENT_KEY, ERROR, ID, KEPT, REASONS, STAGE
from pipeline.commonvoice.releases import release_key
from pipeline.table import plan_sql as sql
from pipeline.table.plan_sql import COMPARED, FILE, METADATA, OLD_KEPT, OLD_REASONS, OLD_SENTENCE, shard_sql
from pipeline.table.workspace import Workspace

# Columns the plan adds to the rows it hands out, for the caller and the change test; never stored.
HELPERS = (OLD_KEPT, OLD_REASONS, OLD_SENTENCE, FILE, "_meta_changed", "_hold_reason", "_has_old")
REPLACED = pa.schema([(ID, pa.string()), (FILE, pa.string())])


@dataclass(frozen=True)
class Rules:
    """What decides the plan besides the rows.

    ``split`` is the curated clip list: a row is *selected* when the newest release lists it there, and
    *ever selected* when any release in its history did (None: every row is, as for Parquet inputs).
    ``newest_full`` is the run's newest full (cumulative) release, which withdraws the table's rows it no
    longer lists.  ``shard`` keeps the ids whose hash falls in shard i of k; ``limit`` keeps the first
    ``limit`` selected ids of the view (and nothing else).
    """

    engine_key: str
    split: str | None = None
    newest_full: str | None = None
    force: bool = False
    shard: tuple[int, int] = (0, 1)
    limit: int | None = None


class Selection(Protocol):
    """Whether each row of ``merged_base`` (``b``) is in the curated split now, and ever was: SQL for both,
    and a join clause they may need."""

    def mark(self, ws: Workspace, rules: Rules) -> tuple[str, str, str]: ...


class SplitSelection:
    """Selected: the curated split is among the newest release's lists for the clip.  Ever selected: a
    release in its history listed it there (only asked of a clip the table lacks: the release's history is
    then the whole of it).  Without a split, every row is both."""

    def mark(self, ws: Workspace, rules: Rules) -> tuple[str, str, str]:
        return sql.selected_sql(rules, "b.lists"), sql.ever_sql(rules, "b._in_releases"), ""


# A table row's decision: ``decide(rows)`` returns ``rows`` with ``kept``, ``reasons`` (and ``wer``/``cer``
# where measured again) set: a quarantined row not kept, a row the engines never scored decided by
# Common Voice's own verdicts, a scored row by today's gates (``stages.gates.decide_table``).
Decide = Callable[[pa.Table], pa.Table]


@dataclass
class WorkspaceReplaced:
    """The replaced rows' data files (``commit.upsert``'s ``replaced``), from the workspace's ``replaced``."""

    ws: Workspace
    base: int | None

    def counts(self) -> dict[str, int]:
        if not self.ws.exists("replaced"):
            return {}
        return dict(self.ws.rows(f"SELECT {FILE}, count(DISTINCT id) FROM replaced GROUP BY {FILE}"))

    def ids(self, path: str) -> pa.Array:
        return self.ws.arrow(f"SELECT DISTINCT id FROM replaced WHERE {FILE} = ?", [path]).column(0).combine_chunks()


@dataclass
class TablePlan:
    """The plan's outcome.  ``engine`` is small (new clips); updates stream from ``updates()``."""

    ws: Workspace
    rules: Rules
    decide: Decide
    engine: pa.Table
    counts: Counter = field(default_factory=Counter)
    # id -> kept before, for the engine rows the table held already (what changed tonight)
    engine_kept_before: pa.Table | None = None
    base: int | None = None  # the table's snapshot the plan read

    def replaced(self) -> WorkspaceReplaced:
        """Where the rows this plan replaces are: the engine rows' and the written updates' data files, as
        the plan's snapshot holds them.  Complete once ``updates()`` has been read to its end."""
        return WorkspaceReplaced(self.ws, self.base)

    def remember_replaced(self, rows: pa.Table) -> None:
        """(id, _file) of rows this plan writes that replace a table row."""
        rows = rows.filter(pc.is_valid(rows.column(FILE)))
        if rows.num_rows:
            with self.ws.writer("replaced", REPLACED) as w:
                w.write(rows.select([ID, FILE]).cast(REPLACED))

    def updates(self) -> Iterator[pa.Table]:
        """The rows to write that are not engine work, as they must be stored (plus the ``HELPERS``
        columns: the row's kept and reasons before, and its data file), a batch at a time.  Counts
        ``updated`` and ``unchanged`` as it goes."""
        for kind, query in sql.update_queries(self.ws, self.rules):
            for batch in self.ws.batches(query):
                t = pa.Table.from_batches([batch])
                if kind == "held":
                    t = _set(t, ERROR, t.column("_hold_reason"))
                    t = _set(t, STAGE, pa.array(["read"] * t.num_rows, pa.string()))
                    t = _set(t, KEPT, pa.array([False] * t.num_rows))
                    t = _set(t, REASONS, pa.array([[]] * t.num_rows, pa.list_(pa.string())))
                    self.remember_replaced(t.select([ID, FILE]))
                    yield t
                    continue
                if kind == "unscored":
                    t = _set(t, ERROR, pa.nulls(t.num_rows, pa.string()))
                    t = _set(t, STAGE, pa.nulls(t.num_rows, pa.string()))
                stored_key = t.column(AGREEMENT_KEY) if AGREEMENT_KEY in t.column_names else None
                decided = self.decide(t)
                if kind == "candidate":
                    changed = _changed(decided, stored_key)
                    n = int(pc.sum(changed).as_py() or 0)
                    self.counts["updated"] += n
                    self.counts["unchanged"] += decided.num_rows - n
                    decided = decided.filter(changed)
                if decided.num_rows:
                    self.remember_replaced(decided.select([ID, FILE]))
                    yield decided


def _set(t: pa.Table, name: str, values) -> pa.Table:
    if name in t.column_names:
        return t.set_column(t.schema.get_field_index(name), name, values)
    return t.append_column(name, values)


def _changed(t: pa.Table, stored_key: pa.ChunkedArray | None = None) -> pa.Array:
    """Rows whose metadata (SQL's ``_meta_changed``), ``kept`` or ``reasons`` differ from the table's, or whose
    WER/CER the decision measured under another agreement key than the stored one: written once with the new
    key, or every later run would measure them again (a whole table, when a setting or the rules changed)."""
    kept = pc.fill_null(t.column(KEPT), False)
    before = pc.fill_null(t.column(OLD_KEPT), False)
    as_text = lambda col: pc.fill_null(pc.binary_join(pc.fill_null(col, []), "\x1f"), "")  # noqa: E731
    changed = pc.or_(
        pc.or_(pc.fill_null(t.column("_meta_changed"), True), pc.not_equal(kept, before)),
        pc.not_equal(as_text(t.column(REASONS)), as_text(t.column(OLD_REASONS))),
    )
    if stored_key is None or AGREEMENT_KEY not in t.column_names:
        return changed
    key = t.column(AGREEMENT_KEY)
    rekeyed = pc.fill_null(pc.not_equal(key, stored_key), pc.is_valid(key))  # no key stored: now one is
    return pc.or_(changed, rekeyed)


def plan_table(
    ws: Workspace, rules: Rules, decide: Decide, selection: Selection | None = None, base: int | None = None
) -> TablePlan:
    """The plan for the workspace's ``view`` against its ``existing`` table rows (``scan.load_existing``, from
    snapshot ``base``)."""
    selection = selection or SplitSelection()
    sql.ranks(ws, also=(rules.newest_full,))
    sql.incoming(ws, rules)
    sql.merged(ws, rules, selection.mark)
    counts = Counter(dict(ws.rows("SELECT _class, count(*) FROM merged GROUP BY _class")))
    counts["incoming"] = sum(counts.values())
    counts["held"] += counts.pop("held_kept", 0)
    counts["selected"] = ws.scalar(
        "SELECT count(*) FROM merged WHERE _class NOT IN ('held', 'held_kept') AND _selected"
    )
    engine_n = counts.pop("engine", 0)
    counts.pop("candidate", None)
    if rules.newest_full is not None and rules.limit is None:
        counts["withdrawn"] = sql.withdrawn_count(ws, rules)
    helpers = f"_hold_reason, _old_kept, _has_old, {FILE}"
    engine = ws.arrow(f"SELECT * EXCLUDE ({helpers}) FROM ({sql.from_release(ws, 'engine')}) ORDER BY id")
    before = ws.arrow(f"SELECT id, _old_kept AS {KEPT} FROM merged WHERE _class = 'engine' AND _has_old")
    replaced = ws.arrow(f"""SELECT m.id, f.{FILE} FROM merged m JOIN table_files f USING (_fno)
                            WHERE m._class = 'engine'""")
    plan = TablePlan(ws, rules, decide, engine, counts, before, base)
    plan.remember_replaced(replaced)
    assert engine.num_rows == engine_n
    return plan


# The plan on Python rows, and what the tests import from here.
from pipeline.table.plan_rows import Plan, merge_histories, plan_work, table_files  # noqa: E402

__all__ = [
    "COMPARED",
    "FILE",
    "METADATA",
    "OLD_KEPT",
    "Plan",
    "Rules",
    "SplitSelection",
    "TablePlan",
    "merge_histories",
    "plan_table",
    "plan_work",
    "release_key",
    "shard_sql",
    "table_files",
]
