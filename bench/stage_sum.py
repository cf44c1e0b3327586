"""End-to-end wall time against the sum of the stages' standalone costs, on the same clips.

Each stage runs alone, outside Ray, with the embedded default's own engines and settings: decode
(soundfile + soxr), the batched Whisper engine (load, then batch after batch), and the judge through
vLLM's offline ``LLM`` (engine start, then every row).  Then ``curate run`` on the same file, as a
user runs it.  The ratio says what Ray, streaming and the product's own bookkeeping cost on top of
the engines' work (goal: at most 1.3x), and the parts say where the rest goes.

Usage: .venv/bin/python -m bench.stage_sum [--clips 1000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import curate, time_offline_judge, write_results
from bench.data import build
from pipeline.config import build_config
from pipeline.engines.whisper import BatchedWhisper
from pipeline.models import resolve_model
from pipeline.stages.decode import decode_clip
from pipeline.stages.judge import vllm_engine_kwargs

REPO = Path(__file__).resolve().parents[1]


def standalone(src: Path) -> dict:
    cfg, _ = build_config().for_this_machine()
    table = pq.read_table(src, columns=["audio_bytes"])
    blobs = table.column("audio_bytes").to_pylist()

    t0 = time.perf_counter()
    arrays = [decode_clip(b, cfg.audio) for b in blobs]
    decode_s = time.perf_counter() - t0

    t = cfg.transcriber
    t0 = time.perf_counter()
    engine = BatchedWhisper(
        resolve_model(t.model).path, compute_type=t.compute_type, cpu_threads=t.cpu_threads, language=t.language
    )
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    texts: list[str] = []
    for i in range(0, len(arrays), t.batch_size):
        texts += [
            x.text for x in engine.transcribe(arrays[i : i + t.batch_size], t.batch_size, min_window_s=t.min_window_s)
        ]
    whisper_s = time.perf_counter() - t0
    del engine

    judge = time_offline_judge(
        {"model": resolve_model(cfg.judge.model).path, **vllm_engine_kwargs(cfg.judge)}, texts, cfg.judge
    )
    judge_s = len(texts) / judge["rows_per_s"]
    parts = {
        "decode_s": decode_s,
        "whisper_load_s": load_s,
        "whisper_s": whisper_s,
        "judge_engine_start_s": judge["engine_start_s"],
        "judge_s": judge_s,
    }
    return {**parts, "sum_s": sum(parts.values()), "sum_work_s": decode_s + whisper_s + judge_s}


def end_to_end(src: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="stage-sum-") as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        proc, result = curate(["--input", str(src), "--output", str(out), "--no-audio"])
        wall = time.perf_counter() - t0
        if result is None:
            raise RuntimeError(proc.stderr[-3000:])
    return {"wall_s": wall, "counts": result.tally.counts.model_dump(by_alias=True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clips", type=int, default=1000)
    args = p.parse_args()
    src = build(args.clips, REPO / "bench" / "data" / f"clips-{args.clips}.parquet")
    result: dict = {"clips": args.clips}
    result["standalone"] = standalone(src)
    print(json.dumps(result["standalone"]), flush=True)
    result["e2e"] = end_to_end(src)
    result["ratio"] = result["e2e"]["wall_s"] / result["standalone"]["sum_s"]
    result["ratio_work_only"] = result["e2e"]["wall_s"] / result["standalone"]["sum_work_s"]
    print(json.dumps(result), flush=True)
    print(f"results: {write_results('stage-sum-', result)}")


if __name__ == "__main__":
    main()
