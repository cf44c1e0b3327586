"""Write: one pass that splits every block into curated, scores and quarantine Parquet files.

Files go to a staging directory; only files whose write task *succeeded* are reported back, so a
retried task's leftovers are never committed (see ``pipeline.commit``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink

from pipeline.config import StorageConfig
from pipeline.metrics import expected_score_bins, score_histogram
from pipeline.storage import resolve_filesystem

KINDS = ("curated", "scores", "quarantine")


def output_schemas(input_schema: pa.Schema, passthrough: tuple[str, ...], has_sentence: bool, keep_audio: bool):
    """The three output schemas, fixed up front so every file of a run has the same columns."""
    judged = [
        pa.field("id", pa.string()),
        pa.field("transcription", pa.string()),
        pa.field("score", pa.int8()),
        pa.field("score_expected", pa.float64()),
    ]
    # Every input column (Common Voice's TSV columns, or Parquet's pass-through) travels with the row
    # into both curated/ and scores/, so a rejected row can be studied without a join.
    meta = [pa.field("duration_s", pa.float64())]
    if has_sentence:
        meta.append(pa.field("sentence", pa.string()))
    meta += [input_schema.field(c) for c in passthrough]
    curated = [*judged, *meta]
    if keep_audio:
        curated.append(pa.field("audio_bytes", pa.binary()))
    return {
        "curated": pa.schema(curated),
        "scores": pa.schema([*judged, pa.field("kept", pa.bool_()), *meta]),
        "quarantine": pa.schema(
            [pa.field("id", pa.string()), pa.field("error", pa.string()), pa.field("stage", pa.string())]
        ),
    }


def split_block(table: pa.Table, schemas: dict[str, pa.Schema]) -> dict[str, pa.Table]:
    failed = pc.not_equal(table.column("error"), "")
    masks = {
        "curated": pc.and_(pc.invert(failed), table.column("kept")),
        "scores": pc.invert(failed),
        "quarantine": failed,
    }
    out = {}
    for kind, mask in masks.items():
        sub = table.filter(mask)
        cols = [sub.column(f.name).cast(f.type) for f in schemas[kind]]
        out[kind] = pa.Table.from_arrays(cols, schema=schemas[kind])
    return out


class CurationSink(Datasink[list[dict[str, Any]]]):
    def __init__(self, staging_uri: str, storage: StorageConfig, schemas: dict[str, pa.Schema]):
        self.staging_uri = staging_uri
        self.storage = storage
        self.schemas = schemas
        self.written: list[dict[str, Any]] = []

    def write(self, blocks: Iterable[Block], ctx) -> list[dict[str, Any]]:
        fs, base = resolve_filesystem(self.staging_uri, self.storage)
        written = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue
            ok = pc.equal(table.column("error"), "")
            audio_s = pc.sum(pc.if_else(ok, table.column("duration_s"), 0.0)).as_py() or 0.0
            written.append({"kind": "_stats", "rows": table.num_rows, "audio_s": audio_s})
            for kind, sub in split_block(table, self.schemas).items():
                if sub.num_rows == 0:
                    continue
                rel = f"{kind}/part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:12]}.parquet"
                fs.create_dir(f"{base}/{kind}", recursive=True)
                pq.write_table(sub, f"{base}/{rel}", filesystem=fs)
                entry = {
                    "kind": kind,
                    "path": rel,
                    "rows": sub.num_rows,
                    "bytes": fs.get_file_info(f"{base}/{rel}").size,
                }
                if kind == "scores":
                    entry["score_counts"] = score_histogram(sub.column("score").to_pylist())
                    entry["expected_bins"] = [
                        c for _, _, c in expected_score_bins(sub.column("score_expected").to_pylist())
                    ]
                written.append(entry)
        return written

    def on_write_complete(self, write_result) -> None:
        self.written = [w for returns in write_result.write_returns for w in (returns or [])]
