"""Reading a Parquet mirror at a release's size: the read that hands the engines their rows, each joined
with the plan's columns by id.

    .venv/bin/python -m bench.parquet_scale [--sizes 200000 2000000] [--files 8] [--join-up-to 200000]

For each N: a mirror of N rows in ``--files`` files (``id``, a 32-byte ``audio_bytes`` stub, ``sentence``,
``client_id``), opened as a run opens it (``open_inputs``, the view in DuckDB), every row planned for the
engines (a first night); then the dataset the engines read (``ParquetInputs.dataset``) run to its end on a
local Ray of 2 CPUs, without decoding.  Ray Data cuts a read into blocks of up to 128 MiB, about 3,000
Common Voice clips of ~40 KB: the stubs are small, so the block size is set to hold ``--block-rows`` rows,
as real audio would.  Arms: ``index`` (the product's: the plan by object reference,
its ids indexed once per worker process) and, up to ``--join-up-to`` rows, ``join`` (what it replaced: a
hash join of every batch with the whole plan).  Recorded: the read's wall, the rows out, the driver's peak
RSS.  Results: ``bench/results/parquet-scale-<utc>.json``.
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.common import write_results
from pipeline.runtime.hardware import cpu_flags


def seed_mirror(folder: Path, rows: int, files: int) -> None:
    rng = np.random.default_rng(0)
    per = -(-rows // files)
    for f in range(files):
        lo, hi = f * per, min(rows, (f + 1) * per)
        ids = pa.array([f"common_voice_en_{10_000_000 + i}.mp3" for i in range(lo, hi)])
        stub = pa.array([rng.bytes(32)] * (hi - lo), pa.binary())
        sentence = pa.array([f"sentence number {i}" for i in range(lo, hi)])
        speaker = pc.cast(pa.array(np.arange(lo, hi) % 5000), pa.string())
        pq.write_table(
            pa.table({"id": ids, "audio_bytes": stub, "sentence": sentence, "client_id": speaker}),
            folder / f"part-{f:03d}.parquet",
        )


def _joined(batch: pa.Table, layout, extra: pa.Table) -> pa.Table:
    """The replaced per-batch join, kept here as the reference arm."""
    from pipeline.columns import ID
    from pipeline.io.schema import to_canonical

    batch = to_canonical(batch, layout)
    batch = batch.filter(pc.is_in(batch.column(ID), value_set=extra.column(ID)))
    return batch.join(extra, keys=ID, join_type="inner")


def read_once(folder: Path, arm: str) -> dict:
    import ray

    from pipeline.commonvoice.view import releases_json
    from pipeline.config import build_config
    from pipeline.io.inputs import VIEW_ONLY, open_inputs
    from pipeline.table.workspace import Workspace

    cfg = build_config()
    inputs = open_inputs([str(folder)], cfg.storage)
    t0 = time.perf_counter()
    with Workspace(cfg.table.plan_memory_mb) as ws:
        inputs.load_view(ws, "en", inputs.units("en"))
        rows = releases_json(ws.arrow("SELECT * FROM view")).drop_columns(["releases"])
    planned = time.perf_counter() - t0
    ds = inputs.dataset(rows, cfg)
    if arm == "join":
        read = {*inputs.schema.names} - {inputs.layout.id_column} | {"id"}
        extra = rows.select(["id", *(c for c in rows.column_names if c not in read and c not in VIEW_ONLY)])
        ds = ray.data.read_parquet([f.path for f in inputs.files]).map_batches(
            functools.partial(_joined, layout=inputs.layout, extra=extra), batch_format="pyarrow"
        )
    t0 = time.perf_counter()
    out = sum(b.num_rows for b in ds.iter_batches(batch_size=None, batch_format="pyarrow"))
    wall = time.perf_counter() - t0
    assert out == rows.num_rows, (out, rows.num_rows)
    return {"arm": arm, "rows_out": out, "view_s": round(planned, 1), "read_s": round(wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 2_000_000])
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--join-up-to", type=int, default=200_000)
    ap.add_argument("--block-rows", type=int, default=3_000)
    args = ap.parse_args()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    runs = []
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix="parquet-scale-") as tmp:
            t0 = time.perf_counter()
            seed_mirror(Path(tmp), n, args.files)
            seeded = round(time.perf_counter() - t0, 1)
            sample = pq.read_table(next(Path(tmp).glob("*.parquet")))
            row_bytes = sample.nbytes // sample.num_rows
            ray.data.DataContext.get_current().target_max_block_size = args.block_rows * row_bytes
            for arm in ["index", *(["join"] if n <= args.join_up_to else [])]:
                r = {"rows": n, "files": args.files, "block_rows": args.block_rows, "seed_s": seeded}
                r.update(read_once(Path(tmp), arm))
                r["driver_peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
                runs.append(r)
                print(r, flush=True)
    ray.shutdown()
    print(write_results("parquet-scale-", {"cpu_flags": sorted(cpu_flags()), "ray_cpus": 2, "runs": runs}))


if __name__ == "__main__":
    main()
