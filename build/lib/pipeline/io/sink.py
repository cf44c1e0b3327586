"""Write: one pass that splits every block into curated, scores and quarantine Parquet files.

Files go to a staging directory; only files whose write task *succeeded* are reported back, so a
retried task's leftovers are never committed (see ``pipeline.io.commit``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import Block, BlockAccessor
from ray.data.datasource import Datasink

from pipeline.columns import (
    AUDIO,
    CER,
    CONFIDENCE,
    DURATION,
    ERROR,
    ID,
    KEPT,
    LANGUAGE,
    REASONS,
    SCORE,
    SCORE_EXPECTED,
    SENTENCE,
    STAGE,
    TRANSCRIPT,
    WER,
)
from pipeline.config import StorageConfig
from pipeline.io.storage import resolve_filesystem
from pipeline.manifest import Counts, Histogram, OutputFile, ScoreBin, Tally
from pipeline.metrics import expected_score_bins, score_histogram, wer_histogram
from pipeline.stages.gates import reason_counts


def output_schemas(input_schema: pa.Schema, passthrough: tuple[str, ...], has_sentence: bool, keep_audio: bool):
    """The three output schemas, fixed up front so every file of a run has the same columns."""
    judged = [
        pa.field(ID, pa.string()),
        pa.field(TRANSCRIPT, pa.string()),
        pa.field(SCORE, pa.int8()),
        pa.field(SCORE_EXPECTED, pa.float64()),
    ]
    # Every input column (Common Voice's TSV columns, or Parquet's pass-through) travels with the row
    # into both curated/ and scores/, so a rejected row can be studied without a join.
    meta = [pa.field(DURATION, pa.float64())]
    if has_sentence:
        meta.append(pa.field(SENTENCE, pa.string()))
    meta += [input_schema.field(c) for c in passthrough]
    quality = [
        pa.field(WER, pa.float64()),
        pa.field(CER, pa.float64()),
        *[pa.field(c, pa.string() if c == LANGUAGE else pa.float64()) for c in CONFIDENCE],
    ]
    curated = [*judged, *quality, *meta]
    if keep_audio:
        curated.append(pa.field(AUDIO, pa.binary()))
    return {
        "curated": pa.schema(curated),
        "scores": pa.schema(
            [*judged, pa.field(KEPT, pa.bool_()), pa.field(REASONS, pa.list_(pa.string())), *quality, *meta]
        ),
        "quarantine": pa.schema(
            [pa.field(ID, pa.string()), pa.field(ERROR, pa.string()), pa.field(STAGE, pa.string())]
        ),
    }


def split_block(table: pa.Table, schemas: dict[str, pa.Schema]) -> dict[str, pa.Table]:
    failed = pc.is_valid(table.column(ERROR))  # a row with an error is quarantined; null means healthy
    masks = {
        "curated": pc.and_(pc.invert(failed), table.column(KEPT)),
        "scores": pc.invert(failed),
        "quarantine": failed,
    }
    out = {}
    for kind, mask in masks.items():
        sub = table.filter(mask)
        cols = [sub.column(f.name).cast(f.type) for f in schemas[kind]]
        out[kind] = pa.Table.from_arrays(cols, schema=schemas[kind])
    return out


def block_tally(table: pa.Table, parts: dict[str, pa.Table]) -> Tally:
    """What one block adds to the run's counts, audio seconds and histograms."""
    scores = parts["scores"]
    healthy = pc.is_null(table.column(ERROR))
    stages = parts["quarantine"].column(STAGE).to_pylist()
    bins = expected_score_bins(scores.column(SCORE_EXPECTED).to_pylist())
    return Tally(
        counts=Counts(
            in_=table.num_rows,
            kept=parts["curated"].num_rows,
            rejected=scores.num_rows - parts["curated"].num_rows,
            quarantined=parts["quarantine"].num_rows,
        ),
        audio_seconds=pc.sum(pc.if_else(healthy, table.column(DURATION), 0.0)).as_py() or 0.0,
        histogram=Histogram(
            score={str(k): v for k, v in score_histogram(scores.column(SCORE).to_pylist()).items()},
            score_expected=[ScoreBin(lo=lo, hi=hi, count=c) for lo, hi, c in bins],
        ),
        reasons=reason_counts(scores.column(REASONS).to_pylist()),
        quarantined_by_stage=dict(Counter(s or "unknown" for s in stages)),
        wer_bins=wer_histogram(scores.column(WER).to_pylist()),
    )


class CurationSink(Datasink[list[dict[str, Any]]]):
    def __init__(self, staging_uri: str, storage: StorageConfig, schemas: dict[str, pa.Schema]):
        self.staging_uri = staging_uri
        self.storage = storage
        self.schemas = schemas
        self.files: list[OutputFile] = []
        self.tallies: list[Tally] = []

    def write(self, blocks: Iterable[Block], ctx) -> list[dict[str, Any]]:
        fs, base = resolve_filesystem(self.staging_uri, self.storage)
        written = []
        for block in blocks:
            table = BlockAccessor.for_block(block).to_arrow()
            if table.num_rows == 0:
                continue
            parts = split_block(table, self.schemas)
            files = []
            for kind, sub in parts.items():
                if sub.num_rows == 0:
                    continue
                rel = f"{kind}/part-{ctx.task_idx:05d}-{uuid.uuid4().hex[:12]}.parquet"
                fs.create_dir(f"{base}/{kind}", recursive=True)
                pq.write_table(sub, f"{base}/{rel}", filesystem=fs)
                size = fs.get_file_info(f"{base}/{rel}").size
                files.append(OutputFile(kind=kind, path=rel, rows=sub.num_rows, bytes=size).model_dump())
            # Plain dicts cross the process boundary; the driver turns them back into types.
            written.append({"files": files, "tally": block_tally(table, parts).model_dump(by_alias=True)})
        return written

    def on_write_complete(self, write_result) -> None:
        # Only tasks that succeeded report here, so a retried task's leftovers are never listed.
        for returns in write_result.write_returns:
            for w in returns or []:
                self.files += [OutputFile.model_validate(f) for f in w["files"]]
                self.tallies.append(Tally.model_validate(w["tally"]))
