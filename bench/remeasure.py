"""A whole table's WER/CER measured again, as the plan does when what agreement depends on changed.

When the agreement key changes (``gates.fold_diacritics`` set, the transcriber's language, or a release of
the normaliser's rules), the next run's plan measures every scored row again from its stored transcript
(``stages.gates.decide_table``), in the driver, a workspace batch (65,536 rows) at a time.  Whisper's
normaliser is Python, so this is the one per-row computation left between the engines.

This seeds N table rows in that shape: English sentences of 6-14 words drawn from the bundled sample's
vocabulary, each read by ``--reads`` speakers (Common Voice records a sentence more than once; its other
readings mostly fall in other batches), transcripts as a small Whisper writes them (half the sentence as
written, a quarter lower case without punctuation, a quarter with a word missed), all under an older
agreement key.  It times ``decide_table`` over them a batch at a time (seeding is not timed), and reports
rows/s and the peak RSS of this process and of its worker processes.

Usage: python -m bench remeasure [--rows 2000000] [--reads 2] [--language en]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import time
from datetime import UTC, datetime

import numpy as np
import pyarrow as pa

BATCH_ROWS = 65_536  # the plan's workspace batch (table.workspace.BATCH_ROWS)


def vocabulary() -> list[str]:
    import pyarrow.parquet as pq

    from scripts.make_cv_release import SAMPLE

    sentences = pq.read_table(SAMPLE, columns=["sentence"]).column("sentence").to_pylist()
    return sorted({w for s in sentences for w in re.findall(r"[A-Za-z']+", s)})


def sentence_of(i: int, words: np.ndarray) -> str:
    """Sentence ``i`` of the release's pool, the same every time it is drawn (6-14 words)."""
    r = np.random.default_rng(i)
    return " ".join(words[r.integers(0, len(words), r.integers(6, 15))]).capitalize() + "."


def seed(rows: int, pool: int, language: str, rng: np.random.Generator, words: np.ndarray) -> pa.Table:
    """``rows`` scored table rows under an old agreement key, their sentences drawn from a pool of ``pool``
    (the whole table's: a sentence's other readings are mostly in other batches, as in a real table)."""
    sentence, transcript = [], []
    for i, k in zip(rng.integers(0, pool, rows).tolist(), rng.random(rows).tolist(), strict=True):
        s = sentence_of(i, words)
        sentence.append(s)
        if k < 0.5:
            transcript.append(s)  # read right, written as the sentence is
        elif k < 0.75:
            transcript.append(s.lower().rstrip("."))
        else:
            w = s.split()
            del w[len(w) // 2]
            transcript.append(" ".join(w))
    n = rows
    return pa.table(
        {
            "id": pa.array([f"common_voice_{language}_{i}.mp3" for i in range(n)]),
            "locale": pa.array([language] * n),
            "sentence": pa.array(sentence),
            "transcription": pa.array(transcript),
            "engine_key": pa.array(["old-engines"] * n),
            "agreement_key": pa.array(["old-rules"] * n),
            "error": pa.nulls(n, pa.string()),
            "stage": pa.nulls(n, pa.string()),
            "wer": pa.nulls(n, pa.float64()),
            "cer": pa.nulls(n, pa.float64()),
            "duration_s": pa.array(np.full(n, 5.0)),
            "cv_status": pa.array(["validated"] * n),
            "score": pa.array(np.full(n, 4), pa.int32()),
        }
    )


def peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--reads", type=float, default=2.0, help="speakers per sentence, on average")
    ap.add_argument("--language", default="en")
    ap.add_argument("--serial", action="store_true", help="measure in this process only (no worker processes)")
    args = ap.parse_args()

    from bench.common import write_results
    from pipeline.config import build_config
    from pipeline.runtime.cores import shutdown
    from pipeline.runtime.hardware import REPORTED_FLAGS, cpu_flags
    from pipeline.shards import agreement_key
    from pipeline.stages import gates as gates_module
    from pipeline.stages.gate_rules import build_gates, metadata_gates
    from pipeline.stages.gates import decide_table

    if args.serial:
        gates_module.PARALLEL_MIN = 1 << 62
    cfg = build_config(overrides=[f"transcriber.language={args.language}"])
    key = agreement_key(cfg)
    gates, unscored = build_gates(cfg), metadata_gates(cfg)
    rng = np.random.default_rng(0)
    pool = max(1, round(args.rows / args.reads))
    words = np.array(vocabulary(), dtype=object)
    # A batch at a time, as the plan hands them out: this process holds one batch, not the table.
    wall = seeded_s = 0.0
    kept = measured = 0
    for start in range(0, args.rows, BATCH_ROWS):
        t0 = time.perf_counter()
        batch = seed(min(BATCH_ROWS, args.rows - start), pool, args.language, rng, words)
        t1 = time.perf_counter()
        out = decide_table(batch, gates, unscored, args.language, cfg.gates.fold_diacritics, key)
        wall += time.perf_counter() - t1
        seeded_s += t1 - t0
        measured += out.num_rows - out.column("wer").null_count
        kept += out.column("kept").to_pylist().count(True)
    shutdown()  # the pool's workers, reaped, so their peak RSS is counted below
    result = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu_flags": sorted(f for f in REPORTED_FLAGS if f in cpu_flags()),
        "cores": len(os.sched_getaffinity(0)),
        "rows": args.rows,
        "reads": args.reads,
        "language": args.language,
        "workers": "none (--serial)" if args.serial else "runtime.cores pool",
        "seeded_s": round(seeded_s, 1),
        "remeasure_s": round(wall, 1),
        "rows_per_s": round(args.rows / wall),
        "measured": measured,
        "kept": kept,
        "peak_rss_mib": round(peak_mib(resource.RUSAGE_SELF)),
        "peak_rss_workers_mib": round(peak_mib(resource.RUSAGE_CHILDREN)),
    }
    print(result)
    print(write_results("remeasure-", result))


if __name__ == "__main__":
    main()
