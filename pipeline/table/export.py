"""Export a view of the dataset's table to what trainers load: Parquet, Hugging Face, NeMo, WebDataset.

A view is one locale's clips table at a snapshot (the current one, a tag such as ``nightly-2026-12-01``,
or a snapshot id), optionally frozen to one release's split (from each row's history).  Audio is read
from the audio table batch by batch and joined on ``audio_sha256``, so an export never holds more than
a batch of audio in memory.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.columns import (
    AUDIO,
    AUDIO_SHA,
    DURATION,
    ERROR,
    ID,
    KEPT,
    LEADING_SILENCE,
    SENTENCE,
    STAGE,
    TRAILING_SILENCE,
    TRANSCRIPT,
    TRIM_END,
    TRIM_START,
)
from pipeline.config import CurationConfig
from pipeline.table.catalog import TableError, table_root

Format = Literal["parquet", "hf", "nemo", "webdataset"]
ROWS_PER_FILE = 2000


@dataclass
class ExportResult:
    table: str
    snapshot_id: int
    rows: dict[str, int]
    to: str


def _snapshot(table, as_of: str | None) -> int:
    if table.current_snapshot() is None:
        raise TableError(f"{'.'.join(table.name())} has no snapshot yet: no run has committed to it")
    if as_of is None:
        snap = table.current_snapshot()
    elif as_of.isdigit():
        snap = table.snapshot_by_id(int(as_of))
    else:
        snap = table.snapshot_by_name(as_of)
    if snap is None:
        tags = sorted(n for n, r in table.refs().items() if n != "main")
        raise TableError(f"{'.'.join(table.name())} has no snapshot {as_of!r}; its tags: {', '.join(tags) or 'none'}")
    return snap.snapshot_id


def view(
    output: str,
    cfg: CurationConfig,
    locale: str,
    as_of: str | None = None,
    release: str | None = None,
    split: str | None = None,
) -> tuple[Any, Any, int, pa.Table]:
    """(clips table, audio table, snapshot id, the rows of the view)."""
    root = table_root(output, cfg)
    catalog = root.catalog()
    clips_id, audio_id = root.identifiers(locale)
    from pyiceberg.exceptions import NoSuchTableError

    try:
        clips, audio = catalog.load_table(clips_id), catalog.load_table(audio_id)
    except NoSuchTableError:
        have = [".".join(t) for t in catalog.list_tables(root.namespace)] if root.namespace else []
        raise TableError(f"{output} has no table {clips_id}; it has: {', '.join(have) or 'none'}") from None
    snapshot = _snapshot(clips, as_of)
    rows = clips.scan(snapshot_id=snapshot).to_arrow()
    if release is not None:
        entries = rows.column("releases").to_pylist()
        keep = [
            any(e["release"] == release and (split is None or e["split"] == split) for e in (es or []))
            for es in entries
        ]
        rows = rows.filter(pa.array(keep, pa.bool_()))
    elif split is not None:
        rows = rows.filter(pc.equal(rows.column("split"), split))
    return clips, audio, snapshot, rows


def _with_audio(audio, rows: pa.Table, batch_rows: int = ROWS_PER_FILE) -> Iterator[pa.Table]:
    """``rows`` (kept clips) in batches, each with its ``audio_bytes``, streamed from the audio table."""
    wanted: dict[str, list[int]] = {}
    for i, sha in enumerate(rows.column(AUDIO_SHA).to_pylist()):
        if sha:
            wanted.setdefault(sha, []).append(i)
    missing = rows.num_rows - sum(len(v) for v in wanted.values())
    if missing:
        raise TableError(f"{missing} kept row(s) have no audio (the run had --no-audio); export without audio")
    if audio.current_snapshot() is None:
        raise TableError("the audio table is empty")
    idx: list[int] = []
    blobs: list[bytes] = []
    for batch in audio.scan(selected_fields=(AUDIO_SHA, AUDIO)).to_arrow_batch_reader():
        shas = batch.column(0)
        hit = pc.is_in(shas, value_set=pa.array(list(wanted), pa.string()))
        if not pc.any(hit).as_py():
            continue
        sub = pa.Table.from_batches([batch]).filter(hit)
        for sha, data in zip(sub.column(AUDIO_SHA).to_pylist(), sub.column(AUDIO).to_pylist(), strict=True):
            for i in wanted.pop(sha, []):
                idx.append(i)
                blobs.append(data)
            if len(idx) >= batch_rows:
                yield rows.take(pa.array(idx, pa.int64())).append_column(AUDIO, pa.array(blobs, pa.binary()))
                idx, blobs = [], []
    if idx:
        yield rows.take(pa.array(idx, pa.int64())).append_column(AUDIO, pa.array(blobs, pa.binary()))
    if wanted:
        raise TableError(f"{sum(len(v) for v in wanted.values())} kept row(s) point at audio the audio table lacks")


def trimmed(batch: pa.Table, pad: float) -> pa.Table:
    """``batch`` with each clip's audio cut to its speech (``quality.trim_silence``), re-encoded as FLAC
    at its own rate (lossless from the decoded samples), and the cut recorded in ``trim_start_s`` and
    ``trim_end_s`` (seconds of the original) and ``duration_s``.  A clip without measured silences
    (quality was off when it was scored) is left whole, with null trim columns."""
    import io

    import soundfile as sf

    from pipeline.quality.signals import trim_span

    blobs, starts, ends = [], [], []
    durations = batch.column(DURATION).to_pylist()
    for data, dur, lead, trail in zip(
        batch.column(AUDIO).to_pylist(),
        durations,
        batch.column(LEADING_SILENCE).to_pylist() if LEADING_SILENCE in batch.column_names else [None] * len(durations),
        batch.column(TRAILING_SILENCE).to_pylist()
        if TRAILING_SILENCE in batch.column_names
        else [None] * len(durations),
        strict=True,
    ):
        span = trim_span(dur or 0.0, lead, trail, pad)
        if span is None:
            blobs.append(data)
            starts.append(None)
            ends.append(None)
            continue
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
        cut = audio[int(span[0] * rate) : round(span[1] * rate)]
        buf = io.BytesIO()
        sf.write(buf, cut, rate, format="FLAC")
        blobs.append(buf.getvalue())
        starts.append(span[0])
        ends.append(span[1])
    new_durations = [e - s if s is not None else d for s, e, d in zip(starts, ends, durations, strict=True)]
    out = batch.set_column(batch.schema.get_field_index(AUDIO), AUDIO, pa.array(blobs, pa.binary()))
    out = out.set_column(out.schema.get_field_index(DURATION), DURATION, pa.array(new_durations, pa.float64()))
    return out.append_column(TRIM_START, pa.array(starts, pa.float64())).append_column(
        TRIM_END, pa.array(ends, pa.float64())
    )


def _flat(rows: pa.Table) -> pa.Table:
    """Scalar columns for consumers that dislike nested ones: the release history as JSON text."""
    if "releases" in rows.column_names:
        text = pa.array([json.dumps(v or []) for v in rows.column("releases").to_pylist()], pa.string())
        rows = rows.set_column(rows.schema.get_field_index("releases"), "releases", text)
    casts = []
    for f in rows.schema:
        t = f.type
        if pa.types.is_large_string(t):
            t = pa.string()
        elif pa.types.is_large_list(t):
            t = pa.list_(pa.string() if pa.types.is_large_string(t.value_type) else t.value_type)
        elif pa.types.is_large_binary(t):
            t = pa.binary()
        casts.append(pa.field(f.name, t))
    return rows.cast(pa.schema(casts))


def audio_extension(data: bytes) -> str:
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"RIFF":
        return "wav"
    if data[:4] == b"OggS":
        return "ogg"
    return "mp3"


SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def file_name(rid: str, data: bytes) -> str:
    """A file name for a clip: its id when that is a plain name, else a safe stand-in; the right extension."""
    import hashlib

    base = rid if SAFE_NAME.match(rid) else f"clip-{hashlib.sha1(rid.encode()).hexdigest()[:16]}"
    ext = audio_extension(data)
    return base if base.lower().endswith(f".{ext}") else f"{base}.{ext}"


def export(
    output: str,
    cfg: CurationConfig,
    locale: str,
    fmt: Format,
    to: str,
    as_of: str | None = None,
    release: str | None = None,
    split: str | None = None,
) -> ExportResult:
    clips, audio, snapshot, rows = view(output, cfg, locale, as_of, release, split)
    dest = Path(to)
    dest.mkdir(parents=True, exist_ok=True)
    healthy = rows.filter(pc.is_null(rows.column(ERROR)))
    kept = healthy.filter(pc.fill_null(healthy.column(KEPT), False))
    counts: dict[str, int] = {}
    q = cfg.quality

    def curated() -> Iterator[pa.Table]:
        for batch in _with_audio(audio, kept):
            yield trimmed(batch, q.trim_pad_s) if q.trim_silence else batch

    if fmt == "parquet":
        counts["curated"] = _write_parquet(dest / "curated", (_flat(b) for b in curated()))
        counts["scores"] = _write_parquet(dest / "scores", iter([_flat(healthy)]))
        quarantine = rows.filter(pc.is_valid(rows.column(ERROR))).select([ID, ERROR, STAGE])
        counts["quarantine"] = _write_parquet(dest / "quarantine", iter([_flat(quarantine)]))
    elif fmt == "hf":
        counts["curated"] = _write_hf(dest, curated(), split or "train")
    elif fmt == "nemo":
        counts["curated"] = _write_nemo(dest, curated())
    elif fmt == "webdataset":
        counts["curated"] = _write_webdataset(dest, curated())
    else:
        raise ValueError(f"unknown export format {fmt!r}")
    return ExportResult(".".join(clips.name()), snapshot, counts, str(dest))


def _write_parquet(folder: Path, batches: Iterator[pa.Table]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, batch in enumerate(batches):
        if batch.num_rows:
            pq.write_table(batch, folder / f"part-{i:05d}.parquet")
            n += batch.num_rows
    return n


def _hf_feature(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(t):
        return {"feature": _hf_feature(t.value_type), "_type": "Sequence"}
    names = {
        pa.string(): "string",
        pa.int64(): "int64",
        pa.int32(): "int32",
        pa.float64(): "float64",
        pa.bool_(): "bool",
    }
    if pa.types.is_timestamp(t):
        return {"dtype": f"timestamp[{t.unit}, tz={t.tz}]" if t.tz else f"timestamp[{t.unit}]", "_type": "Value"}
    return {"dtype": names.get(t, "string"), "_type": "Value"}


def _write_hf(dest: Path, batches: Iterator[pa.Table], split: str) -> int:
    """Parquet with ``audio`` as ``{bytes, path}`` and the ``datasets`` features in the schema metadata,
    so ``datasets.load_dataset("parquet", data_dir=...)`` gives an ``Audio`` column that decodes."""
    n, files = 0, []
    for i, batch in enumerate(batches):
        batch = _flat(batch)
        ids, blobs = batch.column(ID).to_pylist(), batch.column(AUDIO).to_pylist()
        audio = pa.array(
            [{"bytes": b, "path": file_name(r, b)} for r, b in zip(ids, blobs, strict=True)],
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
        table = batch.drop_columns([AUDIO]).append_column("audio", audio)
        features = {f.name: _hf_feature(f.type) for f in table.schema if f.name != "audio"}
        features["audio"] = {"_type": "Audio"}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
        path = dest / f"{split}-{i:05d}.parquet"
        pq.write_table(table, path)
        files.append(path)
        n += table.num_rows
    return n


def _write_nemo(dest: Path, batches: Iterator[pa.Table]) -> int:
    """``manifest.jsonl`` (``audio_filepath``, ``duration``, ``text`` = the prompted sentence, and the CV
    columns) and the audio files under ``audio/``."""
    folder = dest / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(dest / "manifest.jsonl", "w", encoding="utf-8") as out:
        for batch in batches:
            for row in _flat(batch).to_pylist():
                data = row.pop(AUDIO)
                path = folder / file_name(row[ID], data)
                path.write_bytes(data)
                duration = row.get("duration_s") or ((row.get("duration_ms") or 0) / 1000)
                entry = {
                    "audio_filepath": str(path.resolve()),
                    "duration": duration,
                    "text": row.get(SENTENCE) or row.get(TRANSCRIPT) or "",
                    **{k: _jsonable(v) for k, v in row.items()},
                }
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                n += 1
    return n


def _jsonable(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def _write_webdataset(dest: Path, batches: Iterator[pa.Table]) -> int:
    """Tar shards through Ray Data's ``write_webdataset``: per clip its audio (``mp3``/``flac``/…) and
    its row as ``json``."""
    import ray

    from pipeline.ray_init import ensure_ray

    ensure_ray(CurationConfig())
    items = []
    for batch in batches:
        for row in _flat(batch).to_pylist():
            data = row.pop(AUDIO)
            key = re.sub(r"[^A-Za-z0-9_-]", "_", os.path.splitext(row[ID])[0])
            meta = json.dumps({k: _jsonable(v) for k, v in row.items()}, ensure_ascii=False)
            items.append({"__key__": key, audio_extension(data): data, "json": meta.encode()})
    if not items:
        return 0
    # Our values are bytes already (encoder=None); one tar shard per ROWS_PER_FILE samples.
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // ROWS_PER_FILE))
    ds.write_webdataset(str(dest.resolve()), encoder=None, min_rows_per_file=ROWS_PER_FILE)
    return len(items)
