"""The plan's SQL (``pipeline.table.plan``), in the workspace's DuckDB.

Tables and views it reads: ``view`` (the release's rows, one per clip), ``existing`` (the table's
rows, with ``_file``/``_fno``), ``table_files`` (each data file, its number, SQL reading it alone) and
``ranks`` (release order).  It makes ``incoming`` (the view's rows of this shard) and ``merged`` (per
incoming clip: the release's word, a narrow projection of the table's row, the class), partitioned by
data file.  The table's wide columns are met a data file at a time (``file_queries``), so no join ever
holds the whole table.

The merge rules, column by column: the release's metadata, unless the table's row is the newer one or
the input does not carry the column (then the table's; a duration the release does not give keeps the
table's); the first release the earliest of both; the history every release of both, once each, the
release's own entry winning, in release order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from pipeline.columns import CV_METADATA, ID, KEPT, REASONS
from pipeline.table.schema import CLIPS
from pipeline.table.workspace import Workspace, duck_type, quote

if TYPE_CHECKING:
    from pipeline.table.plan import Rules

METADATA = CV_METADATA  # the release's verdicts and metadata: the latest release listing a clip decides
# Compared to tell whether a row changed at all (and so must be written); kept and reasons too.
COMPARED = (*METADATA, "first_release", "releases")
FILE = "_file"
OLD_KEPT, OLD_REASONS, OLD_SENTENCE = "_old_kept", "_old_reasons", "_old_sentence"
_META_TYPES = {c: duck_type(CLIPS.field(c).type) for c in METADATA}
DUPLICATE_SQL = (
    "'duplicate id: listed ' || i.copies::VARCHAR "
    "|| ' times in the input (every copy held back; which one is right is undefined)'"
)


def q(text: str) -> str:
    return text.replace("'", "''")


def shard_sql(column: str, shard: tuple[int, int]) -> str:
    """SQL true for ids of shard ``i`` of ``k``: the first 8 hex digits of the id's sha1, mod k (as
    ``pipeline.shards.shard_of`` computes it in Python)."""
    i, k = shard
    return "TRUE" if k == 1 else f"(('0x' || sha1({column})[1:8])::UBIGINT % {k}) = {i}"


def selected_sql(rules: Rules, lists: str) -> str:
    return "TRUE" if rules.split is None else f"coalesce(list_contains({lists}, '{q(rules.split)}'), FALSE)"


def ever_sql(rules: Rules, history: str) -> str:
    if rules.split is None:
        return "TRUE"
    s = q(rules.split)
    return f"coalesce(list_bool_or(list_transform({history}, lambda e: e.status = '{s}' OR e.split = '{s}')), FALSE)"


def rank_of(ws: Workspace, release: str) -> int:
    return ws.scalar("SELECT coalesce(max(rank), 0) FROM ranks WHERE release = ?", [release])


# ------------------------------------------------------------------------------- the merge, per row


def history_sql(old: str, new: str) -> str:
    """The merged history of two lists of release entries, per row, with list functions alone: both
    sorted together by (rank, release, side), then each release's last entry kept (the release's side
    wins).  Needs the one-row ``rank_map`` (column ``rm``) joined."""
    tagged = (
        "list_transform(coalesce({l}, []), lambda e: {{'r': coalesce(rank_map.rm[e.release], 0), "
        "'release': e.release, 's': {side}, 'status': e.status, 'split': e.split}})"
    )
    both = f"list_sort(list_concat({tagged.format(l=old, side=0)}, {tagged.format(l=new, side=1)}))"
    return (
        f"(list_transform([{both}], lambda h: list_transform("
        "list_filter(h, lambda x, i: i = len(h) OR h[i + 1].release <> x.release), "
        "lambda e: {'release': e.release, 'status': e.status, 'split': e.split})))[1]"
    )


def first_sql(old: str, new: str) -> str:
    """The earlier of two first releases (by rank; the release's on a tie)."""
    rank = "coalesce(rank_map.rm[{}], 0)"
    return (
        f"CASE WHEN {old} IS NULL THEN {new} WHEN {new} IS NULL THEN {old} "
        f"WHEN {rank.format(old)} < {rank.format(new)} THEN {old} ELSE {new} END"
    )


def final_meta(column: str, carried: set[str], m: str = "m", o: str = "o") -> str:
    """A metadata column of the merged row, from the release's word ``m`` and the table's row ``o``."""
    if column not in carried:
        return f"{o}.{column}"
    mine = f"coalesce({m}.{column}, {o}.{column})" if column == "duration_ms" else f"{m}.{column}"
    return f"CASE WHEN {m}._old_newer THEN {o}.{column} ELSE {mine} END"


def merged_exprs(carried: set[str], m: str = "m", o: str = "o") -> list[tuple[str, str]]:
    """(column, SQL) of every merged column, in ``COMPARED``'s order: the metadata, ``first_release`` and
    ``releases``."""
    return [
        *((c, final_meta(c, carried, m, o)) for c in METADATA),
        ("first_release", first_sql(f"{o}.first_release", f"{m}._in_first")),
        ("releases", history_sql(f"{o}.releases", f"{m}._in_releases")),
    ]


RANK_MAP = "(SELECT map_from_entries(list({'key': release, 'value': rank})) AS rm FROM ranks) rank_map"


# ---------------------------------------------------------------------------------------- the steps


def ranks(ws: Workspace, also: tuple[str | None, ...] = ()) -> None:
    """Table ``ranks`` (release, rank): every release name the view and the table mention (and ``also``)."""
    from pipeline.commonvoice.releases import rank_table

    names = set(also)
    for table in ("view", "existing"):
        if not ws.exists(table):
            continue
        cols = ws.columns(table)
        parts = [f"SELECT {c} AS r FROM {table}" for c in ("first_release", "last_release", "release") if c in cols]
        if "releases" in cols:
            parts.append(f"SELECT unnest(releases).release AS r FROM {table}")
        if parts:
            names |= {r for (r,) in ws.rows(" UNION ".join(parts))}
    ws.run("DROP TABLE IF EXISTS ranks")
    ws.put("ranks", rank_table(names))


def incoming(ws: Workspace, rules: Rules) -> None:
    """``incoming``: the view's rows of this shard (the first ``limit`` selected ones, with a limit)."""
    where = shard_sql("id", rules.shard)
    if rules.limit is not None:
        where += f" AND {selected_sql(rules, 'lists')} ORDER BY id LIMIT {int(rules.limit)}"
    ws.materialize("incoming", f"SELECT * FROM view WHERE {where}")


def merged(ws: Workspace, rules: Rules, mark) -> None:
    """``merged``: per incoming clip, the release's metadata (the table's is met later, per data file), the
    table row's narrow facts (newer or not, kept, engine key, stage, data file) and the row's class;
    partitioned by data file.  ``mark`` gives (selected SQL, ever-selected SQL, join clause) over ``b``."""
    carried = set(ws.columns("incoming"))
    meta = ", ".join(f"i.{c} AS {c}" if c in carried else f"NULL::{_META_TYPES[c]} AS {c}" for c in METADATA)
    ws.materialize(
        "merged_base",
        f"""
        WITH o AS (SELECT id, last_release, kept, engine_key, stage, _fno FROM existing)
        SELECT i.id, {meta},
               (o.id IS NOT NULL AND coalesce(rlo.rank, 0) > coalesce(rli.rank, 0)) AS _old_newer,
               i.first_release AS _in_first,
               coalesce(i.releases, []) AS _in_releases,
               o.id IS NOT NULL AS _has_old,
               o.kept AS _old_kept,
               o.engine_key AS _old_engine_key,
               o.stage AS _old_stage,
               coalesce(o._fno, -1) AS _fno,
               CASE WHEN greatest(i.copies, 1) > 1 THEN {DUPLICATE_SQL} ELSE i._hold END AS _hold_reason,
               i.lists AS lists
        FROM incoming i
        LEFT JOIN o USING (id)
        LEFT JOIN ranks rli ON rli.release = i.last_release
        LEFT JOIN ranks rlo ON rlo.release = o.last_release
    """,
    )
    selected, ever, join = mark(ws, rules)
    key = q(rules.engine_key)
    scored_here = f"(_has_old AND _old_engine_key IS NOT DISTINCT FROM '{key}' AND _old_stage IS DISTINCT FROM 'read')"
    ws.partitioned(
        "merged",
        f"""
        SELECT *, CASE
            -- Held back (listed twice, a path outside the release): quarantined when the table lacks the
            -- clip; a clip the table holds keeps its row (which copy is right is undefined).
            WHEN _hold_reason IS NOT NULL AND _has_old THEN 'held_kept'
            WHEN _hold_reason IS NOT NULL THEN 'held'
            WHEN _selected AND ({str(rules.force).upper()} OR NOT {scored_here}) THEN 'engine'
            WHEN NOT _has_old AND _ever THEN 'unscored'
            WHEN NOT _has_old THEN 'not_selected'
            ELSE 'candidate' END AS _class
        FROM (SELECT b.*, {selected} AS _selected, {ever} AS _ever FROM merged_base b {join})
    """,
        by="_fno",
    )


def from_release(ws: Workspace, cls: str) -> str:
    """Rows of class ``cls`` as the release gives them (the incoming row, merged with the table's row where
    there is one): the engines', a held row's or an unscored one's."""
    carried = set(ws.columns("incoming"))
    merged_cols = {*METADATA, "first_release", "releases"}
    own = [c for c in ws.columns("incoming") if c not in merged_cols and c != ID]
    cols = [f"i.{c}" for c in own] + [f"{expr} AS {c}" for c, expr in merged_exprs(carried)]
    return f"""
        SELECT i.id, {", ".join(cols)}, m._hold_reason, m._old_kept, m._has_old, f.{FILE} AS {FILE}
        FROM incoming i JOIN merged m USING (id)
        LEFT JOIN (SELECT id, {", ".join(METADATA)}, first_release, releases FROM existing
                   SEMI JOIN (SELECT id FROM merged WHERE _class = '{cls}' AND _has_old) USING (id)) o USING (id)
        LEFT JOIN table_files f ON f._fno = m._fno
        CROSS JOIN {RANK_MAP}
        WHERE m._class = '{cls}'"""


def file_queries(ws: Workspace, rules: Rules) -> Iterator[tuple[str, str]]:
    """(kind, SQL) per data file of the table: its candidate rows (the release's word over the file's rows),
    then its withdrawn rows (those the run's newest full release no longer lists)."""
    carried = set(ws.columns("incoming"))
    exprs = merged_exprs(carried)
    replaced = ", ".join(f"{expr} AS {c}" for c, expr in exprs)
    changed = " OR ".join(f"(o.{c} IS DISTINCT FROM ({expr}))" for c, expr in exprs)
    newest = rank_of(ws, rules.newest_full) if rules.newest_full is not None and rules.limit is None else None
    before = f"o.{KEPT} AS {OLD_KEPT}, o.{REASONS} AS {OLD_REASONS}, o.sentence AS {OLD_SENTENCE}"
    for file, fno, source in ws.rows(f"SELECT {FILE}, _fno, _sql FROM table_files ORDER BY _fno"):
        own = ws.partition("merged", fno)
        shard = shard_sql("o.id", rules.shard)
        if own is not None:
            yield (
                "candidate",
                f"""
                SELECT o.* REPLACE ({replaced}), {before}, ({changed}) AS _meta_changed, {quote(file)} AS {FILE}
                FROM ({source}) o JOIN (SELECT * FROM {own} WHERE _class = 'candidate') m USING (id)
                CROSS JOIN {RANK_MAP}
                WHERE {shard}""",
            )
        if newest is not None:
            entry = f"{{'release': '{q(rules.newest_full)}', 'status': 'deleted', 'split': NULL::VARCHAR}}"
            listed = f"ANTI JOIN (SELECT id FROM {own}) k USING (id)" if own is not None else ""
            yield (
                "withdrawn",
                f"""
                SELECT o.* REPLACE ('deleted' AS cv_status, NULL::VARCHAR AS split,
                                    list_append(coalesce(o.releases, []), {entry}) AS releases),
                       {before}, {quote(file)} AS {FILE}
                FROM ({source}) o {listed}
                LEFT JOIN ranks r ON r.release = o.last_release
                WHERE {shard} AND coalesce(r.rank, 0) < {newest} AND o.cv_status IS DISTINCT FROM 'deleted'""",
            )


def update_queries(ws: Workspace, rules: Rules) -> Iterator[tuple[str, str]]:
    """(kind, SQL) of every stream of rows to decide and write, in a fixed order."""
    yield "held", from_release(ws, "held")
    yield "unscored", from_release(ws, "unscored")
    yield from file_queries(ws, rules)


def withdrawn_count(ws: Workspace, rules: Rules) -> int:
    return ws.scalar(f"""
        SELECT count(*) FROM existing o ANTI JOIN (SELECT id FROM incoming) i USING (id)
        LEFT JOIN ranks r ON r.release = o.last_release
        WHERE coalesce(r.rank, 0) < {rank_of(ws, rules.newest_full)} AND o.cv_status IS DISTINCT FROM 'deleted'""")
