"""A Parquet input read for the rows a plan wants: a file whose planned rows are few is read by the row groups
that hold them, never whole.

``--limit 50`` over a mirror takes the first 50 ids, spread over every file, and a night that touches a few
old rows wants a handful of each: both read every such file whole, audio and all, to keep a few rows.  A
Hugging Face export writes about 100 rows a row group, so those rows' groups are a small part of a file.
Which groups hold them is read off the id column alone (a few bytes a row); the rows themselves are still
picked by ``PlannedRows``, so what comes out is what a whole read gives.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from pipeline.columns import ID
from pipeline.config import StorageConfig
from pipeline.io.schema import InputLayout, ids_of
from pipeline.runtime.storage import Location, resolve_filesystem

# A file is read by row groups when the groups holding its planned rows are under this share of its groups.
SPARSE_SHARE = 0.5
ROW_GROUPS_PER_TASK = 16
FOOTER_THREADS = 16
ROWS_PER_BATCH = 256  # a batch of audio rows at a time, whatever a row group's size
EST_ROW_BYTES = 48_000  # only to size Ray's estimate of the data


def row_groups_holding(pf: pq.ParquetFile, layout: InputLayout, ids: pa.Array) -> list[int]:
    """The row groups of one file holding any of ``ids``, from its id column alone."""
    ends = np.cumsum([pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)], dtype=np.int64)
    got = ids_of(pf.read(columns=[layout.id_column]), layout)
    hit = np.flatnonzero(pc.is_in(got, value_set=ids).to_numpy(zero_copy_only=False))
    return np.unique(np.searchsorted(ends, hit, side="right")).tolist()


def row_group_reads(files: list[Location], rows: pa.Table, layout: InputLayout) -> list[tuple[str, list[int], int]]:
    """(uri, row groups to read, rows a group) for every file, or none when no file is worth reading by row
    groups (then each is read whole, as Ray Data reads Parquet).  A file's groups are all of them unless few
    hold its planned rows (``SPARSE_SHARE``); a file that is mostly planned is not looked into.  Files are
    looked at ``FOOTER_THREADS`` at a time: on S3 each is a request or two."""
    grouped = rows.select(["_source", ID]).group_by("_source").aggregate([(ID, "list")])
    lists = grouped.column(f"{ID}_list").combine_chunks()
    ids_of_file = dict(zip(grouped.column("_source").to_pylist(), lists, strict=True))

    def one(f: Location) -> tuple[str, list[int], int, bool]:
        mine = ids_of_file[f.uri].values
        with f.fs.open_input_file(f.path) as handle:
            pf = pq.ParquetFile(handle)
            total, n = pf.num_row_groups, pf.metadata.num_rows
            if total > 1 and len(mine) < SPARSE_SHARE * n:
                held = row_groups_holding(pf, layout, mine)
                if len(held) < SPARSE_SHARE * total:
                    return f.uri, held, max(1, n // total), True
        return f.uri, list(range(total)), max(1, n // max(1, total)), False

    with ThreadPoolExecutor(FOOTER_THREADS) as pool:
        looked = list(pool.map(one, files))
    return [(uri, groups, per) for uri, groups, per, _ in looked] if any(s for *_, s in looked) else []


def read_planned(files: list[Location], rows: pa.Table, layout: InputLayout, storage: StorageConfig):
    """The Ray dataset of ``files``: by row groups where some file's planned rows are few, else Ray Data's own
    whole-file read."""
    import ray

    reads = row_group_reads(files, rows, layout)
    if reads:
        return ray.data.read_datasource(RowGroupDatasource(reads, storage))
    return ray.data.read_parquet([f.path for f in files], filesystem=files[0].fs)


def read_row_groups(uri: str, groups: list[int], storage: StorageConfig) -> Iterator[pa.Table]:
    """One file's ``groups``, ``ROWS_PER_BATCH`` rows at a time (the filesystem resolved here, on the worker)."""
    fs, path = resolve_filesystem(uri, storage)
    with fs.open_input_file(path) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=ROWS_PER_BATCH, row_groups=groups):
            yield pa.Table.from_batches([batch])


class RowGroupDatasource(Datasource):
    """Read tasks of up to ``ROW_GROUPS_PER_TASK`` row groups each, over every file of ``parts``."""

    def __init__(self, parts: list[tuple[str, list[int], int]], storage: StorageConfig):
        self.parts, self.storage = parts, storage  # (uri, groups, rows a group on average)

    def get_name(self) -> str:
        return "ParquetRowGroups"

    def estimate_inmemory_data_size(self) -> int:
        return sum(len(groups) * per for _, groups, per in self.parts) * EST_ROW_BYTES

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None, **_) -> list[ReadTask]:
        tasks = []
        for uri, groups, per in self.parts:
            for s in range(0, len(groups), ROW_GROUPS_PER_TASK):
                chunk = groups[s : s + ROW_GROUPS_PER_TASK]
                meta = BlockMetadata(
                    num_rows=None, size_bytes=len(chunk) * per * EST_ROW_BYTES, input_files=[uri], exec_stats=None
                )
                tasks.append(ReadTask(_reader(uri, chunk, self.storage), meta, per_task_row_limit=per_task_row_limit))
        return tasks


def _reader(uri: str, groups: list[int], storage: StorageConfig):
    def read_row_groups_task() -> Iterator[pa.Table]:  # Ray names a task by its function's __name__
        return read_row_groups(uri, groups, storage)

    return read_row_groups_task
