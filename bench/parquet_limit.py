"""A trial run (``curate run --limit N``) over a Parquet mirror of real-sized audio rows: what reading the
planned rows costs when they are spread over every file.

    .venv/bin/python -m bench.parquet_limit [--files 10] [--rows 5000] [--limit 20] [--code DIR]

Builds a mirror in Hugging Face's shape (``path`` as the id, an ``audio`` struct, 100 rows a row group, as
``datasets`` writes audio) whose ids are shuffled over ``--files`` files of ``--rows`` rows each, every clip
the bundled sample's speech padded to ~40 KB as a Common Voice MP3 is (an ID3 tag, stored uncompressed),
then runs ``curate run --limit N`` on it with the judge off, twice.  ``--code DIR`` runs another checkout's
code (a clone of an older commit) for a before/after.  Recorded: wall, the engines step's seconds (its
engine start included), the driver's peak RSS.  Results: ``bench/results/parquet-limit-<utc>.json``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench.common import write_results
from pipeline.runtime.hardware import cpu_flags, describe

REPO = Path(__file__).resolve().parents[1]
PAD = 36_000  # bytes of ID3 tag before each MP3: the sample's 5 s clips are ~4 KB, Common Voice's ~40 KB


def build_mirror(folder: Path, files: int, rows: int) -> int:
    from scripts.make_cv_release import sample_clips

    size = bytes([(PAD >> 21) & 0x7F, (PAD >> 14) & 0x7F, (PAD >> 7) & 0x7F, PAD & 0x7F])
    tag = b"ID3\x04\x00\x00" + size + b"\x00" * PAD
    clips = [(tag + mp3, sentence) for mp3, sentence, _ in sample_clips(40)]
    order = np.random.default_rng(0).permutation(files * rows)
    for f in range(files):
        part = [int(i) for i in order[f * rows : (f + 1) * rows]]
        table = pa.table(
            {
                "path": [f"en/train/common_voice_en_{10_000_000 + i}.mp3" for i in part],
                "audio": [{"bytes": clips[i % 40][0], "path": None} for i in part],
                "sentence": [clips[i % 40][1] for i in part],
            }
        )
        pq.write_table(table, folder / f"train-{f:05d}-of-{files:05d}.parquet", row_group_size=100, compression="none")
    return sum(p.stat().st_size for p in folder.iterdir())


def run_once(code: Path, mirror: Path, out: Path, limit: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = ["/usr/bin/time", "-f", "PEAK_KB %M", sys.executable, "-m", "pipeline.cli", "run", "--input", str(mirror),
           "--output", str(out), "--limit", str(limit), "--set", "judge.enabled=false"]  # fmt: skip
    t0 = time.time()
    env = {**os.environ, "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=True)
    wall = time.time() - t0
    log = next((out / "_logs").glob("*.log")).read_text()
    return {
        "wall_s": round(wall, 1),
        "engines_s": float(re.search(r"engines took ([\d.]+) s", log).group(1)),
        "peak_rss_mib": int(re.search(r"PEAK_KB (\d+)", proc.stderr).group(1)) // 1024,
        "kept": int(re.search(r"^\s+kept\s+(\d+)", proc.stdout, re.M).group(1)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--rows", type=int, default=5000, help="rows a file")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--code", type=Path, default=REPO, help="the checkout whose code runs (default: this one)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="parquet-limit-"))
    try:
        (work / "mirror").mkdir()
        size = build_mirror(work / "mirror", args.files, args.rows)
        runs = [run_once(args.code, work / "mirror", work / "out", args.limit) for _ in range(2)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    git = ["git", "-C", str(args.code), "rev-parse", "--short", "HEAD"]
    commit = subprocess.run(git, capture_output=True, text=True).stdout.strip()
    result = {
        "hardware": describe(cpu_flags(), {}),
        "code": commit,
        "files": args.files,
        "rows_a_file": args.rows,
        "mirror_bytes": size,
        "limit": args.limit,
        "runs": runs,
    }
    print(result)
    write_results("parquet-limit-", result)


if __name__ == "__main__":
    main()
