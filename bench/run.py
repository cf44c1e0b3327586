"""Benchmark: our pipeline vs the seed notebook's way, per stage vs standalone limits, in one run.

    .venv/bin/python -m bench.run [--clips 200] [--e2e-clips 24] [--stage-clips 40] [--reps 3] [--judge-reps 2]

Writes bench/results/<utc-time>.json and prints a table.  Every speed figure has the WER of the
same run beside it.  Ratios measured within one run are the headline: this machine is noisy.
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pyarrow as pa
import pyarrow.compute
import pyarrow.parquet as pq
import ray

from bench.common import time_offline_judge, write_results
from bench.data import build
from pipeline.config import build_config
from pipeline.dag import Models, apply_stages, build_curation_dataset, curation_stages
from pipeline.engines.whisper import BatchedWhisper
from pipeline.io.schema import inspect_schema, to_canonical
from pipeline.metrics import corpus_wer
from pipeline.models import resolve_model
from pipeline.stages import judge, transcribe
from pipeline.stages.decode import decode_audio, decode_clip
from pipeline.stages.judge import vllm_engine_kwargs

REPO = Path(__file__).resolve().parents[1]


def timed(build: Callable[[], ray.data.Dataset]) -> dict:
    """Build and drain a dataset; time to first block (startup) apart from the steady-state rate.

    Building is inside the clock: the judge stage renders its chat template on the driver then.
    """
    t0 = time.perf_counter()
    ds = build()
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


def judge_input(transcribed: pa.Table, rows: int) -> pa.Table:
    """The transcripts repeated to ``rows`` rows with unique ids: enough batches for a steady state
    (the engine takes max_concurrent_batches x batch_size rows at once, so fewer arrive in one burst)."""
    reps = -(-rows // transcribed.num_rows)
    table = pa.concat_tables([transcribed] * reps).slice(0, rows)
    ids = [f"{i}-{n}" for n, i in enumerate(table.column("id").to_pylist())]
    return table.set_column(table.schema.get_field_index("id"), "id", pa.array(ids, pa.string()))


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
    """Bare faster-whisper ``transcribe()`` per clip: the engine's own per-clip path, with its settings."""
    t = cfg.transcriber
    t0 = time.perf_counter()
    engine = BatchedWhisper(model_path, compute_type=t.compute_type, cpu_threads=t.cpu_threads, language=t.language)
    load = time.perf_counter() - t0
    t1 = time.perf_counter()
    texts = [engine.transcribe_one(a, beam_size=t.beam_size).text for a in arrays]
    return {"load_s": load, "clips_per_s": len(arrays) / (time.perf_counter() - t1), "texts": texts}


def standalone_batched_whisper(arrays: list[np.ndarray], cfg, model_path: str) -> dict:
    """The stage's own engine and settings, outside Ray: the limit the stage itself can reach."""
    t = cfg.transcriber
    engine = BatchedWhisper(model_path, compute_type=t.compute_type, cpu_threads=t.cpu_threads, language=t.language)
    t1 = time.perf_counter()
    texts = []
    for i in range(0, len(arrays), t.batch_size):  # the stage sees one batch per call, so batch here too
        got = engine.transcribe(arrays[i : i + t.batch_size], t.batch_size, min_window_s=t.min_window_s)
        texts += [x.text for x in got]
    return {"clips_per_s": len(arrays) / (time.perf_counter() - t1), "texts": texts}


def standalone_judge(texts: list[str], cfg, model_path: str) -> dict:
    return time_offline_judge({"model": model_path, **vllm_engine_kwargs(cfg.judge)}, texts, cfg.judge)


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200, help="clips generated (the data set)")
    # The defaults fit in 15 minutes on 2 cores; both engines' start-up weighs heavily at this size.
    p.add_argument("--e2e-clips", type=int, default=24, help="clips per end-to-end run (every way)")
    p.add_argument("--stage-clips", type=int, default=40, help="clips per per-stage measurement")
    p.add_argument("--judge-rows", type=int, default=64, help="rows per judge-stage measurement")
    p.add_argument("--reps", type=int, default=3)
    # Each judge-stage repetition starts a vLLM engine (~55 s here); two keep the run under 15 minutes.
    p.add_argument("--judge-reps", type=int, default=2)
    p.add_argument("--e2e-reps", type=int, default=3)
    p.add_argument("--skip-seed", action="store_true")
    p.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run our pipeline end to end with this config override (a before/after in one run)",
    )
    p.add_argument("--skip-standalone-judge", action="store_true")
    # Logical CPUs for Ray: the seed's fixed pools (1 + 2 + 5 actors + the judge) must all fit, or it waits forever.
    p.add_argument("--ray-cpus", type=int, default=16)
    return p.parse_args()


def prepare_data(args: argparse.Namespace) -> tuple[dict[str, str], Path, Path]:
    """The generated clips' references, and the end-to-end and per-stage slices as files."""
    data = build(args.clips, REPO / "bench" / "data" / f"clips-{args.clips}.parquet")
    full = pq.read_table(data)
    refs = dict(zip(full.column("id").to_pylist(), full.column("sentence").to_pylist(), strict=True))
    tmp = REPO / "bench" / "data"
    e2e_file = tmp / f"e2e-{args.e2e_clips}.parquet"
    pq.write_table(full.slice(0, args.e2e_clips), e2e_file)
    stage_file = tmp / f"stage-{args.stage_clips}.parquet"
    pq.write_table(full.slice(0, args.stage_clips), stage_file)
    return refs, e2e_file, stage_file


def blocks(table: pa.Table, rows: int) -> ray.data.Dataset:
    return ray.data.from_arrow([table.slice(i, rows) for i in range(0, table.num_rows, rows)]).materialize()


def measure_stages(args, cfg, models: Models, canonical: pa.Table, layout, refs) -> tuple[dict, pa.Table]:
    """Per stage, in Ray, each on the materialised output of the previous one, cut into blocks of the
    stage's batch size so rows stream (one big block would arrive all at once: no steady state)."""
    note("per-stage measurements in Ray")
    runs: dict[str, list] = {k: [] for k in ("decode", "transcribe", "judge")}
    transcribed = None
    for rep in range(args.reps):
        dec_in = blocks(canonical, cfg.audio.decode_batch_size)  # inputs are made outside the clock
        d = timed(
            lambda dec_in=dec_in: dec_in.map_batches(
                functools.partial(decode_audio, cfg=cfg.audio),
                batch_size=cfg.audio.decode_batch_size,
                batch_format="pyarrow",
                num_cpus=cfg.audio.decode_num_cpus,
            )
        )
        asr_in = blocks(d["table"], cfg.transcriber.batch_size)
        t = timed(lambda asr_in=asr_in: apply_stages(asr_in, transcribe.stages(cfg, models.transcriber.path)))
        t["wer"] = wer_of(t["table"], refs)
        transcribed = t["table"]
        measured = {"decode": d, "transcribe": t}
        if rep < args.judge_reps:
            judge_in = blocks(judge_input(t["table"], args.judge_rows), cfg.judge.batch_size)
            measured["judge"] = timed(
                lambda judge_in=judge_in: judge.stage(cfg, models.judge.path, canonical.column_names).apply(judge_in)
            )
        for name, r in measured.items():
            runs[name].append({k: v for k, v in r.items() if k != "table"})
    stages = {
        name: {
            "rows": rs[0]["rows"],
            "steady_rows_per_s": spread([r["steady_rows_per_s"] for r in rs]),
            "rows_per_s_incl_start": spread([r["rows"] / r["total_s"] for r in rs]),
            "first_row_s": spread([r["first_row_s"] for r in rs]),
        }
        for name, rs in runs.items()
        if rs
    }
    stages["transcribe"]["wer"] = spread([r["wer"] for r in runs["transcribe"]])
    return stages, transcribed


def measure_standalone(args, cfg, models: Models, canonical: pa.Table) -> dict:
    """Standalone limits over the same bytes and arrays, outside Ray."""
    note("standalone limits")
    blobs = canonical.column("audio_bytes").to_pylist()
    arrays = [decode_clip(b, cfg.audio) for b in blobs]
    sa_dec = [standalone_decode(blobs, cfg) for _ in range(args.reps)]
    # One repetition: the library's per-clip path is the slow reference, not the limit the stage aims at.
    sa_asr = [standalone_whisper(arrays, cfg, models.transcriber.path)]
    sa_batched = [standalone_batched_whisper(arrays, cfg, models.transcriber.path) for _ in range(args.reps)]
    stage_refs = canonical.column("sentence").to_pylist()
    return {
        "decode_clips_per_s": spread(sa_dec),
        "faster_whisper_transcribe_clips_per_s": spread([r["clips_per_s"] for r in sa_asr]),
        "faster_whisper_transcribe_wer": corpus_wer(list(zip(stage_refs, sa_asr[0]["texts"], strict=True))),
        "batched_whisper_clips_per_s": spread([r["clips_per_s"] for r in sa_batched]),
        "batched_whisper_wer": corpus_wer(list(zip(stage_refs, sa_batched[0]["texts"], strict=True))),
        "whisper_load_s": spread([r["load_s"] for r in sa_asr]),
    }


def measure_e2e(args, cfg, models: Models, e2e_file: Path, refs) -> dict:
    """End to end, ours and the seed's, on the same clips in the same run, interleaved."""
    audio_s = sum(pq.read_table(e2e_file).column("source_duration_s").to_pylist())
    columns = pq.read_schema(e2e_file).names

    def ours(c):
        # The DAG of `curate run` over the file, as run.py builds it for the clips that need engines.
        stages = curation_stages(c, models, columns)
        return build_curation_dataset(ray.data.read_parquet(str(e2e_file)), columns, stages, c)

    ways = {"ours": lambda: ours(cfg)}
    for item in args.also:
        alt = build_config("local", overrides=[item])
        ways[f"ours {item}"] = lambda alt=alt: ours(alt)
    if not args.skip_seed:
        from bench.seed_way import seed_dataset

        whisper_hf = resolve_model("bundled:whisper-tiny.en-hf").path
        ways["seed"] = lambda: seed_dataset([str(e2e_file)], whisper_hf, models.judge.path)
    e2e: dict = {}
    last_tables: dict[str, pa.Table] = {}
    for rep in range(args.e2e_reps):
        for name, make in ways.items():  # interleaved, so drift on this noisy machine hits every way alike
            note(f"end to end: {name} (rep {rep + 1}/{args.e2e_reps})")
            r = timed(make)
            last_tables[name] = r["table"]
            e2e.setdefault(name, {"clips": args.e2e_clips, "audio_s": audio_s, "runs": []})["runs"].append(
                {
                    "total_s": r["total_s"],
                    "first_row_s": r["first_row_s"],
                    "rows_out": r["rows"],
                    "wer_of_rows_out": wer_of(r["table"], refs),
                }
            )
    # Quality on the same clips for every way: the ids that every way put out.
    common = set.intersection(*(set(t.column("id").to_pylist()) for t in last_tables.values()))
    for name, e in e2e.items():
        runs, table = e["runs"], last_tables[name]
        e["clips_per_s"] = spread([args.e2e_clips / x["total_s"] for x in runs])
        e["audio_s_per_s"] = spread([audio_s / x["total_s"] for x in runs])
        e["first_row_s"] = spread([x["first_row_s"] for x in runs])
        e["wer_of_rows_out"] = spread([x["wer_of_rows_out"] for x in runs])
        keep = pa.compute.is_in(table.column("id"), pa.array(sorted(common), pa.string()))
        e["wer_on_common_ids"] = wer_of(table.filter(keep), refs)
        e["common_ids"] = len(common)
    return e2e


def ratios_over_seed(e2e: dict) -> dict:
    base = e2e.get("seed")
    if not base:
        return {}
    return {
        name: {
            "clips_per_s": e["clips_per_s"]["median"] / base["clips_per_s"]["median"],
            # Per repetition (the ways run interleaved), so drift between repetitions cancels.
            "per_rep": [b["total_s"] / x["total_s"] for x, b in zip(e["runs"], base["runs"], strict=True)],
        }
        for name, e in e2e.items()
        if name != "seed"
    }


def fractions_of_standalone(stages: dict, sa: dict) -> dict:
    # No judge fraction: the engine takes max_concurrent_batches x batch_size rows at once and hands
    # them back in waves, so its rate after the first output row overstates the steady state.
    med = {k: v["steady_rows_per_s"]["median"] or 0 for k, v in stages.items()}
    return {
        "decode vs soundfile+soxr": med["decode"] / sa["decode_clips_per_s"]["median"],
        "transcribe vs bare faster-whisper transcribe()": med["transcribe"]
        / sa["faster_whisper_transcribe_clips_per_s"]["median"],
        "transcribe vs its own batched engine outside Ray": med["transcribe"]
        / sa["batched_whisper_clips_per_s"]["median"],
    }


def meta(args, models: Models, started: float) -> dict:
    import ctranslate2
    import vllm

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "ray": ray.__version__,
        "vllm": vllm.__version__,
        "ctranslate2": ctranslate2.__version__,
        "args": vars(args),
        "models": {"whisper": models.transcriber.revision, "judge": models.judge.revision},
        # The whole harness, data set included: the budget is 15 minutes on this machine.
        "harness_wall_s": time.perf_counter() - started,
    }


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    refs, e2e_file, stage_file = prepare_data(args)
    cfg = build_config("local")
    models = Models(transcriber=resolve_model(cfg.transcriber.model), judge=resolve_model(cfg.judge.model))
    layout = inspect_schema(pq.read_schema(stage_file))
    canonical = to_canonical(pq.read_table(stage_file), layout)

    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    stages, transcribed = measure_stages(args, cfg, models, canonical, layout, refs)
    standalone = measure_standalone(args, cfg, models, canonical)
    ray.shutdown()  # free the cores and memory for the standalone engine
    if not args.skip_standalone_judge:
        texts = judge_input(transcribed, args.judge_rows).column("transcription").to_pylist()
        sj = standalone_judge(texts, cfg, models.judge.path)
        standalone["judge_rows_per_s"] = spread([sj["rows_per_s"]])
        standalone["judge_engine_start_s"] = spread([sj["engine_start_s"]])

    ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False, _node_ip_address="127.0.0.1")
    e2e = measure_e2e(args, cfg, models, e2e_file, refs)
    ray.shutdown()

    results = {
        "stages": stages,
        "standalone": standalone,
        "e2e": e2e,
        "ratios_over_seed": ratios_over_seed(e2e),
        "fraction_of_standalone": fractions_of_standalone(stages, standalone),
        "meta": meta(args, models, started),
    }
    out = write_results("", results)
    print_table(results)
    print(f"\nwrote {out}")


def print_table(r: dict) -> None:
    def f(x, digits=2):
        return "-" if x is None else f"{x:.{digits}f}"

    def row(label: str, v: dict) -> None:
        print(f"| {label} | {f(v['median'])} | {f(v['min'])} | {f(v['max'])} |")

    print("\n| measure | median | min | max |\n|---|---:|---:|---:|")
    for name, st in r["stages"].items():
        for k, v in st.items():
            if isinstance(v, dict):
                row(f"stage {name}: {k}", v)
    for k, v in r["standalone"].items():
        if isinstance(v, dict):
            row(f"standalone: {k}", v)
        else:
            print(f"| standalone: {k} | {f(v, 3)} | | |")
    for name, e in r["e2e"].items():
        for k in ("clips_per_s", "audio_s_per_s", "first_row_s", "wer_of_rows_out"):
            row(f"e2e {name}: {k}", e[k])
        print(f"| e2e {name}: WER on the {e['common_ids']} ids every way kept | {f(e['wer_on_common_ids'], 3)} | | |")
    for name, ratio in r["ratios_over_seed"].items():
        per_rep = ", ".join(f(x) for x in ratio["per_rep"])
        print(f"\nend to end, {name} / seed: {f(ratio['clips_per_s'])}x (per repetition: {per_rep})")
    print(f"\nharness wall time: {r['meta']['harness_wall_s'] / 60:.1f} min")
    print("\nfraction of standalone limit:")
    for k, v in r["fraction_of_standalone"].items():
        print(f"  {k}: {v:.2f}")


if __name__ == "__main__":
    main()
