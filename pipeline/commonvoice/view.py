"""Common Voice releases as one view of the run, built in the workspace (DuckDB) with bounded memory.

Each release's TSVs stream into three tables (``cv_rows``: every clip-list row with its list's name;
``cv_durations``; ``cv_reported``).  SQL then makes, per release, one row per clip (``release_view``):
its lists, status and split, the metadata of the list that decides its status, its duration, whether
its sentence is reported, and whether its path is a plain file name.  Over the run's releases the
``view`` keeps one row per clip: the newest release's word, the first release, and the history.

Nothing here holds a release's rows in Python: a TSV is read a block at a time straight into DuckDB.
"""

from __future__ import annotations

import itertools

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import CV_COLUMNS, CV_INT_COLUMNS
from pipeline.commonvoice.files import release_tsvs
from pipeline.commonvoice.reader import (
    KNOWN_SPLITS,
    NOT_CLIP_LISTS,
    ReleaseSource,
    _int_column,
    canonical_clip_table,
)
from pipeline.commonvoice.releases import rank_table
from pipeline.config import StorageConfig
from pipeline.io.clip_files import outside
from pipeline.io.schema import InputSchemaError
from pipeline.table.schema import releases_to_json
from pipeline.table.workspace import Workspace, quote

# Which list decides a clip's status when a release lists it twice (it should not): the harshest.
STATUS_LISTS = ("invalidated", "validated", "other")
SPLIT_LISTS = ("train", "dev", "test")
LIST_COLUMNS = tuple(c for c in CV_COLUMNS if c != "path")
ROWS = pa.schema(
    [
        ("release", pa.string()),
        ("_source", pa.string()),
        ("_list", pa.string()),
        ("_ord", pa.int64()),
        ("id", pa.string()),
        *((c, pa.int64() if c in CV_INT_COLUMNS else pa.string()) for c in LIST_COLUMNS),
    ]
)
DURATIONS = pa.schema([("release", pa.string()), ("clip", pa.string()), ("ms", pa.int64()), ("_ord", pa.int64())])
REPORTED = pa.schema([("release", pa.string()), ("sentence_id", pa.string()), ("sentence", pa.string())])
# A tarball's clips/ members (read with its TSVs, in the same pass): which clips it holds.
MEMBERS = pa.schema([("_source", pa.string()), ("id", pa.string())])
MEMBER_BATCH = 100_000


class _Order:
    """Row numbers across every TSV of a run, so "the first copy" is defined."""

    def __init__(self) -> None:
        self.next = itertools.count()

    def take(self, n: int) -> pa.Array:
        start = next(self.next)
        for _ in range(n - 1):
            next(self.next)
        return pa.array(range(start, start + n), pa.int64())


def _clip_rows(t: pa.Table, src: ReleaseSource, name: str, locale: str, order: _Order) -> pa.Table:
    t = canonical_clip_table(t, f"{src.uri}:{name}.tsv")
    n = t.num_rows
    # Old releases leave the locale column empty; the release's own folder names it.
    loc = pc.if_else(pc.equal(pc.fill_null(t.column("locale"), ""), ""), locale, t.column("locale"))
    cols = {
        "release": pa.array([src.release] * n, pa.string()),
        "_source": pa.array([src.uri] * n, pa.string()),
        "_list": pa.array([name] * n, pa.string()),
        "_ord": order.take(n),
        "id": t.column("path"),
        **{c: (loc if c == "locale" else t.column(c)) for c in LIST_COLUMNS},
    }
    return pa.table(cols, schema=ROWS)


def ingest_release(
    ws: Workspace, src: ReleaseSource, split: str, storage: StorageConfig | None, order: _Order, max_tsv_bytes: int
) -> None:
    """Every TSV of one release into the workspace's ``cv_rows``, ``cv_durations`` and ``cv_reported``
    (Parquet parts of the workspace, a TSV block at a time).

    ``InputSchemaError`` when the curated ``split``'s TSV is absent (naming the lists there), is not a
    clip list, or when any TSV is malformed.
    """
    if split in NOT_CLIP_LISTS:
        raise InputSchemaError(f"{split}.tsv is not a clip list; pick one of {', '.join(KNOWN_SPLITS)}")
    wanted = {*KNOWN_SPLITS, split}
    _clips_inside(src, storage)
    seen = []
    names: list[str] = []

    def member(name: str) -> None:
        names.append(name)
        if len(names) >= MEMBER_BATCH:
            flush()

    def flush() -> None:
        members.write(pa.table([pa.array([src.uri] * len(names), pa.string()), pa.array(names, pa.string())], MEMBERS))
        names.clear()

    with (
        ws.writer("cv_rows", ROWS) as rows,
        ws.writer("cv_durations", DURATIONS) as durations,
        ws.writer("cv_reported", REPORTED) as reported,
        ws.writer("cv_members", MEMBERS) as members,
    ):
        tell = member if src.form == "tarball" else None
        for stem, tables in release_tsvs(src.located(storage), src.form, max_tsv_bytes, tell):
            seen.append(stem)
            where = f"{src.uri}:{stem}.tsv"
            if stem == "clip_durations":
                for t in tables:
                    if "clip" not in t.column_names or "duration[ms]" not in t.column_names:
                        raise InputSchemaError(
                            f"{where}: expected columns 'clip' and 'duration[ms]', got {t.column_names}"
                        )
                    ms = _int_column(t.column("duration[ms]"), "duration[ms]", where)
                    n = t.num_rows
                    release = pa.array([src.release] * n, pa.string())
                    durations.write(pa.table([release, t.column("clip"), ms, order.take(n)], schema=DURATIONS))
            elif stem == "reported":
                for t in tables:
                    n = t.num_rows
                    ids, texts = (
                        t.column(c) if c in t.column_names else pa.nulls(n, pa.string()) for c in REPORTED.names[1:]
                    )
                    release = pa.array([src.release] * n, pa.string())
                    reported.write(pa.table([release, ids, texts], schema=REPORTED))
            elif stem in wanted:
                for t in tables:
                    rows.write(_clip_rows(t, src, stem, src.locale, order))
        flush()
    if split not in seen:
        lists = sorted(a for a in seen if a not in NOT_CLIP_LISTS)
        kind = "delta release" if src.delta else "release"
        raise InputSchemaError(
            f"{src.uri}: this {kind} has no {split}.tsv; its clip lists are: {', '.join(lists) or 'none'}"
        )


def tarball_members(ws: Workspace, source: str) -> pa.Array:
    """The ``clips/`` members of tarball ``source``, as ``ingest_release`` noted them in its TSVs' pass."""
    return ws.arrow("SELECT id FROM cv_members WHERE _source = ?", [source]).column("id").combine_chunks()


def _clips_inside(src: ReleaseSource, storage: StorageConfig | None) -> None:
    """An extracted release's ``clips/`` on a local disk must be inside it: a link to a folder elsewhere would
    make the reader open files the release does not hold."""
    import os

    import pyarrow.fs as pafs

    where = src.located(storage)
    if src.form != "folder" or not isinstance(where.fs, pafs.LocalFileSystem):
        return
    clips = os.path.join(where.path, "clips")
    if os.path.lexists(clips):
        home, real = os.path.realpath(where.path), os.path.realpath(clips)
        if os.path.dirname(real) != home or not os.path.isdir(real):
            raise InputSchemaError(f"{src.uri}/clips leads outside the release (a link?); not read")


def _case(values: tuple[str, ...], lists: str) -> str:
    whens = " ".join(f"WHEN list_contains({lists}, '{v}') THEN '{v}'" for v in values)
    return f"CASE {whens} ELSE NULL END"


def release_views(ws: Workspace) -> None:
    """View ``release_view``: one row per (release, clip) of ``cv_rows``."""
    # A path that is not a plain file name inside clips/ is held before anything is opened.  SQL finds
    # the few candidates; the reader's own rule (clip_files.outside) words each one's reason.
    suspicious = ws.rows(r"""
        SELECT DISTINCT id FROM cv_rows
        WHERE id IS NULL OR id IN ('', '.', '..') OR contains(id, '/') OR contains(id, '\')
           OR regexp_matches(id, '[\x00-\x1f\x7f]') OR strlen(id) > 255""")
    holds = [(i, outside(i)) for (i,) in suspicious if outside(i)]
    ws.run("DROP TABLE IF EXISTS holds")
    ws.put("holds", pa.table({"id": pa.array([i for i, _ in holds], pa.string()),
                              "why": pa.array([w for _, w in holds], pa.string())}))  # fmt: skip
    names = [*STATUS_LISTS, *SPLIT_LISTS]
    others = sorted({n for (n,) in ws.rows("SELECT DISTINCT _list FROM cv_rows")} - set(names))
    names += others  # a custom clip list (a split of the user's own) after the known ones
    rank = " ".join(f"WHEN {quote(n)} THEN {i}" for i, n in enumerate(names))
    ws.materialize(
        "release_view",
        f"""
        WITH agg AS (
            -- Per clip and release: the row of the list that decides its status (the lowest rank, then the
            -- first), every list naming it (a bit each), and how many rows name it.
            SELECT release, id,
                   min((CASE _list {rank} END) * 4294967296 + _ord) AS k,
                   bit_or(1::BIGINT << (CASE _list {rank} END)) AS mask,
                   count(*) AS n
            FROM cv_rows GROUP BY release, id
        ),
        copies AS (  -- a list naming a clip more than once (rare): the most times one list does
            SELECT release, id, max(c) AS copies FROM (
                SELECT r.release, r.id, r._list, count(*) AS c
                FROM cv_rows r SEMI JOIN (SELECT release, id FROM agg WHERE n > bit_count(mask)) d USING (release, id)
                GROUP BY ALL)
            GROUP BY ALL
        ),
        durations AS (SELECT release, clip AS id, arg_max(ms, _ord) AS duration_ms
                      FROM cv_durations WHERE ms IS NOT NULL GROUP BY ALL),
        reported_ids AS (SELECT DISTINCT release, sentence_id FROM cv_reported WHERE sentence_id <> ''),
        reported_texts AS (SELECT DISTINCT release, sentence FROM cv_reported WHERE sentence <> ''),
        named AS (
            SELECT a.*, list_filter({list(names)!r}, lambda x, i: (a.mask >> (i - 1)) & 1 = 1) AS lists
            FROM agg a
        )
        SELECT a.id, a.release, {", ".join(f"r.{c} AS {c}" for c in LIST_COLUMNS)},
               a.lists, coalesce(c.copies, 1) AS copies,
               {_case(STATUS_LISTS, "a.lists")} AS cv_status,
               {_case(SPLIT_LISTS, "a.lists")} AS split,
               d.duration_ms,
               (ri.sentence_id IS NOT NULL OR rt.sentence IS NOT NULL) AS sentence_reported,
               h.why AS _hold,
               r._source AS _source
        FROM named a
        JOIN cv_rows r ON r._ord = a.k % 4294967296
        LEFT JOIN copies c ON c.release = a.release AND c.id = a.id
        LEFT JOIN durations d ON d.release = a.release AND d.id = a.id
        LEFT JOIN reported_ids ri ON ri.release = a.release AND ri.sentence_id = r.sentence_id
        LEFT JOIN reported_texts rt ON rt.release = a.release AND rt.sentence = r.sentence
        LEFT JOIN holds h ON h.id IS NOT DISTINCT FROM a.id
    """,
    )


def release_ranks(ws: Workspace, table: str = "release_view") -> None:
    """Table ``ranks`` (release, rank) of the releases in ``table``, by ``release_key``."""
    ws.run("DROP TABLE IF EXISTS ranks")
    ws.put("ranks", rank_table(r for (r,) in ws.rows(f"SELECT DISTINCT release FROM {table}")))


def latest_view(ws: Workspace) -> None:
    """View ``view``: one row per clip over the releases of ``release_view``, the newest release's columns,
    ``first_release``/``last_release`` and the history ``releases`` (oldest first)."""
    release_ranks(ws)
    cols = [c for c in ws.columns("release_view") if c not in ("id", "copies")]
    history = "{'release': release, 'status': cv_status, 'split': split}"
    if ws.scalar("SELECT count(*) FROM ranks") <= 1:  # one release: every clip's history is that release
        ws.run(f"""CREATE OR REPLACE VIEW view AS
                   SELECT id, {", ".join(cols)}, copies, [{history}] AS releases, release AS first_release,
                          release AS last_release
                   FROM release_view""")
        return
    fields = ", ".join(f"'{c}': {c}" for c in cols)
    ws.materialize(
        "view",
        f"""
        WITH r AS (SELECT v.*, coalesce(k.rank, 0) AS _rrank FROM release_view v LEFT JOIN ranks k USING (release)),
        agg AS (
            SELECT id,
                   arg_max({{{fields}}}, _rrank) AS n,
                   list({history} ORDER BY _rrank, release) AS releases,
                   arg_min(release, _rrank) AS first_release,
                   max(copies) AS copies
            FROM r GROUP BY id
        )
        SELECT id, {", ".join(f"n.{c} AS {c}" for c in cols)}, copies, releases, first_release,
               n.release AS last_release
        FROM agg
    """,
    )


def load_release(src: ReleaseSource, split: str, storage: StorageConfig | None = None, max_tsv_bytes: int = 8 << 30):
    """One release's ``release_view`` as an Arrow table (for a look at one release; runs use the view)."""
    with Workspace(memory_limit_mb=256) as ws:
        ingest_release(ws, src, split, storage, _Order(), max_tsv_bytes)
        release_views(ws)
        return ws.arrow("SELECT * FROM release_view ORDER BY id")


def releases_json(t: pa.Table) -> pa.Table:
    """``t`` with ``releases_json``: the history as JSON text, as the DAG carries it (Ray Data's LLM
    stage flattens nested columns)."""
    return t.append_column("releases_json", releases_to_json(t.column("releases")))
