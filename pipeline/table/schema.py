"""The clips table's and the audio table's columns, and the cast of any row set onto them.

A clips row is one clip of one locale, as of the latest release seen: every Common Voice column,
its status and split and their history per release, every score, gate and reason, and where it came
from (run, models, code).  Its audio is in the audio table, joined on ``audio_sha256``.
"""

from __future__ import annotations

import functools

import pyarrow as pa

from pipeline.columns import (
    AGREEMENT_KEY,
    AUDIO,
    AUDIO_SHA,
    AVG_LOGPROB,
    CER,
    COMPRESSION_RATIO,
    CV_INT_COLUMNS,
    CV_METADATA,
    DETECTED_LANGUAGE,
    DETECTED_LANGUAGE_PROB,
    DURATION,
    ERROR,
    ID,
    KEPT,
    LANGUAGE,
    NO_SPEECH_PROB,
    QUALITY,
    REASONS,
    SCORE,
    SCORE_EXPECTED,
    STAGE,
    TRANSCRIPT,
    WER,
)

# The history of a clip across releases: in which list it was, and which split.
RELEASE_ENTRY = pa.struct([("release", pa.string()), ("status", pa.string()), ("split", pa.string())])

# Common Voice's columns (pipeline.columns.CV_METADATA: the clip list's and what the reader adds), their
# history, and the locale.  cv_status: validated / other / invalidated / deleted, and split: train / dev /
# test, both as of last_release.
_CV_TYPES = {
    **dict.fromkeys((*CV_INT_COLUMNS, "duration_ms"), pa.int64()),
    "sentence_reported": pa.bool_(),
    "releases": pa.list_(RELEASE_ENTRY),
}
CV_FIELDS = [
    pa.field(name, _CV_TYPES.get(name, pa.string()))
    for name in (
        "locale",
        *(c for c in CV_METADATA if c != "last_release"),
        "first_release",
        "last_release",
        "releases",
    )
]
RESULT_FIELDS = [
    pa.field(DURATION, pa.float64()),
    pa.field(TRANSCRIPT, pa.string()),
    pa.field(SCORE, pa.int32()),
    pa.field(SCORE_EXPECTED, pa.float64()),
    pa.field(WER, pa.float64()),
    pa.field(CER, pa.float64()),
    pa.field(AGREEMENT_KEY, pa.string()),
    pa.field(AVG_LOGPROB, pa.float64()),
    pa.field(NO_SPEECH_PROB, pa.float64()),
    pa.field(COMPRESSION_RATIO, pa.float64()),
    pa.field(LANGUAGE, pa.string()),  # the language it is curated as: its locale's
    pa.field(DETECTED_LANGUAGE, pa.string()),  # what a multilingual Whisper heard (the language gate)
    pa.field(DETECTED_LANGUAGE_PROB, pa.float64()),
    *(pa.field(name, pa.float64()) for name in QUALITY),  # how it sounds (docs/curation.md "Acoustic quality")
    pa.field(KEPT, pa.bool_()),
    pa.field(REASONS, pa.list_(pa.string())),
    pa.field(ERROR, pa.string()),  # null unless quarantined
    pa.field(STAGE, pa.string()),
    pa.field(AUDIO_SHA, pa.string()),
    pa.field("audio_size", pa.int64()),
]
PROVENANCE_FIELDS = [
    pa.field("engine_key", pa.string()),  # models, revisions and engine settings that made the scores
    pa.field("processed_run", pa.string()),  # the run whose engines scored it
    pa.field("updated_run", pa.string()),  # the last run that changed the row
    pa.field("request_key", pa.string()),
    pa.field("transcriber", pa.string()),  # ref@revision
    pa.field("judge", pa.string()),
    pa.field("code_version", pa.string()),
    pa.field("processed_at", pa.timestamp("us", tz="UTC")),
    pa.field("updated_at", pa.timestamp("us", tz="UTC")),
]
CLIPS = pa.schema([pa.field(ID, pa.string(), nullable=False), *CV_FIELDS, *RESULT_FIELDS, *PROVENANCE_FIELDS])
AUDIO_TABLE = pa.schema(
    [
        pa.field(AUDIO_SHA, pa.string(), nullable=False),
        pa.field(ID, pa.string()),
        pa.field("size", pa.int64()),
        pa.field(AUDIO, pa.binary()),
    ]
)
# Columns the reader never fills for Parquet inputs; they pass through only if the input has them.
INTERNAL = frozenset({"releases_json", "read_error", "_source"})


def plain_type(t: pa.DataType) -> pa.DataType:
    """A dictionary-encoded type (a pandas ``category`` read back from Parquet) as its values' type: how the
    table stores such a column, and how the input reads it."""
    return t.value_type if pa.types.is_dictionary(t) else t


def clips_schema(extra: pa.Schema | None = None) -> pa.Schema:
    """The clips schema plus an input's own pass-through columns (Parquet mirrors carry their own)."""
    fields = list(CLIPS)
    if extra is not None:
        names = set(CLIPS.names)
        fields += [
            f.with_type(plain_type(f.type)).with_nullable(True)
            for f in extra
            if f.name not in names and f.name not in INTERNAL
        ]
    return pa.schema(fields)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, in order, cast; absent columns are null.

    pyiceberg reads strings as large_string and writes what its schema says; casting here keeps every
    data file of a table on one physical schema, whoever wrote it.
    """
    if "releases" not in table.column_names and "releases_json" in table.column_names:
        # The DAG carries the history as JSON text: Ray Data's LLM stage flattens nested columns.
        table = table.append_column("releases", releases_from_json(table.column("releases_json")))
    cols = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


# The history as DuckDB's JSON type spec, for ``from_json``.
_HISTORY_SPEC = "[{" + ",".join(f'"{f.name}":"VARCHAR"' for f in RELEASE_ENTRY) + "}]"


@functools.cache
def _duckdb():
    """One in-memory DuckDB per process, one thread (a Ray worker has its own cores' share): opening one
    costs about 14 ms, a cursor on it 1 ms, and the sink calls this for every data file it writes.  Not a
    ``Workspace``: that one has a spill folder, and gives up row order, which this codec is."""
    import duckdb

    return duckdb.connect(config={"threads": 1, "preserve_insertion_order": True})


def _column_sql(values: pa.Array | pa.ChunkedArray, expr: str) -> pa.ChunkedArray:
    """``expr`` over ``values`` (as ``v``), row for row in order, in DuckDB: columnar, where a Python loop
    over a first night's 2 M histories took seconds and held a Python object per row."""
    t = pa.table({"v": values})  # noqa: F841 (read by name: DuckDB scans the Arrow table in place)
    cur = _duckdb().cursor()  # a cursor per call: callers on other threads never share one
    try:
        return cur.sql(f"SELECT {expr} FROM t").to_arrow_table().column(0)
    finally:
        cur.close()


def releases_to_json(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """Each history (a list of ``RELEASE_ENTRY``) as compact JSON text; null as ``[]``."""
    return _column_sql(values, "coalesce(to_json(v), '[]')").cast(pa.string())


def releases_from_json(values: pa.Array | pa.ChunkedArray) -> pa.ChunkedArray:
    """``releases_to_json``'s text (or ``json.dumps``') back to histories; null or empty text as ``[]``."""
    return _column_sql(values, f"from_json(coalesce(nullif(v, ''), '[]'), '{_HISTORY_SPEC}')").cast(
        pa.list_(RELEASE_ENTRY)
    )
