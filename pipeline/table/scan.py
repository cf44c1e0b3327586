"""The table read the way the plan and the run need it: streamed, a data file's batches at a time.

``load_existing`` puts the clips table's rows of one shard into the workspace, each with the data file
that holds it (``_file``), so the commit knows which files its replaced rows are in without scanning
for them.  ``kept_counts`` counts the table from one column.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import KEPT
from pipeline.table.plan_rows import table_files
from pipeline.table.plan_sql import FILE, shard_sql
from pipeline.table.schema import conform
from pipeline.table.workspace import Workspace, duck_type, quote

if TYPE_CHECKING:
    from pyiceberg.table import Table


def file_batches(table: Table, columns: tuple[str, ...] | None = None) -> Iterator[tuple[str, pa.Table]]:
    """(data file, rows) of the table's current snapshot, one data file's batches at a time."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    if table.current_snapshot() is None:
        return
    scan = table.scan(selected_fields=columns) if columns else table.scan()
    schema = scan.projection()
    reader = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
    for task in scan.plan_files():
        for batch in reader.to_record_batches([task]):
            yield task.file.file_path, pa.Table.from_batches([batch])


def load_existing(
    ws: Workspace, table: Table, schema: pa.Schema, shard: tuple[int, int] = (0, 1), snapshot_id: int | None = None
) -> None:
    """View ``existing`` of the workspace: the table's rows of ``shard``, each with ``_file``, as ``schema``;
    and ``table_files``, each data file with SQL that reads it alone (``pipeline.table.plan``).

    A local table's data files are read by DuckDB itself, lazily (each query reads the columns it needs);
    another store's (S3) are copied into the workspace's Parquet a data file at a time.
    """
    from pipeline.table.writers import normalised

    tasks = list(table.scan(snapshot_id=snapshot_id).plan_files()) if table.current_snapshot() is not None else []
    target = pa.schema([*schema, pa.field(FILE, pa.string()), pa.field("_fno", pa.int32())])
    files, local = [], []
    for n, task in enumerate(tasks):
        scheme, path = normalised(task.file.file_path)
        if scheme != "file":  # copied over, this file's batches at a time
            with ws.writer(f"table_file_{n}", schema) as w:
                for batch in file_batches_of(table, task):
                    w.write(conform(batch, schema))
            path = w.path
        files.append((task.file.file_path, _conformed(ws, path, schema)))
        local.append(path)
    table_files(ws, files)
    if not files:
        with ws.writer("no_rows", target) as w:
            w.write(target.empty_table())
        ws.run(f"CREATE OR REPLACE VIEW existing AS SELECT * FROM no_rows WHERE {shard_sql('id', shard)}")
        return
    # One scan of every file, not a UNION of one scan per file: DuckDB holds buffers per branch, and a
    # union of 160 files ran out of a 768 MB limit in a join that one scan of the same rows passed in 3 s.
    ws.run("DROP TABLE IF EXISTS table_file_paths")
    ws.put("table_file_paths", pa.table({"_path": pa.array(local, pa.string()),
                                         "_fno": pa.array(range(len(local)), pa.int32())}))  # fmt: skip
    source = f"read_parquet([{', '.join(quote(p) for p in local)}], union_by_name = true, filename = '_path')"
    present = {r[0] for r in ws.rows(f"DESCRIBE SELECT * FROM {source}")}
    cols = ", ".join(
        f's."{f.name}"' if f.name in present else f'NULL::{duck_type(f.type)} AS "{f.name}"' for f in schema
    )
    ws.run(
        f"CREATE OR REPLACE VIEW existing AS SELECT {cols}, f.{FILE}, p._fno FROM {source} s "
        f"JOIN table_file_paths p USING (_path) JOIN table_files f USING (_fno) WHERE {shard_sql('s.id', shard)}"
    )


def _conformed(ws: Workspace, path: str, schema: pa.Schema) -> str:
    """SQL reading a Parquet file as ``schema``: columns the table gained after it was written read as
    null, as pyiceberg reads them."""
    source = f"read_parquet({quote(path)})"
    present = {r[0] for r in ws.rows(f"DESCRIBE SELECT * FROM {source}")}
    cols = ", ".join(f'"{f.name}"' if f.name in present else f'NULL::{duck_type(f.type)} AS "{f.name}"' for f in schema)
    return f"SELECT {cols} FROM {source}"


def file_batches_of(table: Table, task, columns: tuple[str, ...] | None = None) -> Iterator[pa.Table]:
    """One data file's rows (a scan task's), batch by batch, as the table's schema (or ``columns`` of it)."""
    from pyiceberg.expressions import AlwaysTrue
    from pyiceberg.io.pyarrow import ArrowScan

    schema = table.schema().select(*columns) if columns else table.schema()
    reader = ArrowScan(table.metadata, table.io, schema, AlwaysTrue())
    for batch in reader.to_record_batches([task]):
        yield pa.Table.from_batches([batch])


def arrow_schema(table: Table) -> pa.Schema:
    """The table's schema as Arrow (no field ids)."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    return schema_to_pyarrow(table.schema(), include_field_ids=False)


def kept_counts(table: Table) -> tuple[int, int]:
    """(rows, kept rows) of the table now, from its ``kept`` column alone."""
    rows = kept = 0
    for _, t in file_batches(table, (KEPT,)):
        rows += t.num_rows
        kept += pc.sum(pc.fill_null(t.column(KEPT), False).cast(pa.int64())).as_py() or 0
    return rows, kept
