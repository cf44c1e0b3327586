"""``curate export`` of a release-sized table: peak RSS and wall time per format, in a fresh process.

    .venv/bin/python -m bench.export_scale [--rows 2000000] [--formats webdataset parquet]

The clips table is seeded as ``bench/release_scale.py`` seeds it (N scored, kept rows through the
product's writer).  Each row's audio is a **stub** of 64 bytes (an ID3 header and padding) in the audio
table: two million real clips are about 100 GB, more than this machine's disk, and what the export holds
in memory per clip does not depend on the payload's size beyond one audio file's worth.  Then ``curate
export --format F`` runs as a user runs it; its peak RSS (``VmHWM``, polled) and wall time are recorded.
Results: ``bench/results/export-scale-<utc>.json``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from bench.common import write_results
from bench.release_scale import run_curate, seed_table
from pipeline.runtime.hardware import cpu_flags

STUB = b"ID3" + bytes(61)


def seed_audio(output: Path, rows_per_file: int = 200_000) -> int:
    """One stub audio row for every clip of the seeded clips table, committed as the run commits audio."""
    from pipeline.config import build_config
    from pipeline.table import audio as audio_table
    from pipeline.table import commit as commits
    from pipeline.table.catalog import table_root
    from pipeline.table.scan import file_batches_of
    from pipeline.table.schema import AUDIO_TABLE

    cfg = build_config()
    root = table_root(str(output), cfg)
    catalog = root.catalog()
    clips_id, audio_id = root.identifiers("en")
    clips, audio = catalog.load_table(clips_id), catalog.load_table(audio_id)
    files, n = [], 0
    for task in clips.scan().plan_files():
        for batch in file_batches_of(clips, task, ("id", "audio_sha256")):
            for start in range(0, batch.num_rows, rows_per_file):
                b = batch.slice(start, rows_per_file)
                rows = pa.table(
                    {
                        "audio_sha256": b.column("audio_sha256"),
                        "id": b.column("id"),
                        "size": pa.array(np.full(b.num_rows, len(STUB))),
                        "audio_bytes": pa.array([STUB] * b.num_rows, pa.binary()),
                    },
                    schema=AUDIO_TABLE,
                )
                files += commits.write_rows(audio, rows)
                n += b.num_rows
    audio_table.append_audio(lambda: catalog.load_table(audio_id), files, {"curate.run-id": "seed"})
    return n


def export_once(output: Path, fmt: str, dest: Path, log: Path) -> dict:
    wall, peak, text = run_curate(["export", "--output", str(output), "--format", fmt, "--to", str(dest)], log)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return {
        "format": fmt,
        "wall_s": round(wall, 1),
        "peak_rss_mib": round(peak / 2**20),
        "bytes_out": size,
        "said": text.strip().splitlines()[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--formats", nargs="+", default=["webdataset", "parquet"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="export-scale-") as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        seed_table(out, args.rows, [], np.random.default_rng(0))
        stubs = seed_audio(out)
        seeded = round(time.perf_counter() - t0, 1)
        print(f"seeded {args.rows} rows and {stubs} audio stubs in {seeded} s", flush=True)
        runs = []
        for fmt in args.formats:
            runs.append(export_once(out, fmt, Path(tmp) / f"to-{fmt}", Path(tmp) / f"{fmt}.log"))
            print(runs[-1], flush=True)
    path = write_results(
        "export-scale-",
        {
            "rows": args.rows,
            "audio": f"stub of {len(STUB)} bytes",
            "cpu_flags": sorted(cpu_flags()),
            "seed_s": seeded,
            "exports": runs,
        },
    )
    print(path)


if __name__ == "__main__":
    main()
