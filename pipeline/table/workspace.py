"""The run's columnar workspace: an in-process DuckDB database for the table work before and after the
engines, with bounded memory.

A Common Voice release lists millions of clips, and the dataset's table holds as many rows.  Reading
them, joining the release with the table and deciding what changed happen here, in DuckDB, not in
Python dicts.  Large intermediate results live as Parquet files in the workspace's temporary folder
(``writer``, ``materialize``) and are read back by views, so they cost disk, not memory; DuckDB's own
joins and aggregations spill there too past ``memory_limit_mb``.  The driver's memory is set by that
limit and by one Arrow batch, not by the release.

Why DuckDB rather than Polars or Arrow compute alone: out-of-core hash joins and aggregations that
spill under a memory limit, a Parquet reader that streams a table's data files by itself (projection
and all), zero-copy Arrow in and out, list and struct functions for the clips' release history, and
SQL that reads as the plan's rules.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.runtime.owner import abandoned, hold

log = logging.getLogger("pipeline")

# Rows per Arrow batch handed out of the workspace: what the driver holds at once of a stream.
BATCH_ROWS = 65_536
# Rows per row group of the workspace's own Parquet: DuckDB's writer buffers one per thread (its default,
# 122,880 wide rows, is a good part of the memory limit).
ROW_GROUP = 16_384


def quote(path: str) -> str:
    """A SQL string literal."""
    return "'" + path.replace("'", "''") + "'"


def duck_type(t: pa.DataType) -> str:
    """DuckDB's name for an Arrow type (the types a clips table holds)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int16(t) or pa.types.is_int8(t):
        return "SMALLINT"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BLOB"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"{duck_type(t.value_type)}[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f'"{f.name}" {duck_type(f.type)}' for f in t) + ")"
    return "VARCHAR"


PREFIX = "curate-plan-"


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale(temp_root: str | None = None) -> list[str]:
    """Remove workspace folders left by runs of this host that were killed (SIGKILL, the OOM killer).  At a
    release's size a plan's folder holds gigabytes, and a night killed every week would fill the disk.  A
    folder is stale once its owner lock is free: not its process id, which a container gives its every run
    alike, so a killed run's folder looked alive to the next.  Folders of other hosts (a shared temp
    folder) and of live workspaces are left alone."""
    root = temp_root or tempfile.gettempdir()
    pattern = re.compile(re.escape(PREFIX + _host() + "-") + r"(\d+)-")
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(root):
            m = pattern.match(entry.name)
            if not m or not entry.is_dir(follow_symlinks=False):
                continue
            free = abandoned(entry.path)
            if free is None:  # a folder from before the lock: judged by the process its name holds
                pid = int(m.group(1))
                free = pid != os.getpid() and not _alive(pid)
            if free:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed.append(entry.path)
    if removed:
        log.info("removed %d plan folder(s) left by killed runs: %s", len(removed), ", ".join(removed))
    return removed


class Workspace:
    """``with Workspace() as ws:`` a DuckDB connection of its own, its temporary folder removed on exit (and,
    when the process is killed, by the next workspace of the host: ``sweep_stale``)."""

    def __init__(self, memory_limit_mb: int = 512, threads: int | None = None, temp_root: str | None = None):
        import duckdb

        sweep_stale(temp_root)
        # Made under a name no sweep reads, locked, then renamed: it is never seen without its lock held.
        making = tempfile.mkdtemp(prefix=f".making-{PREFIX}", dir=temp_root)
        self._owner = hold(making)
        self.folder = os.path.join(
            os.path.dirname(making), f"{PREFIX}{_host()}-{os.getpid()}-{os.path.basename(making)[-8:]}"
        )
        os.rename(making, self.folder)
        self.con = duckdb.connect(
            config={
                "memory_limit": f"{memory_limit_mb}MB",
                "threads": threads or min(4, os.cpu_count() or 1),
                "temp_directory": os.path.join(self.folder, "spill"),
                # Order is asked for where it matters (ORDER BY); elsewhere it would cost memory.
                "preserve_insertion_order": False,
            }
        )
        self._names = itertools.count()
        self._partitions: dict[str, tuple[str, str]] = {}

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.con.close()
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self._owner)

    # ------------------------------------------------------------------------------------ data in

    def put(self, name: str, data: pa.Table | pa.RecordBatch | Iterable[pa.Table], where: str = "") -> int:
        """Append ``data`` to the in-memory table ``name`` (created from the first batch's schema); ``where``
        filters the rows on the way in.  For small tables; large ones go through ``writer``."""
        if isinstance(data, pa.Table | pa.RecordBatch):
            data = [data]
        n = 0
        for batch in data:
            view = f"_in{next(self._names)}"
            self.con.register(view, batch)
            try:
                if not self.exists(name):
                    self.run(f"CREATE TABLE {name} AS SELECT * FROM {view} {where}")
                else:
                    self.run(f"INSERT INTO {name} BY NAME SELECT * FROM {view} {where}")
                n += batch.num_rows
            finally:
                self.con.unregister(view)
        return n

    def create(self, name: str, schema: pa.Schema) -> None:
        """An empty table ``name`` of ``schema`` (when none is there)."""
        if not self.exists(name):
            self.put(name, schema.empty_table())

    @contextlib.contextmanager
    def writer(self, name: str, schema: pa.Schema) -> Iterator[ParquetPart]:
        """``with ws.writer(name, schema) as w: w.write(batch)``: batches to a Parquet file of the
        workspace; view ``name`` then reads every part written under that name."""
        os.makedirs(os.path.join(self.folder, name), exist_ok=True)
        part = ParquetPart(os.path.join(self.folder, name, f"part-{next(self._names)}.parquet"), schema)
        try:
            yield part
        finally:
            part.close()
        self.run(
            f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM "
            f"read_parquet({quote(os.path.join(self.folder, name, '*.parquet'))}, union_by_name = true)"
        )

    def materialize(self, name: str, sql: str) -> None:
        """The result of ``sql`` written to a Parquet file (streamed, in bounded memory), read as view ``name``."""
        path = os.path.join(self.folder, f"{name}-{next(self._names)}.parquet")
        self.run(f"COPY ({sql}) TO {quote(path)} (FORMAT parquet, ROW_GROUP_SIZE {ROW_GROUP})")
        self.run(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({quote(path)})")

    def partitioned(self, name: str, sql: str, by: str) -> None:
        """Like ``materialize``, one Parquet folder per value of column ``by`` (``partition`` reads one alone);
        view ``name`` reads them all.  Split here, batch by batch (DuckDB's own PARTITION_BY took twice as
        long on a million rows)."""
        import pyarrow.compute as pc

        path = os.path.join(self.folder, f"{name}-{next(self._names)}")
        parts: dict = {}
        try:
            for batch in self.batches(sql):
                t = pa.Table.from_batches([batch])
                key = t.column(by)
                values = pc.unique(key).to_pylist()
                for value in values:  # the column is never null: the caller gives every row a value
                    if value not in parts:
                        os.makedirs(os.path.join(path, f"{by}={value}"), exist_ok=True)
                        parts[value] = ParquetPart(os.path.join(path, f"{by}={value}", "part.parquet"), t.schema)
                    parts[value].write(t if len(values) == 1 else t.filter(pc.equal(key, value)))
        finally:
            for part in parts.values():
                part.close()
        self._partitions[name] = (path, by)
        if not parts:  # no rows: an empty view of the same columns
            self.run(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM ({sql}) WHERE FALSE")
            return
        self.run(f"CREATE OR REPLACE VIEW {name} AS SELECT * FROM read_parquet({quote(path + '/*/*.parquet')})")

    def partition(self, name: str, value) -> str | None:
        """SQL reading the part of ``partitioned`` table ``name`` whose ``by`` column is ``value``; None
        when it holds no rows."""
        path, by = self._partitions[name]
        folder = os.path.join(path, f"{by}={value}")
        return f"read_parquet({quote(folder + '/*.parquet')})" if glob.glob(folder + "/*.parquet") else None

    def exists(self, name: str) -> bool:
        return bool(self.scalar("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]))

    # ----------------------------------------------------------------------------------- data out

    # Every call fetches its whole result: DuckDB refuses other work on a connection with one pending.
    def run(self, sql: str, params: list | None = None) -> None:
        import duckdb

        try:
            self.con.execute(sql, params or []).fetchall()
        except duckdb.OutOfMemoryException:
            # Each thread holds its own buffers: one thread needs less, at the cost of time.
            threads = self.scalar("SELECT current_setting('threads')")
            if threads == 1:
                raise
            log.warning("the plan's workspace ran out of its memory limit; running that step on one thread")
            self.con.execute("SET threads = 1")
            try:
                self.con.execute(sql, params or []).fetchall()
            finally:
                self.con.execute(f"SET threads = {threads}")

    def rows(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def scalar(self, sql: str, params: list | None = None):
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def arrow(self, sql: str, params: list | None = None) -> pa.Table:
        """A query's whole result (for results known to be small)."""
        return self.con.sql(sql, params=params or None).to_arrow_table()

    def batches(self, sql: str, params: list | None = None, rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """A query's result, streamed: at most ``rows`` rows held at a time."""
        cur = self.con.cursor()
        reader = cur.sql(sql, params=params or None).to_arrow_reader(rows)
        try:
            yield from reader
        finally:
            cur.close()

    def columns(self, name: str) -> list[str]:
        return [r[0] for r in self.rows(f"DESCRIBE {name}")]


class ParquetPart:
    """One Parquet file of the workspace, written batch by batch."""

    def __init__(self, path: str, schema: pa.Schema):
        self.path, self.schema = path, schema
        self._writer = pq.ParquetWriter(path, schema)

    def write(self, t: pa.Table) -> None:
        self._writer.write_table(t.cast(self.schema) if t.schema != self.schema else t)

    def close(self) -> None:
        self._writer.close()
