"""``make demo``'s run (the bundled sample, ``curate run``) with the judge in bfloat16 and in float32,
interleaved repetition by repetition, on this machine.  ``judge.dtype=auto`` picks bfloat16 only on
CPUs with AVX-512 BF16 or AMX; this measures what that choice is worth here, and what float32 costs.

Usage: .venv/bin/python -m bench.judge_dtype [--reps 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import write_results
from pipeline.hardware import cpu_flags

REPO = Path(__file__).resolve().parents[1]


def run(dtype: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"dtype-{dtype}-") as tmp:
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "pipeline.cli", "run", "--output", str(out), "--set", f"judge.dtype={dtype}"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"dtype": dtype, "failed": proc.stderr[-2000:]}
        manifest = json.loads((out / "manifest.json").read_text())
    return {"dtype": dtype, "wall_s": wall, "counts": manifest["counts"], "reasons": manifest.get("reasons")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    flags = cpu_flags()
    result: dict = {"cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))), "runs": []}
    for rep in range(args.reps):
        for dtype in ("bfloat16", "float32"):
            r = {"rep": rep, **run(dtype)}
            result["runs"].append(r)
            print(json.dumps(r), flush=True)
    print(f"results: {write_results('judge-dtype-', result)}")


if __name__ == "__main__":
    main()
