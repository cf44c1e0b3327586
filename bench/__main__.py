"""One entry point for the benchmarks a maintainer reruns: ``python -m bench`` lists them, ``python -m
bench NAME [ARGS]`` runs one (ARGS go to it; ``python -m bench NAME --help`` shows them).  Each writes
its results to bench/results/ with a UTC timestamp; docs/benchmarks.md has the numbers and what they
decided.  Labelled sets and helpers (``*_set.py``, ``labelled_set``, ``data``, ``common``,
``seed_way``) are imported by these, not run.
"""

from __future__ import annotations

import runpy
import sys

# name -> what it measures (and the decision it backs)
BENCHMARKS = {
    "run": "our pipeline against the seed notebook's way, per stage, in one run (make bench)",
    "scale": "clips/s at several sizes, marginal rate, peak memory; --variant arms (quality, DNSMOS)",
    "demo_wall": "make demo's curation, this checkout against another commit, interleaved",
    "gates_eval": "the curation gates on the labelled set: good kept, bad kept (the WER ceiling)",
    "quality_eval": "the acoustic-quality gates: per-gate precision/recall, sweeps (their defaults)",
    "multilingual_eval": "Whisper base on espeak-ng es/fr/de/zh/ja: WER/CER, detect vs force, folding",
    "numbers_eval": "numbers spelled out before agreement (de/es/fr/it on espeak-ng): WER either way",
    "judge_dtype": "the judge in bfloat16 against float32 on this CPU (judge.dtype=auto)",
    "cv_memory": "peak memory while reading release tarballs of several sizes",
    "table_commit": "the table's own costs: commit time, files per snapshot, compaction over 30 nights",
    "release_scale": "a full release and a nightly delta against a table of 0.2-2 M clips: non-engine time, RSS",
    "remeasure": "a whole table's WER/CER measured again (a new agreement key) at 0.1-2 M rows: rows/s, RSS",
    "parquet_scale": "a Parquet mirror of 0.2-2 M rows read for the engines, its rows joined to the plan: wall, RSS",
    "parquet_limit": "a --limit trial run over a Parquet mirror of real-sized rows: the planned rows' row groups read",
    "export_scale": "curate export of a release-sized table (audio stubs): peak RSS and wall per format",
    "dnsmos_memory": "a DNSMOS actor's memory: onnxruntime's CPU arena and windows per call",
    "window_eval": "Whisper's encoder window, 30 s against auto: WER, speed, no-speech/language odds (CPU)",
    "gpu_check": "the cluster profile's Whisper on a GPU: eager/compiled x 30/auto (device machine only)",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "list"):
        width = max(map(len, BENCHMARKS))
        print("python -m bench NAME [ARGS]\n")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<{width}}  {what}")
        return 0
    name, *rest = argv
    if name not in BENCHMARKS:
        print(f"no benchmark {name!r}; python -m bench lists them", file=sys.stderr)
        return 2
    sys.argv = [f"bench.{name}", *rest]
    runpy.run_module(f"bench.{name}", run_name="__main__", alter_sys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
