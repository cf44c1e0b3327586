"""How well the curation gates separate good clips from bad ones, on the labelled set.

Runs the real pipeline (``curate run``, embedded default) on ``bench/labelled_set.py``'s clips and
reports, per label, how many clips were kept, rejected (with the gates' reasons) or quarantined; per
gate, how many bad and good clips it rejected; and a sweep of the WER ceiling over the measured WERs.

Usage: .venv/bin/python -m bench.gates_eval [--per-bad 5] [--set gates.max_wer=0.5 ...]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq

from bench.common import curate, table_rows, write_results
from bench.labelled_set import BAD_LABELS, build


def evaluate(out: Path, labels: dict[str, str]) -> dict:
    got = table_rows(out)
    scores = [r for r in got if r["error"] is None]
    quarantine = [r for r in got if r["error"] is not None]
    per_label: dict[str, Counter] = defaultdict(Counter)
    by_gate: dict[str, Counter] = defaultdict(Counter)
    wers: dict[str, list[float]] = defaultdict(list)
    for r in scores:
        label = labels[r["id"]]
        per_label[label]["kept" if r["kept"] else "rejected"] += 1
        for code in r["reasons"] or []:
            by_gate[code]["good" if label == "good" else "bad"] += 1
            per_label[label][f"reason:{code}"] += 1
        if r["wer"] is not None:
            wers[label].append(r["wer"])
    for r in quarantine:
        per_label[labels[r["id"]]]["quarantined"] += 1
        per_label[labels[r["id"]]][f"quarantine:{r['error'][:40]}"] += 1
    good = per_label["good"]
    n_good = sum(good[k] for k in ("kept", "rejected", "quarantined"))
    n_bad = sum(per_label[b][k] for b in BAD_LABELS for k in ("kept", "rejected", "quarantined"))
    bad_kept = sum(per_label[b]["kept"] for b in BAD_LABELS)
    sweep = {}
    for ceiling in (0.2, 0.3, 0.4, 0.5, 0.6, 0.8):
        sweep[str(ceiling)] = {
            "good_wer_pass": sum(w <= ceiling for w in wers["good"]) / max(len(wers["good"]), 1),
            "mismatch_wer_reject": sum(w > ceiling for w in wers["mismatch"]) / max(len(wers["mismatch"]), 1),
        }
    return {
        "per_label": {k: dict(v) for k, v in sorted(per_label.items())},
        "by_gate": {k: dict(v) for k, v in sorted(by_gate.items())},
        "good_kept": good["kept"] / n_good if n_good else None,
        "bad_not_curated": 1 - bad_kept / n_bad if n_bad else None,
        "bad_kept": bad_kept,
        "wer_sweep": sweep,
        "wer_by_label": {k: sorted(round(w, 3) for w in v) for k, v in wers.items()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-bad", type=int, default=5)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    table = build(args.per_bad)
    labels = dict(zip(table.column("id").to_pylist(), table.column("label").to_pylist(), strict=True))
    with tempfile.TemporaryDirectory(prefix="gates-eval-") as tmp:
        src, out = Path(tmp) / "labelled.parquet", Path(tmp) / "out"
        pq.write_table(table, src)
        cmd = ["--input", str(src), "--output", str(out), "--no-audio"]
        for item in args.overrides:
            cmd += ["--set", item]
        proc, run = curate(cmd)
        if run is None:
            raise SystemExit(proc.stderr[-3000:])
        result = evaluate(out, labels)
        result["run_reasons"] = run.tally.reasons
    result["overrides"] = args.overrides
    print(json.dumps({k: result[k] for k in ("per_label", "by_gate", "good_kept", "bad_not_curated")}, indent=1))
    print("results:", write_results("gates-eval-", result))


if __name__ == "__main__":
    main()
