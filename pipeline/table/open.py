"""Query a locale's clips table with DuckDB: ``python -m pipeline.table.open OUTPUT [--locale en] "SQL"``.

The table is registered as ``clips`` (its current snapshot, or ``--as-of TAG|SNAPSHOT``); the audio stays
in the audio table.  This is pyiceberg's ``scan().to_duckdb()``, nothing more.
"""

from __future__ import annotations

import argparse

from pipeline.config import build_config
from pipeline.table.export import view


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output")
    p.add_argument(
        "sql", nargs="?", default="select count(*) as clips, count(*) filter (where kept) as kept from clips"
    )
    p.add_argument("--locale", default="en")
    p.add_argument("--as-of")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    a = p.parse_intermixed_args(argv)
    import duckdb

    _, _, _, rows = view(a.output, build_config(overrides=a.overrides), a.locale, a.as_of)
    con = duckdb.connect()
    con.register("clips", rows)
    print(con.sql(a.sql))


if __name__ == "__main__":
    main()
