"""Export a view of the dataset's table to what trainers load: Parquet, Hugging Face, NeMo, WebDataset.

A view is one locale's clips table at a snapshot (the current one, a tag such as ``nightly-2026-12-01``,
a snapshot id, or the snapshot current at an ISO time), optionally frozen to one release's split (from
each row's history).  Everything streams: the view's rows are read by the workspace (DuckDB) a data
file at a time, and each clip's audio is met one audio data file at a time (the kept rows are first
grouped by the audio file that holds their sha256), so memory holds one audio file's clips, whatever
the table's size.

An export is written beside its destination and moved into place once complete: a reader never sees
half of one.  A destination that holds anything is refused unless ``overwrite``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.columns import (
    AUDIO,
    AUDIO_SHA,
    AUDIO_SIZE,
    DURATION,
    ERROR,
    ID,
    KEPT,
    LEADING_SILENCE,
    STAGE,
    TRAILING_SILENCE,
    TRIM_END,
    TRIM_START,
)
from pipeline.config import CurationConfig
from pipeline.runtime.owner import OWNER, abandoned, hold
from pipeline.table import export_formats
from pipeline.table.catalog import TableError, table_root
from pipeline.table.export_formats import ROWS_PER_FILE
from pipeline.table.workspace import Workspace, quote

Format = Literal["parquet", "hf", "nemo", "webdataset"]
# The export streams: its sorts and joins spill past this, so the process stays under 1 GiB at 2M rows
# (bench/export_scale.py; with the plan's 768 MB it peaked at 1.1-1.3 GiB).
EXPORT_MEMORY_MB = 384


@dataclass
class ExportResult:
    table: str
    snapshot_id: int
    rows: dict[str, int]
    to: str


def snapshot_of(table, as_of: str | None) -> int:
    """The snapshot ``as_of`` names: a tag, a snapshot id, or an ISO time (the snapshot current then)."""
    name = ".".join(table.name())
    if table.current_snapshot() is None:
        raise TableError(f"{name} has no snapshot yet: no run has committed to it")
    if as_of is None:
        snap = table.current_snapshot()
    elif as_of.isdigit():
        snap = table.snapshot_by_id(int(as_of))
    else:
        snap = table.snapshot_by_name(as_of)
        if snap is None and re.match(r"^\d{4}-\d{2}-\d{2}", as_of):
            try:
                when = datetime.fromisoformat(as_of.replace("Z", "+00:00"))
            except ValueError:
                raise TableError(f"--as-of {as_of!r}: not a tag, a snapshot id, or an ISO time") from None
            if when.tzinfo is None:
                raise TableError(f"--as-of {as_of!r}: say the time zone (2026-12-01T02:00Z, or +01:00)")
            snap = table.snapshot_as_of_timestamp(int(when.timestamp() * 1000))
            if snap is None:
                raise TableError(f"{name} had no snapshot yet at {as_of}")
    if snap is None:
        tags = sorted(n for n, r in table.refs().items() if n != "main")
        raise TableError(f"{name} has no snapshot {as_of!r}; its tags: {', '.join(tags) or 'none'}")
    return snap.snapshot_id


def open_tables(output: str, cfg: CurationConfig, locale: str | None):
    """(clips table, audio table) of an existing table root, of ``locale`` (None: the root's one locale);
    never creates a catalog or a table."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    root = table_root(output, cfg)
    if root.fresh:
        raise TableError(f"{output} is not a table root (no catalog.db there): check --output")
    catalog = root.catalog()
    # The root's locales are listed (a metadata read per table) only when needed: none given, or not there.
    clips_id, audio_id = root.identifiers(locale or root.pick_locale(catalog, None))
    try:
        return catalog.load_table(clips_id), catalog.load_table(audio_id)
    except (NoSuchTableError, NoSuchNamespaceError):
        root.pick_locale(catalog, locale)  # a root without this locale: its locales, named as runs named them
        try:
            have = [".".join(t) for t in catalog.list_tables(root.namespace)]
        except NoSuchNamespaceError:
            have = []
        raise TableError(f"{output} has no table {clips_id}; it has: {', '.join(have) or 'none'}") from None


def load_view(ws: Workspace, clips, snapshot: int, release: str | None, split: str | None) -> None:
    """View ``rows`` of the workspace: the clips at ``snapshot`` (of ``release``'s split, or today's)."""
    from pipeline.table.scan import arrow_schema, load_existing

    load_existing(ws, clips, arrow_schema(clips), snapshot_id=snapshot)
    where = "TRUE"
    if release is not None:
        wanted = f"e.release = {quote(release)}" + (f" AND e.split = {quote(split)}" if split else "")
        where = f"list_bool_or(list_transform(coalesce(releases, []), lambda e: {wanted}))"
    elif split is not None:
        where = f"split = {quote(split)}"
    ws.run(f"CREATE OR REPLACE VIEW rows AS SELECT * EXCLUDE (_file, _fno) FROM existing WHERE {where}")
    if (release or split) and not ws.rows("SELECT 1 FROM rows LIMIT 1"):  # a typo, not an empty export
        have = ws.rows("SELECT DISTINCT unnest(releases).release AS r FROM existing ORDER BY r")
        splits = ws.rows("SELECT DISTINCT split FROM existing WHERE split IS NOT NULL ORDER BY split")
        asked = " ".join(f"--{k} {v}" for k, v in (("release", release), ("split", split)) if v)
        raise TableError(
            f"no clip of the table is in {asked}; its releases: {', '.join(r for (r,) in have if r) or 'none'}; "
            f"its splits: {', '.join(s for (s,) in splits) or 'none'}"
        )


def view(
    output: str,
    cfg: CurationConfig,
    locale: str | None,
    as_of: str | None = None,
    release: str | None = None,
    split: str | None = None,
) -> tuple[Any, Any, int, pa.Table]:
    """(clips table, audio table, snapshot id, the rows of the view) for a look at a small table."""
    clips, audio = open_tables(output, cfg, locale)
    snapshot = snapshot_of(clips, as_of)
    with Workspace() as ws:
        load_view(ws, clips, snapshot, release, split)
        return clips, audio, snapshot, ws.arrow("SELECT * FROM rows ORDER BY id")


def _kept_with_audio(ws: Workspace, audio) -> Iterator[pa.Table]:
    """The kept rows of view ``rows``, each with its ``audio_bytes``, a batch at a time, one audio data file
    at a time: the rows are grouped by the audio file that holds their sha256 first."""
    from pipeline.table.scan import file_batches_of
    from pipeline.table.writers import normalised

    missing = ws.scalar(f"SELECT count(*) FROM rows WHERE {KEPT} AND {ERROR} IS NULL AND {AUDIO_SHA} IS NULL")
    if missing:
        raise TableError(f"{missing} kept row(s) have no audio (the run had --no-audio); export without audio")
    if not ws.scalar(f"SELECT count(*) FROM rows WHERE {KEPT} AND {ERROR} IS NULL"):
        return
    if audio.current_snapshot() is None:
        raise TableError("the audio table is empty")
    tasks = list(audio.scan().plan_files())
    with ws.writer("audio_index", pa.schema([(AUDIO_SHA, pa.string()), ("_afno", pa.int32())])) as w:
        for n, task in enumerate(tasks):
            scheme, path = normalised(task.file.file_path)
            if scheme == "file":
                shas = pq.read_table(path, columns=[AUDIO_SHA]).column(AUDIO_SHA)
            else:
                shas = pa.chunked_array([b.column(AUDIO_SHA) for b in file_batches_of(audio, task, (AUDIO_SHA,))])
            w.write(pa.table({AUDIO_SHA: pc.cast(shas, pa.string()), "_afno": pa.array([n] * len(shas), pa.int32())}))
    ws.partitioned(
        "kept",
        f"""SELECT r.*, coalesce(a._afno, -1) AS _afno FROM rows r
            LEFT JOIN (SELECT {AUDIO_SHA}, min(_afno) AS _afno FROM audio_index GROUP BY ALL) a USING ({AUDIO_SHA})
            WHERE r.{KEPT} AND r.{ERROR} IS NULL""",
        by="_afno",
    )
    lost = ws.partition("kept", -1)
    if lost is not None:
        n = ws.scalar(f"SELECT count(*) FROM {lost}")
        raise TableError(f"{n} kept row(s) point at audio the audio table lacks")
    for n, task in enumerate(tasks):
        part = ws.partition("kept", n)
        if part is None:
            continue
        rows = ws.arrow(f"SELECT * EXCLUDE (_afno) FROM {part} ORDER BY id")
        where = {sha: i for i, sha in enumerate(rows.column(AUDIO_SHA).to_pylist())}
        found: dict[str, bytes] = {}
        for batch in file_batches_of(audio, task, (AUDIO_SHA, AUDIO)):
            shas, blobs = batch.column(AUDIO_SHA).to_pylist(), batch.column(AUDIO).to_pylist()
            found |= {sha: blob for sha, blob in zip(shas, blobs, strict=True) if sha in where}
        order = rows.column(AUDIO_SHA).to_pylist()
        for start in range(0, rows.num_rows, ROWS_PER_FILE):
            chunk = rows.slice(start, ROWS_PER_FILE)
            data = [found[s] for s in order[start : start + ROWS_PER_FILE]]
            yield chunk.append_column(AUDIO, pa.array(data, pa.binary()))


def trimmed(batch: pa.Table, pad: float) -> pa.Table:
    """``batch`` with each clip's audio cut to its speech (``quality.trim_silence``), re-encoded as FLAC
    at its own rate (lossless from the decoded samples), the cut recorded in ``trim_start_s`` and
    ``trim_end_s`` (seconds of the original) and ``duration_s``, and ``audio_sha256``/``audio_size`` of
    the bytes exported.  A clip without measured silences (quality was off when it was scored) is left
    whole, with null trim columns."""
    import soundfile as sf

    from pipeline.quality.signals import trim_span

    n = batch.num_rows
    column = lambda c: batch.column(c).to_pylist() if c in batch.column_names else [None] * n  # noqa: E731
    blobs, starts, ends = [], [], []
    durations = column(DURATION)
    for data, dur, lead, trail in zip(
        column(AUDIO), durations, column(LEADING_SILENCE), column(TRAILING_SILENCE), strict=True
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
    out = _replace(batch, AUDIO, pa.array(blobs, pa.binary()))
    out = _replace(out, DURATION, pa.array(new_durations, pa.float64()))
    out = _replace(out, AUDIO_SHA, pa.array([hashlib.sha256(b).hexdigest() for b in blobs], pa.string()))
    out = _replace(out, AUDIO_SIZE, pa.array([len(b) for b in blobs], pa.int64()))
    return out.append_column(TRIM_START, pa.array(starts, pa.float64())).append_column(
        TRIM_END, pa.array(ends, pa.float64())
    )


def _replace(t: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in t.column_names:
        return t.set_column(t.schema.get_field_index(name), name, values)
    return t.append_column(name, values)


def export(
    output: str,
    cfg: CurationConfig,
    locale: str | None,
    fmt: Format,
    to: str,
    as_of: str | None = None,
    release: str | None = None,
    split: str | None = None,
    overwrite: bool = False,
    absolute_paths: bool = False,
) -> ExportResult:
    """Write the view as ``fmt`` into ``to``: in a folder beside it first, moved into place when complete."""
    if fmt not in ("parquet", "hf", "nemo", "webdataset"):
        raise ValueError(f"unknown export format {fmt!r}")
    to = to.removeprefix("file://")
    if "://" in to:
        # Path() would take "s3://b/x" for a local folder named "s3:" and write there.
        raise TableError(
            f"--to {to}: an export is written to a local folder; export there, then copy it (aws s3 sync DIR {to})"
        )
    dest = Path(to).resolve()
    mine = table_root(output, cfg).overlap(str(dest))
    if mine:  # --overwrite would delete the table; inside its root, the next run refuses the root
        raise TableError(f"--to {to} overlaps the table's own {mine}: export to a folder outside the table root")
    if dest.exists() and not dest.is_dir():
        raise TableError(f"{to} is a file: an export is a folder; give a new or empty one")
    if dest.exists() and any(dest.iterdir()) and not overwrite:
        raise TableError(f"{to} is not empty: export into a new folder, or give --overwrite to replace it")
    clips, audio = open_tables(output, cfg, locale)
    snapshot = snapshot_of(clips, as_of)
    sweep_partials(dest)
    work = dest.parent / f".{dest.name}.partial-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    owner = hold(str(work))  # until the swap: a later export to dest sweeps this folder only once it is free
    counts: dict[str, int] = {}
    q = cfg.quality
    try:
        with Workspace(min(cfg.table.plan_memory_mb, EXPORT_MEMORY_MB)) as ws:
            load_view(ws, clips, snapshot, release, split)

            if fmt in ("nemo", "webdataset"):
                clash = export_formats.name_clash(ws, f"(SELECT {ID} FROM rows WHERE {KEPT} AND {ERROR} IS NULL)")
                if clash:
                    raise TableError(
                        f"ids {clash[0]!r} and {clash[1]!r} would share one {fmt} name "
                        f"({export_formats.sample_key(clash[0])!r}); export them as parquet or hf"
                    )

            def curated() -> Iterator[pa.Table]:
                for batch in _kept_with_audio(ws, audio):
                    yield trimmed(batch, q.trim_pad_s) if q.trim_silence else batch

            if fmt == "parquet":
                counts["curated"] = export_formats.write_parquet(
                    work / "curated", (export_formats.flat(b) for b in curated())
                )
                healthy = f"SELECT * FROM rows WHERE {ERROR} IS NULL ORDER BY id"
                counts["scores"] = export_formats.write_parquet(work / "scores", export_formats.tables(ws, healthy))
                quarantined = f"SELECT {ID}, {ERROR}, {STAGE} FROM rows WHERE {ERROR} IS NOT NULL ORDER BY id"
                counts["quarantine"] = export_formats.write_parquet(
                    work / "quarantine", export_formats.tables(ws, quarantined)
                )
            elif fmt == "hf":
                counts["curated"] = export_formats.write_hf(work, curated(), split or "train")
            elif fmt == "nemo":
                counts["curated"] = export_formats.write_nemo(work, curated(), absolute_paths, dest)
            else:
                counts["curated"] = export_formats.write_webdataset(work, curated())
        os.unlink(work / OWNER)  # still locked, so no sweep takes it for a killed export's meanwhile
        _swap(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        os.close(owner)
    return ExportResult(".".join(clips.name()), snapshot, counts, str(dest))


def sweep_partials(dest: Path) -> None:
    """Remove the work folders that exports to ``dest`` left when they were killed (SIGKILL, the OOM killer):
    a folder is swept only once its owner lock is free; one with no owner file is left alone."""
    for path in glob.glob(os.path.join(glob.escape(str(dest.parent)), f".{glob.escape(dest.name)}.partial-*")):
        if os.path.isdir(path) and not os.path.islink(path) and abandoned(path):
            shutil.rmtree(path, ignore_errors=True)


def _swap(work: Path, dest: Path) -> None:
    """``work`` becomes ``dest``; an old ``dest`` is moved aside first and removed after."""
    old = None
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{uuid.uuid4().hex[:8]}"
        dest.rename(old)
    work.rename(dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
