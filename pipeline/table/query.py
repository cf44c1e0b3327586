"""Query a locale's clips table with DuckDB: ``curate query --output OUTPUT [--locale de] "SQL"`` (or
``python -m pipeline.table.query OUTPUT [--locale de] "SQL"``).

The table is the view ``clips`` (its current snapshot, or ``--as-of TAG|SNAPSHOT|ISO time``), read by DuckDB
from the table's data files as the query needs them, so a table of millions of clips is queried in
bounded memory; the audio stays in the audio table.  ``--format table`` draws DuckDB's box (it elides
rows and columns past the terminal's size); ``csv`` and ``json`` (one object a line) write every row,
streamed a batch at a time, for a pipe or a file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO

from pipeline.config import CurationConfig, build_config
from pipeline.table.catalog import TableError
from pipeline.table.export import load_view, open_tables, snapshot_of
from pipeline.table.workspace import Workspace, quote

DEFAULT_SQL = "select count(*) as clips, count(*) filter (where kept) as kept from clips"
FORMATS = ("table", "csv", "json")


class QueryError(ValueError):
    """The SQL did not run: DuckDB's message, without a traceback."""


def query(
    output: str, sql: str, cfg: CurationConfig, locale: str | None = None, as_of: str | None = None,
    fmt: str = "table", out: IO[str] | None = None,
) -> None:  # fmt: skip
    """Run ``sql`` against the view ``clips`` and write its rows to ``out`` (stdout) as ``fmt``."""
    import duckdb

    out = out or sys.stdout
    clips, _ = open_tables(output, cfg, locale)
    with Workspace(cfg.table.plan_memory_mb) as ws:
        load_view(ws, clips, snapshot_of(clips, as_of), None, None)
        ws.run("CREATE VIEW clips AS SELECT * FROM rows")
        read_only(ws)
        try:
            rel = ws.con.sql(sql)
            if rel is None:
                return  # a statement without rows (SET, CREATE VIEW ...)
            if fmt == "table":
                print(rel, file=out)
                return
            _write_rows(rel.fetch_record_batch(), fmt, out)
        except duckdb.PermissionException as exc:
            raise QueryError(
                f"the query did not run: {str(exc).strip()} (curate query reads the view clips and nothing else; "
                "--format csv or json writes its rows to stdout)"
            ) from None
        except duckdb.Error as exc:
            raise QueryError(f"the query did not run: {str(exc).strip()}") from None


def read_only(ws: Workspace) -> None:
    """From here on the SQL reads the view's data files and nothing else: no other file or URL, no ATTACH of
    the catalog, no COPY onto a path, no extension.  DuckDB refuses to turn external access back on, and to
    change the allowed paths while it is off."""
    files = [p for (p,) in ws.rows("SELECT _path FROM table_file_paths")] if ws.exists("table_file_paths") else []
    ws.run(f"SET allowed_directories = [{quote(ws.folder + os.sep)}]")  # the workspace's own Parquet
    if files:
        ws.run(f"SET allowed_paths = [{', '.join(quote(p) for p in files)}]")
    ws.run("SET enable_external_access = false")


def _write_rows(reader, fmt: str, out: IO[str]) -> None:
    import pyarrow as pa
    import pyarrow.csv as pcsv

    header = True
    for batch in reader:
        if fmt == "csv":
            buf = pa.BufferOutputStream()
            pcsv.write_csv(_flat(batch), buf, pcsv.WriteOptions(include_header=header))
            out.write(buf.getvalue().to_pybytes().decode("utf-8"))
            header = False
        else:
            for row in batch.to_pylist():
                out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    if fmt == "csv" and header:  # no rows: still say which columns
        out.write(",".join(f'"{n}"' for n in reader.schema.names) + "\n")


def _flat(batch):
    """``batch`` with its lists and structs (``reasons``, ``releases``) as JSON text: CSV has no nesting."""
    import pyarrow as pa

    cols = [
        pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in c.to_pylist()],
                 pa.string())
        if pa.types.is_nested(c.type) else c
        for c in batch.columns
    ]  # fmt: skip
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sql", nargs="?", default=DEFAULT_SQL, help="SQL over the view `clips` (default: counts)")
    p.add_argument("--locale", help="the locale's table (default: the table root's one locale)")
    p.add_argument("--as-of", help="a tag, a snapshot id, or an ISO time; default: the current snapshot")
    p.add_argument("--format", choices=FORMATS, default="table", help="table (elided to fit), csv or json lines")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def run(args: argparse.Namespace, output: str) -> int:
    """The command: 0, or 2 with one line on stderr for a table that is not there or SQL that fails."""
    try:
        cfg = build_config(getattr(args, "profile", "local"), overrides=args.overrides)
        query(output, args.sql, cfg, args.locale, args.as_of, args.format)
    except (TableError, QueryError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader had enough (``| head``): no error, and stdout goes nowhere so the exit flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    add_arguments(p)
    a = p.parse_intermixed_args(argv)
    return run(a, a.output)


if __name__ == "__main__":
    sys.exit(main())
