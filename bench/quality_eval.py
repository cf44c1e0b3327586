"""Per-gate precision and recall of the acoustic-quality gates on the labelled set (bench/quality_set.py).

    .venv/bin/python -m bench.quality_eval [--dnsmos] [--count 10] [--sweep]

Runs the pipeline's own stage functions (decode_audio, measure_quality, DnsmosScorer) and gates
(``quality_gates``) with the config's defaults, no engine.  Prints, per gate, its threshold, precision
and recall (10 dB SNR mixes are not judged either way), the share of clean clips every gate keeps,
and each condition's rejection rate; ``--sweep`` adds each gate's recall and clean-pass rate over a
range of thresholds.  Results: bench/results/quality-eval-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import pyarrow as pa

from bench import quality_set
from pipeline.config import CurationConfig, build_config
from pipeline.runtime.hardware import cpu_flags
from pipeline.stages.decode import decode_audio
from pipeline.stages.gate_rules import quality_gates
from pipeline.stages.quality import DnsmosScorer, measure_quality

RESULTS = Path(__file__).resolve().parent / "results"
SIGNALS = ("snr_db", "clipping_ratio", "speech_ratio", "loudness_lufs", "dnsmos_ovrl", "bandwidth_hz", "dropouts")
# (gate code, signal, config field, upper bound?, sweep values)
GATES = (
    ("noisy", "snr_db", "min_snr_db", False, (0, 3, 5, 8, 10, 12, 15, 20)),
    ("clipped", "clipping_ratio", "max_clipping_ratio", True, (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01)),
    ("mostly_silence", "speech_ratio", "min_speech_ratio", False, (0.1, 0.15, 0.2, 0.25, 0.3, 0.4)),
    ("too_quiet", "loudness_lufs", "min_loudness_lufs", False, (-60, -55, -50, -45, -40, -35)),
    ("low_mos", "dnsmos_ovrl", "min_dnsmos_ovrl", False, (1.6, 1.8, 2.0, 2.2, 2.4, 2.6)),
    ("narrow_band", "bandwidth_hz", "min_bandwidth_hz", False, (3000, 3800, 4500, 6000)),
    ("dropouts", "dropouts", "max_dropouts", True, (0, 1, 2, 3)),
)


def measure(clips: list[quality_set.Clip], cfg: CurationConfig, dnsmos: bool) -> list[dict]:
    table = pa.table({"id": [c.id for c in clips], "audio_bytes": [c.encoded() for c in clips]})
    rows: list[dict] = []
    scorer = DnsmosScorer(cfg.quality) if dnsmos else None
    for start in range(0, table.num_rows, 16):
        batch = decode_audio(table.slice(start, 16), cfg.audio, cfg.quality)
        batch = measure_quality(batch, cfg.quality, cfg.audio)
        if scorer is not None:
            batch = scorer(batch)
        rows += batch.drop_columns(["arr", "audio_bytes"]).to_pylist()
    return rows


def failed(row: dict, cfg: CurationConfig) -> list[str]:
    return [r for keep, r in (g(row) for g in quality_gates(cfg)) if not keep and r]


def evaluate(clips: list[quality_set.Clip], rows: list[dict], cfg: CurationConfig) -> dict:
    verdicts = [set(failed(r, cfg)) for r in rows]
    per_gate = {}
    for code, signal, field, _, _ in GATES:
        tp = fp = fn = 0
        for clip, got in zip(clips, verdicts, strict=True):
            if not quality_set.judged(clip.condition):
                continue
            want = code in clip.expect
            tp += want and code in got
            fp += (not want) and code in got
            fn += want and code not in got
        per_gate[code] = {
            "signal": signal,
            "threshold": getattr(cfg.gates, field),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / (tp + fn) if tp + fn else None,
        }
    by_condition: dict[str, list[bool]] = defaultdict(list)
    for clip, got in zip(clips, verdicts, strict=True):
        by_condition[clip.condition].append(bool(got))
    clean = by_condition["clean"]
    return {
        "gates": per_gate,
        "clean_kept": 1 - sum(clean) / len(clean),
        "rejected_by_condition": {c: sum(v) / len(v) for c, v in by_condition.items()},
    }


def sweep(clips: list[quality_set.Clip], rows: list[dict], cfg: CurationConfig) -> dict:
    out = {}
    for code, _signal, field, _upper, values in GATES:
        points = []
        for value in values:
            one = cfg.model_copy(update={"gates": cfg.gates.model_copy(update={field: value})})
            r = evaluate(clips, rows, one)
            points.append({"threshold": value, "recall": r["gates"][code]["recall"],
                           "precision": r["gates"][code]["precision"], "clean_kept": r["clean_kept"]})  # fmt: skip
        out[code] = points
    return out


def table(result: dict) -> str:
    lines = ["| gate | signal | default | precision | recall |", "|---|---|---:|---:|---:|"]
    fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    for code, g in result["gates"].items():
        th = "off" if g["threshold"] is None else g["threshold"]
        lines.append(f"| `{code}` | `{g['signal']}` | {th} | {fmt(g['precision'])} | {fmt(g['recall'])} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=10, help="clips per degraded condition")
    ap.add_argument("--clean", type=int, default=40)
    ap.add_argument("--dnsmos", action="store_true", help="score DNSMOS too (about 0.3-0.6 s a clip here)")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--narrow-band", type=float, default=4500, help="min_bandwidth_hz to evaluate (off by default)")
    args = ap.parse_args()
    cfg = build_config("local", overrides=[f"quality.dnsmos={str(args.dnsmos).lower()}",
                                           f"gates.min_bandwidth_hz={args.narrow_band}"])  # fmt: skip
    clips = quality_set.build(args.count, args.clean)
    t0 = time.time()
    rows = measure(clips, cfg, args.dnsmos)
    seconds = time.time() - t0
    result = evaluate(clips, rows, cfg)
    print(table(result))
    print(f"\nclean clips kept by every gate: {result['clean_kept']:.1%} ({args.clean} clips)")
    print("\n| condition | rejected |\n|---|---:|")
    for cond, rate in result["rejected_by_condition"].items():
        print(f"| {cond} | {rate:.0%} |")
    print(f"\n{len(clips)} clips measured in {seconds:.1f} s ({seconds / len(clips) * 1000:.0f} ms a clip"
          f"{' with DNSMOS' if args.dnsmos else ''})")  # fmt: skip
    record = {
        "when": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": sorted(cpu_flags())},
        "args": vars(args),
        "seconds": seconds,
        **result,
        "signals": [
            {"id": c.id, "condition": c.condition, **{s: r.get(s) for s in SIGNALS}}
            for c, r in zip(clips, rows, strict=True)
        ],
    }
    if args.sweep:
        record["sweep"] = sweep(clips, rows, cfg)
        for code, points in record["sweep"].items():
            print(f"\n{code}: " + ", ".join(
                f"{p['threshold']}: R={p['recall'] if p['recall'] is None else round(p['recall'], 2)} "
                f"clean={p['clean_kept']:.0%}" for p in points))  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"quality-eval-{record['when']}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    print(f"\nwrote {path.relative_to(RESULTS.parent.parent)}")


if __name__ == "__main__":
    main()
