"""Query a locale's clips table with DuckDB: ``python -m pipeline.table.query OUTPUT [--locale en] "SQL"``.

The table is the view ``clips`` (its current snapshot, or ``--as-of TAG|SNAPSHOT|ISO time``), read by DuckDB
from the table's data files as the query needs them, so a table of millions of clips is queried in
bounded memory; the audio stays in the audio table.
"""

from __future__ import annotations

import argparse

from pipeline.config import build_config
from pipeline.table.export import load_view, open_tables, snapshot_of
from pipeline.table.workspace import Workspace


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
    cfg = build_config(overrides=a.overrides)
    clips, _ = open_tables(a.output, cfg, a.locale)
    with Workspace(cfg.table.plan_memory_mb) as ws:
        load_view(ws, clips, snapshot_of(clips, a.as_of), None, None)
        ws.run("CREATE VIEW clips AS SELECT * FROM rows")
        print(ws.con.sql(a.sql))


if __name__ == "__main__":
    main()
