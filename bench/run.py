"""Benchmark: our pipeline vs the seed notebook's way, per stage vs standalone limits, in one run.

    .venv/bin/python bench/run.py [--clips 200] [--e2e-clips 60] [--stage-clips 40] [--reps 3]

Writes bench/results/<utc-time>.json and prints a table.  Every speed figure has the WER of the
same run beside it.  Ratios measured within one run are the headline: this machine is noisy.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import ray  # noqa: E402

from bench.data import build  # noqa: E402
from pipeline.config import build_config  # noqa: E402
from pipeline.dag import Models, add_transcription_stages, build_curation_dataset, judged_columns  # noqa: E402
from pipeline.judge_logic import CHOICES, build_messages  # noqa: E402
from pipeline.metrics import corpus_wer  # noqa: E402
from pipeline.models import resolve_model  # noqa: E402
from pipeline.run import inspect_inputs  # noqa: E402
from pipeline.stages.audio import decode_audio, decode_clip  # noqa: E402
from pipeline.stages.judge import add_judge_stage  # noqa: E402


def timed(ds) -> dict:
    """Drain a dataset; time to first block (startup) apart from the steady-state rate."""
    t0 = time.perf_counter()
    first, rows, seen_first = None, [], 0
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        now = time.perf_counter()
        if first is None:
            first, seen_first = now, batch.num_rows
        rows.append(batch)
    end = time.perf_counter()
    table = pa.concat_tables(rows, promote_options="permissive") if rows else pa.table({})
    n = table.num_rows
    steady = (n - seen_first) / (end - first) if first and end > first and n > seen_first else None
    return {
        "rows": n,
        "total_s": end - t0,
        "first_row_s": (first or end) - t0,
        "steady_rows_per_s": steady,
        "table": table,
    }


T0 = time.perf_counter()


def note(msg: str) -> None:
    print(f"[bench {time.perf_counter() - T0:6.0f}s] {msg}", file=sys.stderr, flush=True)


def spread(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def wer_of(table: pa.Table, refs: dict[str, str]) -> float | None:
    if table.num_rows == 0 or "transcription" not in table.schema.names:
        return None
    pairs = [
        (refs[i], t or "")
        for i, t in zip(table.column("id").to_pylist(), table.column("transcription").to_pylist(), strict=True)
        if i in refs
    ]
    return corpus_wer(pairs) if pairs else None


# ---------------------------------------------------------------- standalone limits (no Ray)


def standalone_decode(blobs: list[bytes], cfg) -> float:
    t0 = time.perf_counter()
    for b in blobs:
        decode_clip(b, cfg.audio)
    return len(blobs) / (time.perf_counter() - t0)


def standalone_whisper(arrays: list[np.ndarray], cfg, model_path: str) -> dict:
    from faster_whisper import WhisperModel

    t0 = time.perf_counter()
    model = WhisperModel(
        model_path, device="cpu", compute_type=cfg.transcriber.compute_type, cpu_threads=cfg.transcriber.cpu_threads
    )
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    for a in arrays:
        segs, _ = model.transcribe(
            a, language="en", beam_size=1, condition_on_previous_text=False, vad_filter=False, without_timestamps=True
        )
        " ".join(s.text for s in segs)
    return {"load_s": load, "clips_per_s": len(arrays) / (time.perf_counter() - t1)}


def standalone_judge(texts: list[str], cfg, model_path: str) -> dict:
    from vllm import LLM, SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    j = cfg.judge
    t0 = time.perf_counter()
    llm = LLM(
        model=model_path,
        max_model_len=j.max_model_len,
        dtype=j.dtype,
        gpu_memory_utilization=j.gpu_memory_utilization,
        enforce_eager=j.enforce_eager,
        enable_prefix_caching=j.enable_prefix_caching,
        structured_outputs_config={"backend": "xgrammar"},
    )
    start = time.perf_counter() - t0
    params = SamplingParams(
        max_tokens=1,
        temperature=0,
        logprobs=j.top_logprobs,
        structured_outputs=StructuredOutputsParams(choice=list(CHOICES)),
    )
    chats = [build_messages(j.system_prompt, t, j.max_transcript_chars) for t in texts]
    llm.chat(chats[:4], params, use_tqdm=False)  # warm-up
    t1 = time.perf_counter()
    llm.chat(chats, params, use_tqdm=False)
    rate = len(chats) / (time.perf_counter() - t1)
    del llm
    return {"engine_start_s": start, "rows_per_s": rate}


# ---------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200, help="clips generated (the data set)")
    p.add_argument("--e2e-clips", type=int, default=60, help="clips per end-to-end run (both ways)")
    p.add_argument("--stage-clips", type=int, default=40, help="clips per per-stage measurement")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--e2e-reps", type=int, default=1)
    p.add_argument("--skip-seed", action="store_true")
    p.add_argument("--skip-standalone-judge", action="store_true")
    # Logical CPUs for Ray: the seed's fixed pools (1 + 2 + 5 actors + the judge) must all fit, or it waits forever.
    p.add_argument("--ray-cpus", type=int, default=16)
    args = p.parse_args()

    data = build(args.clips, REPO / "bench" / "data" / f"clips-{args.clips}.parquet")
    full = pq.read_table(data)
    refs = dict(zip(full.column("id").to_pylist(), full.column("sentence").to_pylist(), strict=True))
    tmp = REPO / "bench" / "data"
    e2e_file = tmp / f"e2e-{args.e2e_clips}.parquet"
    pq.write_table(full.slice(0, args.e2e_clips), e2e_file)
    stage_file = tmp / f"stage-{args.stage_clips}.parquet"
    pq.write_table(full.slice(0, args.stage_clips), stage_file)

    cfg = build_config("local")
    models = Models(transcriber=resolve_model(cfg.transcriber.model), judge=resolve_model(cfg.judge.model))
    whisper_hf = resolve_model("bundled:whisper-tiny.en-hf").path
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    results: dict = {"stages": {}, "e2e": {}, "standalone": {}}

    # Per stage, in Ray, each on the materialised output of the previous one.
    layout, _, _ = inspect_inputs([str(stage_file)], cfg)
    from pipeline.dag import read_clips

    note("per-stage measurements in Ray")
    dec_rates, asr_rates, asr_first, judge_rates, judge_first, wers = [], [], [], [], [], []
    for _ in range(args.reps):
        ds = read_clips([str(stage_file)], cfg, layout).materialize()
        d = timed(
            ds.map_batches(
                functools.partial(decode_audio, cfg=cfg.audio),
                batch_size=cfg.audio.decode_batch_size,
                batch_format="pyarrow",
            )
        )
        dec_rates.append(d["rows"] / d["total_s"])
        decoded = ray.data.from_arrow(d["table"]).materialize()
        t = timed(add_transcription_stages(decoded, cfg, models.transcriber.path))
        asr_rates.append(t["steady_rows_per_s"])
        asr_first.append(t["first_row_s"])
        wers.append(wer_of(t["table"], refs))
        transcribed = ray.data.from_arrow(t["table"]).materialize()
        j = timed(add_judge_stage(transcribed, cfg.judge, models.judge.path, keep=judged_columns(layout)))
        judge_rates.append(j["steady_rows_per_s"])
        judge_first.append(j["first_row_s"])
    results["stages"] = {
        "decode_clips_per_s": spread(dec_rates),
        "transcribe_clips_per_s": spread(asr_rates),
        "transcribe_first_row_s": spread(asr_first),
        "judge_rows_per_s": spread(judge_rates),
        "judge_first_row_s (engine start)": spread(judge_first),
        "wer": spread(wers),
    }

    note("standalone limits")
    # Standalone limits over the same bytes / arrays / texts, outside Ray.
    blobs = pq.read_table(stage_file).column("audio_bytes").to_pylist()
    arrays = [decode_clip(b, cfg.audio) for b in blobs]
    texts = t["table"].column("transcription").to_pylist()
    sa_dec = [standalone_decode(blobs, cfg) for _ in range(args.reps)]
    sa_asr = [standalone_whisper(arrays, cfg, models.transcriber.path) for _ in range(args.reps)]
    results["standalone"] = {
        "decode_clips_per_s": spread(sa_dec),
        "whisper_clips_per_s": spread([r["clips_per_s"] for r in sa_asr]),
        "whisper_load_s": spread([r["load_s"] for r in sa_asr]),
    }
    ray.shutdown()  # free the cores and memory for the standalone engine
    if not args.skip_standalone_judge:
        sj = standalone_judge(texts, cfg, models.judge.path)
        results["standalone"]["judge_rows_per_s"] = spread([sj["rows_per_s"]])
        results["standalone"]["judge_engine_start_s"] = spread([sj["engine_start_s"]])

    # End to end, ours and the seed's, on the same clips in the same run.
    ray.init(num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    layout_e2e, _, _ = inspect_inputs([str(e2e_file)], cfg)
    audio_s = sum(pq.read_table(e2e_file).column("source_duration_s").to_pylist())
    ways = {"ours": lambda: build_curation_dataset([str(e2e_file)], cfg, layout_e2e, models)}
    if not args.skip_seed:
        from bench.seed_way import seed_dataset

        ways["seed"] = lambda: seed_dataset([str(e2e_file)], whisper_hf, models.judge.path)
    for name, make in ways.items():
        runs = []
        for _ in range(args.e2e_reps):
            note(f"end to end: {name}")
            r = timed(make())
            runs.append(
                {
                    "total_s": r["total_s"],
                    "first_row_s": r["first_row_s"],
                    "rows_out": r["rows"],
                    "wer": wer_of(r["table"], refs),
                }
            )
        results["e2e"][name] = {
            "clips": args.e2e_clips,
            "audio_s": audio_s,
            "clips_per_s": spread([args.e2e_clips / x["total_s"] for x in runs]),
            "audio_s_per_s": spread([audio_s / x["total_s"] for x in runs]),
            "first_row_s": spread([x["first_row_s"] for x in runs]),
            "wer_of_rows_out": spread([x["wer"] for x in runs]),
            "runs": runs,
        }
    ray.shutdown()
    if "seed" in results["e2e"]:
        results["e2e"]["ratio_ours_over_seed"] = (
            results["e2e"]["ours"]["clips_per_s"]["median"] / results["e2e"]["seed"]["clips_per_s"]["median"]
        )
    s, sa = results["stages"], results["standalone"]
    results["fraction_of_standalone"] = {
        "decode": s["decode_clips_per_s"]["median"] / sa["decode_clips_per_s"]["median"],
        "transcribe": (s["transcribe_clips_per_s"]["median"] or 0) / sa["whisper_clips_per_s"]["median"],
    }
    if "judge_rows_per_s" in sa and s["judge_rows_per_s"]["median"]:
        results["fraction_of_standalone"]["judge"] = s["judge_rows_per_s"]["median"] / sa["judge_rows_per_s"]["median"]

    import ctranslate2
    import vllm

    results["meta"] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "vllm": vllm.__version__,
        "ctranslate2": ctranslate2.__version__,
        "args": vars(args),
        "models": {"whisper": models.transcriber.revision, "judge": models.judge.revision},
    }
    out = REPO / "bench" / "results" / f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print_table(results)
    print(f"\nwrote {out}")


def print_table(r: dict) -> None:
    def f(x, digits=2):
        return "-" if x is None else f"{x:.{digits}f}"

    print("\n| measure | median | min | max |\n|---|---:|---:|---:|")
    for section in ("stages", "standalone"):
        for k, v in r[section].items():
            print(f"| {section}: {k} | {f(v['median'])} | {f(v['min'])} | {f(v['max'])} |")
    for name, e in r["e2e"].items():
        if isinstance(e, dict):
            for k in ("clips_per_s", "audio_s_per_s", "first_row_s", "wer_of_rows_out"):
                v = e[k]
                print(f"| e2e {name}: {k} | {f(v['median'])} | {f(v['min'])} | {f(v['max'])} |")
    if "ratio_ours_over_seed" in r["e2e"]:
        print(f"\nend to end, ours / seed: {r['e2e']['ratio_ours_over_seed']:.2f}x")
    print("fraction of standalone limit:", {k: round(v, 2) for k, v in r["fraction_of_standalone"].items()})


if __name__ == "__main__":
    main()
