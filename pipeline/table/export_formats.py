"""The export formats, each a writer of the export's row batches: Parquet, a Hugging Face dataset, a NeMo
manifest with its audio files, and WebDataset shards; and the names their audio files get."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.columns import (
    AUDIO,
    ID,
    SENTENCE,
    TRANSCRIPT,
)
from pipeline.table.schema import releases_to_json
from pipeline.table.workspace import Workspace

Format = Literal["parquet", "hf", "nemo", "webdataset"]
ROWS_PER_FILE = 2000


def flat(rows: pa.Table) -> pa.Table:
    """Scalar columns for consumers that dislike nested ones: the release history as JSON text."""
    if "releases" in rows.column_names:
        text = releases_to_json(rows.column("releases"))
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


# A release's id is its clip's file name (``common_voice_en_1.mp3``): its key is the name without the extension.
RELEASE_FORM = r"(?i)^([A-Za-z0-9_-]+)\.(?:mp3|flac|wav|ogg|opus)$"  # Python's re and DuckDB's RE2 alike
PLAIN = re.compile(r"[A-Za-z0-9_-]+")
MAX_KEY = 200  # a file name holds 255 bytes; the audio extension needs the rest


def sample_key(rid: str) -> str:
    """A clip's name in an export, unique for every id and free of dots (WebDataset splits a member's name at
    its first dot into key and extension, so ``spk1.utt1`` and ``spk1.utt2`` were both sample ``spk1``):
    a release's clip name without its extension, a plain id as it is, any other id with each byte outside
    ``A-Za-z0-9_-`` written as ``%XX`` (``spk1%2Eutt1``).  Only ``x`` beside ``x.mp3`` can meet
    (``name_clash`` finds them before an export writes)."""
    release = re.match(RELEASE_FORM, rid)
    if release:
        key = release.group(1)
    elif PLAIN.fullmatch(rid):
        key = rid
    else:
        key = "".join(chr(b) if PLAIN.fullmatch(chr(b)) else f"%{b:02X}" for b in rid.encode())
    if len(key) > MAX_KEY:
        key = f"{key[: MAX_KEY - 17]}-{hashlib.sha1(rid.encode()).hexdigest()[:16]}"
    return key


def file_name(rid: str, data: bytes) -> str:
    """A file name for a clip: its ``sample_key`` and its audio's extension."""
    return f"{sample_key(rid)}.{audio_extension(data)}"


def name_clash(ws: Workspace, rows: str) -> tuple[str, str] | None:
    """Two ids of ``rows`` that one export name would hold (``x`` and ``x.mp3``), or None."""
    found = ws.rows(
        f"""SELECT a.{ID}, b.{ID} FROM {rows} a JOIN {rows} b
            ON b.{ID} = regexp_extract(a.{ID}, ?, 1) WHERE regexp_matches(a.{ID}, ?) LIMIT 1""",
        [RELEASE_FORM, RELEASE_FORM],
    )
    return tuple(found[0]) if found else None


def tables(ws: Workspace, sql: str) -> Iterator[pa.Table]:
    for batch in ws.batches(sql, rows=ROWS_PER_FILE * 10):
        yield flat(pa.Table.from_batches([batch]))


def write_parquet(folder: Path, batches: Iterator[pa.Table]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for i, batch in enumerate(batches):
        if batch.num_rows:
            pq.write_table(batch, folder / f"part-{i:05d}.parquet")
            n += batch.num_rows
    return n


def hf_feature(t: pa.DataType) -> dict[str, Any]:
    if pa.types.is_list(t):
        return {"feature": hf_feature(t.value_type), "_type": "Sequence"}
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


def write_hf(dest: Path, batches: Iterator[pa.Table], split: str) -> int:
    """Parquet with ``audio`` as ``{bytes, path}`` and the ``datasets`` features in the schema metadata,
    so ``datasets.load_dataset("parquet", data_dir=...)`` gives an ``Audio`` column (docs/data.md says how
    it decodes under each ``datasets`` release)."""
    n = 0
    for i, batch in enumerate(batches):
        batch = flat(batch)
        ids, blobs = batch.column(ID).to_pylist(), batch.column(AUDIO).to_pylist()
        audio = pa.array(
            [{"bytes": b, "path": file_name(r, b)} for r, b in zip(ids, blobs, strict=True)],
            pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
        )
        table = batch.drop_columns([AUDIO]).append_column("audio", audio)
        features = {f.name: hf_feature(f.type) for f in table.schema if f.name != "audio"}
        features["audio"] = {"_type": "Audio"}
        table = table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})
        pq.write_table(table, dest / f"{split}-{i:05d}.parquet")
        n += table.num_rows
    return n


def write_nemo(work: Path, batches: Iterator[pa.Table], absolute: bool, dest: Path) -> int:
    """``manifest.jsonl`` (``audio_filepath``, ``duration``, ``text`` = the prompted sentence, and the CV
    columns) and the audio files under ``audio/``.  Paths are relative to the manifest (the folder can
    move), or absolute (where it lands) with ``absolute``."""
    folder = work / "audio"
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(work / "manifest.jsonl", "w", encoding="utf-8") as out:
        for batch in batches:
            for row in flat(batch).to_pylist():
                data = row.pop(AUDIO)
                name = file_name(row[ID], data)
                (folder / name).write_bytes(data)
                duration = row.get("duration_s") or ((row.get("duration_ms") or 0) / 1000)
                entry = {
                    "audio_filepath": str(dest / "audio" / name) if absolute else f"audio/{name}",
                    "duration": duration,
                    "text": row.get(SENTENCE) or row.get(TRANSCRIPT) or "",
                    **{k: jsonable(v) for k, v in row.items()},
                }
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
                n += 1
    return n


def jsonable(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v


def write_webdataset(dest: Path, batches: Iterator[pa.Table]) -> int:
    """WebDataset tar shards written as the rows stream: per clip its audio (``mp3``/``flac``/…) and its
    row as ``json``, ``ROWS_PER_FILE`` clips a shard."""
    n, shard, tar = 0, 0, None
    try:
        for batch in batches:
            for row in flat(batch).to_pylist():
                if tar is None or n % ROWS_PER_FILE == 0:
                    if tar is not None:
                        tar.close()
                    tar = tarfile.open(dest / f"shard-{shard:06d}.tar", "w")  # noqa: SIM115 (closed below)
                    shard += 1
                data = row.pop(AUDIO)
                key = sample_key(row[ID])
                meta = json.dumps({k: jsonable(v) for k, v in row.items()}, ensure_ascii=False).encode()
                for suffix, payload in ((audio_extension(data), data), ("json", meta)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
                n += 1
    finally:
        if tar is not None:
            tar.close()
    return n
