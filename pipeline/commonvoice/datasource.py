"""Ray Data read tasks for Common Voice releases.

- A tarball is one read task: gzip can only be read in order, so the task streams the archive member
  by member and yields a block every ``rows_per_block`` clips of the split.  Memory holds one block,
  whatever the archive's size.  Several tarballs are read in parallel, one task each.
- An extracted folder (local or S3) is one read task per ``clips_per_task`` rows of the split, each
  opening its clips by path, so ``clips/`` is read in parallel across the cluster.
- A task's rows travel by object reference when they are many (a tarball's task holds its whole split:
  2 M rows of English), so the task Ray ships and names stays small.

Every row of the split comes out exactly once: a clip the release lacks comes out with no audio and
``read_error`` = "clip missing from release", and the decode stage quarantines it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.columns import AUDIO, ID, READ_ERROR
from pipeline.commonvoice.files import clip_names, iter_tarball_clips
from pipeline.commonvoice.reader import MISSING_CLIP, ReleaseSource
from pipeline.config import ReaderConfig, StorageConfig
from pipeline.io.clip_files import MAX_NAME_BYTES, read_clip
from pipeline.runtime.storage import locate, resolve_filesystem

# A Common Voice MP3 is ~30-60 KB; only used to size Ray's estimate of the data.
EST_CLIP_BYTES = 48_000
# Rows over this size go to the object store, not into the task: Ray warns of a read task over 1 MiB, and
# names it in the warning by its function's ``__name__``.
INLINE_ROWS_BYTES = 256 << 10


def _block(rows: pa.Table, indices: list[int], audio: list[bytes | None], errors: list[str | None]) -> pa.Table:
    return (
        rows.take(pa.array(indices, pa.int64()))
        .append_column(AUDIO, pa.array(audio, pa.binary()))
        .append_column(READ_ERROR, pa.array(errors, pa.string()))
    )


def read_tarball(
    uri: str, rows: pa.Table, storage: StorageConfig, rows_per_block: int, max_bytes: int = 20 << 20
) -> Iterator[pa.Table]:
    """Stream one tarball until every row's clip is found; yield the split's rows with their clips, then the
    rows whose clip was absent."""
    by_clip: dict[str, list[int]] = {}
    for i, path in enumerate(rows.column("id").to_pylist()):
        by_clip.setdefault(path, []).append(i)
    idx: list[int] = []
    audio: list[bytes | None] = []
    errors: list[str | None] = []
    for name, data, error in iter_tarball_clips(locate(uri, storage), by_clip, max_bytes):
        for i in by_clip.pop(name, []):
            idx.append(i)
            audio.append(data)
            errors.append(error)
        if len(idx) >= rows_per_block:
            yield _block(rows, idx, audio, errors)
            idx, audio, errors = [], [], []
        if not by_clip:
            # Every clip found: the rest of the archive is not read (``--limit 100`` on an 80 GB release).
            break
    if idx:
        yield _block(rows, idx, audio, errors)
    missing = sorted(i for rows_of in by_clip.values() for i in rows_of)
    for start in range(0, len(missing), rows_per_block):
        chunk = missing[start : start + rows_per_block]
        yield _block(rows, chunk, [None] * len(chunk), [MISSING_CLIP] * len(chunk))


def read_folder_chunk(
    uri: str, rows: pa.Table, storage: StorageConfig, rows_per_block: int, max_bytes: int = 20 << 20
) -> Iterator[pa.Table]:
    """Read one chunk of the split's clips from ``<folder>/clips/<path>``: plain names, bounded reads."""
    fs, folder = resolve_filesystem(uri, storage)
    paths = rows.column("id").to_pylist()
    for start in range(0, len(paths), rows_per_block):
        idx = list(range(start, min(start + rows_per_block, len(paths))))
        audio: list[bytes | None] = []
        errors: list[str | None] = []
        for i in idx:
            try:
                data, error = read_clip(fs, folder, paths[i], max_bytes)
            except FileNotFoundError:
                data, error = None, MISSING_CLIP
            audio.append(data)
            errors.append(error)
        yield _block(rows, idx, audio, errors)


# A plain file name inside clips/ (no separator, no control character, not "." or ".."); any other is left to
# the read, which quarantines it with its own reason.
PLAIN_NAME = r"^[^/\\\x00-\x1f\x7f]+$"


def absent_clips(
    rows: pa.Table,
    releases: list[ReleaseSource],
    storage: StorageConfig,
    list_from: int,
    members: Callable[[str], pa.Array] | None = None,
) -> pa.Array:
    """Which of ``rows`` (engine work, with ``_source``) name a clip their release lacks: an extracted
    folder's from one listing of its ``clips/``, a tarball's from ``members(uri)`` (its ``clips/`` members,
    noted when its TSVs were read, in the same pass; None: not known).  Only a release with ``list_from``
    rows to read or more is looked at: fewer cost the DAG little."""
    absent = np.zeros(rows.num_rows, bool)
    by_uri = {s.uri: s for s in releases}
    sources, ids = rows.column("_source"), rows.column(ID)
    counts = pc.value_counts(sources).to_pylist() if rows.num_rows else []
    plain = None
    for uri, n in ((c["values"], c["counts"]) for c in counts):
        src = by_uri[uri]
        if n < list_from or (src.form == "tarball" and members is None):
            continue
        if plain is None:  # once, for every source's rows
            plain = pc.and_(
                pc.match_substring_regex(ids, PLAIN_NAME),
                pc.and_(
                    pc.less_equal(pc.binary_length(ids), MAX_NAME_BYTES),
                    pc.invert(pc.is_in(ids, pa.array([".", ".."]))),
                ),
            )
        names = members(uri) if src.form == "tarball" else clip_names(src.located(storage))
        listed = pc.is_in(ids, value_set=names)
        mine = pc.and_(pc.equal(sources, uri), pc.and_(plain, pc.invert(listed)))
        absent |= mine.to_numpy(zero_copy_only=False)
    return pa.array(absent)


class ReleaseDatasource(Datasource):
    def __init__(
        self,
        parts: list[tuple[ReleaseSource, pa.Table]],
        storage: StorageConfig,
        cfg: ReaderConfig,
        max_clip_bytes: int = 20 << 20,
    ):
        self.parts = parts
        self.storage = storage
        self.cfg = cfg
        self.max_clip_bytes = max_clip_bytes

    def get_name(self) -> str:
        return "CommonVoiceRelease"

    def estimate_inmemory_data_size(self) -> int:
        return sum(t.num_rows for _, t in self.parts) * EST_CLIP_BYTES

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, **_) -> list[ReadTask]:
        tasks = []
        for src, table in self.parts:
            if src.form == "tarball":
                chunks = [table]
                read = read_tarball
            else:
                step = self.cfg.clips_per_task
                # take() copies, so each task ships its own rows, not the whole split.
                chunks = [
                    table.take(pa.array(range(s, min(s + step, table.num_rows))))
                    for s in range(0, table.num_rows, step)
                ]
                read = read_folder_chunk
            for chunk in chunks:
                if chunk.num_rows == 0:
                    continue
                meta = BlockMetadata(
                    num_rows=chunk.num_rows,
                    size_bytes=chunk.num_rows * EST_CLIP_BYTES,
                    input_files=[src.uri],
                    exec_stats=None,
                )
                args = (self.storage, self.cfg.rows_per_block, self.max_clip_bytes)
                tasks.append(
                    ReadTask(read_fn(read, src.uri, chunk, *args), meta, per_task_row_limit=per_task_row_limit)
                )
        return tasks


def read_fn(
    read: Callable[..., Iterator[pa.Table]], uri: str, rows: pa.Table, *args
) -> Callable[[], Iterator[pa.Table]]:
    """``read(uri, rows, *args)`` as a read task's function: named as ``read`` (Ray reads ``__name__`` off a
    large task's function; a ``functools.partial`` has none, and failed every tarball of over ~4,000 clips),
    its rows by object reference when they are many.  Called on the driver, which owns the reference."""
    if rows.nbytes > INLINE_ROWS_BYTES:
        ref = ray.put(rows)

        def fn() -> Iterator[pa.Table]:
            return read(uri, ray.get(ref), *args)
    else:

        def fn() -> Iterator[pa.Table]:
            return read(uri, rows, *args)

    fn.__name__ = fn.__qualname__ = read.__name__
    return fn
