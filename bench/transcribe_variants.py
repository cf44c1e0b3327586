"""Transcription variants, outside Ray, on the same clips: speed beside WER.

    .venv/bin/python -m bench.transcribe_variants [--clips 200] [--n 60] [--reps 3]

The push measures ideas instead of assuming them.  Each variant runs the same tiny.en int8 weights
over the same decoded arrays:
- ``sequential``: faster-whisper's ``transcribe`` per clip (what the stage did first);
- ``batched-N``: one encoder call and one batched greedy decode per N clips, each padded to 30 s;
- ``bucketed-N``: as batched, but clips sorted by duration so a batch decodes similar lengths;
- ``window>=Ws-N``: as bucketed, with the mel padded only to the batch's longest clip or W seconds,
  whichever is longer, instead of to 30 s.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import write_results
from bench.data import build
from pipeline.config import build_config
from pipeline.engines.whisper import BatchedWhisper
from pipeline.metrics import corpus_wer
from pipeline.models import resolve_model
from pipeline.stages.decode import decode_clip

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--n", type=int, default=60, help="clips transcribed per variant and repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-sizes", default="4,8,16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--windows", default="0,10,15,20", help="minimum mel windows (s) for the trimmed variants")
    p.add_argument("--skip", default="", help="comma-separated variant names to leave out")
    args = p.parse_args()

    table = pq.read_table(build(args.clips, REPO / "bench" / "data" / f"clips-{args.clips}.parquet")).slice(0, args.n)
    cfg = build_config("local")
    arrays = [decode_clip(b, cfg.audio) for b in table.column("audio_bytes").to_pylist()]
    refs = table.column("sentence").to_pylist()
    audio_s = sum(len(a) for a in arrays) / 16_000
    path = resolve_model(cfg.transcriber.model).path
    engine = BatchedWhisper(path, device="cpu", compute_type="int8", cpu_threads=args.threads, language="en")

    variants = {"sequential": lambda: [engine.transcribe_one(a) for a in arrays]}
    for bs in (int(x) for x in args.batch_sizes.split(",")):
        variants[f"batched-{bs}"] = lambda bs=bs: engine.transcribe(arrays, batch_size=bs, sort=False)
        variants[f"bucketed-{bs}"] = lambda bs=bs: engine.transcribe(arrays, batch_size=bs, sort=True)
        for w in (float(x) for x in args.windows.split(",")):
            variants[f"window>={w:g}s-{bs}"] = lambda bs=bs, w=w: engine.transcribe(
                arrays, batch_size=bs, sort=True, min_window_s=w
            )

    results = {}
    skip = set(args.skip.split(","))
    for name, run in variants.items():
        if name in skip:
            continue
        rates, texts = [], []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            texts = run()
            rates.append(len(arrays) / (time.perf_counter() - t0))
        wer = corpus_wer(list(zip(refs, [t.text for t in texts], strict=True)))
        results[name] = {"clips_per_s": statistics.median(rates), "min": min(rates), "max": max(rates), "wer": wer}
        print(
            f"{name:14s} {statistics.median(rates):6.2f} clips/s  [{min(rates):.2f}-{max(rates):.2f}]"
            f"  {statistics.median(rates) * audio_s / len(arrays):6.1f} audio-s/s  WER {wer:.3f}",
            flush=True,
        )
    out = write_results("transcribe-variants-", {"args": vars(args), "audio_s": audio_s, "variants": results})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
