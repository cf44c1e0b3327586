"""Throughput at scale: the embedded default (``curate run``, as a user runs it) at several sizes, and
the seed's way at the smaller ones, each arm in a fresh process.

Per arm: wall time, clips/s, audio-seconds per second, WER of the rows out, peak RSS of the driver
and of all its descendants (Ray's workers, vLLM's engine), and what Ray spilled to disk.  Between
sizes: the marginal rate ((n2 - n1) / (t2 - t1)), which leaves start-up out.  Each arm's result is
written as soon as it finishes; a failing arm is recorded with its cause and the harness goes on.

Usage: .venv/bin/python -m bench.scale [--sizes 200 1000 3000] [--seed-sizes 200 1000]
                                      [--variant NAME=SECTION.FIELD=VALUE[,…] ...]

Each ``--variant`` is one more arm of ``curate run`` with those ``--set`` overrides (an empty list is
the defaults), e.g. the acoustic-quality cost: ``--variant no-quality=quality.enabled=false
--variant default= --variant dnsmos=quality.dnsmos=true``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from bench.common import RESULTS, table_rows
from bench.data import build
from pipeline.metrics import corpus_wer

REPO = Path(__file__).resolve().parents[1]
SEED_RUNNER = """
import json, sys, ray
from bench.seed_way import seed_dataset
from pipeline.models import resolve_model
src, out = sys.argv[1], sys.argv[2]
ray.init(address="local", num_cpus=16, include_dashboard=False, _node_ip_address="127.0.0.1")
ds = seed_dataset([src], resolve_model("bundled:whisper-tiny.en-hf").path,
                  resolve_model("bundled:qwen2.5-coder-0.5b-instruct").path, kv_cache_memory_bytes=1 << 30)
rows = ds.take_all()
json.dump([{"id": r["id"], "transcription": r["transcription"]} for r in rows], open(out, "w"))
"""


class PeakRSS:
    """Samples the RSS of a process and of all its descendants every half second."""

    def __init__(self, pid: int):
        self.pid, self.driver, self.total = pid, 0, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                root = psutil.Process(self.pid)
                family = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            rss = 0
            for p in family:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            with contextlib.suppress(psutil.Error):
                self.driver = max(self.driver, root.memory_info().rss)
            self.total = max(self.total, rss)


def timed_process(cmd: list[str], log: Path) -> dict:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=f, stderr=subprocess.STDOUT)
        with PeakRSS(proc.pid) as rss:
            code = proc.wait()
    return {
        "exit": code,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_driver_mib": rss.driver / 2**20,
        "peak_rss_all_mib": rss.total / 2**20,
    }


def spilled_mib(text: str) -> float:
    """Ray's "Spilled N MiB" lines, summed (0 when nothing spilled)."""
    return sum(float(m) for m in re.findall(r"Spilled ([\d.]+) MiB", text))


def run_ours(src: Path, work: Path, refs: dict[str, str], overrides: tuple[str, ...] = ()) -> dict:
    out = work / "ours"
    sets = [arg for o in overrides for arg in ("--set", o)]
    r = timed_process([sys.executable, "-m", "pipeline.cli", "run", "--input", str(src), "--output", str(out),
                       "--no-audio", *sets], work / "ours.console")  # fmt: skip
    if r["exit"] != 0:
        raise RuntimeError((work / "ours.console").read_text()[-2000:])
    rows = table_rows(out)
    scores = [r for r in rows if r["error"] is None]
    counts = {"in": len(rows), "kept": sum(bool(r["kept"]) for r in rows), "quarantined": len(rows) - len(scores)}
    counts["rejected"] = counts["in"] - counts["kept"] - counts["quarantined"]
    logs = "".join(p.read_text(errors="replace") for p in (out / "_logs").glob("*.log"))
    return {
        **r,
        "rows_in": counts["in"],
        "counts": counts,
        "audio_s": sum(r["duration_s"] or 0 for r in scores),
        "wer": corpus_wer([(refs[s["id"]], s["transcription"]) for s in scores]),
        "spilled_mib": spilled_mib(logs),
    }


def run_seed(src: Path, work: Path, refs: dict[str, str]) -> dict:
    rows_file = work / "seed-rows.json"
    r = timed_process([sys.executable, "-c", SEED_RUNNER, str(src), str(rows_file)], work / "seed.console")
    if r["exit"] != 0:
        raise RuntimeError((work / "seed.console").read_text()[-2000:])
    rows = json.loads(rows_file.read_text())
    console = (work / "seed.console").read_text(errors="replace")
    return {**r, "rows_out": len(rows), "wer": corpus_wer([(refs[x["id"]], x["transcription"]) for x in rows]),
            "spilled_mib": spilled_mib(console)}  # fmt: skip


def marginal(results: dict, arm: str) -> list[dict]:
    done = sorted((int(n), r) for n, r in results[arm].items() if "wall_s" in r)
    return [
        {"from": n1, "to": n2, "clips_per_s": (n2 - n1) / (r2["wall_s"] - r1["wall_s"])}
        for (n1, r1), (n2, r2) in itertools.pairwise(done)
        if r2["wall_s"] > r1["wall_s"]
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 3000])
    p.add_argument("--seed-sizes", type=int, nargs="*", default=[200, 1000])
    p.add_argument("--variant", action="append", default=[], metavar="NAME=OVERRIDES",
                   help="an arm of curate run with comma-separated --set overrides (repeatable)")  # fmt: skip
    args = p.parse_args()
    out = RESULTS / f"scale-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    variants = {"ours": ()}
    if args.variant:
        variants = {}
        for spec in args.variant:
            name, _, sets = spec.partition("=")
            variants[f"ours[{name}]"] = tuple(x for x in sets.split(",") if x)
    results: dict = {"args": vars(args), "variants": variants, "seed": {}, **{v: {} for v in variants}}

    out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["marginal"] = {arm: marginal(results, arm) for arm in (*variants, "seed")}
        out.write_text(json.dumps(results, indent=2))

    for n in sorted(set(args.sizes) | set(args.seed_sizes)):
        src = build(n, REPO / "bench" / "data" / f"clips-{n}.parquet")
        table = pq.read_table(src, columns=["id", "sentence", "source_duration_s"])
        refs = dict(zip(table.column("id").to_pylist(), table.column("sentence").to_pylist(), strict=True))
        audio_s = sum(table.column("source_duration_s").to_pylist())
        arms = (
            [(v, functools.partial(run_ours, overrides=sets)) for v, sets in variants.items()]
            if n in args.sizes
            else []
        )
        arms += [("seed", run_seed)] if n in args.seed_sizes else []
        for arm, run in arms:
            print(f"[scale] {arm} at {n} clips ...", flush=True)
            with tempfile.TemporaryDirectory(prefix=f"scale-{n}-") as tmp:
                try:
                    r = run(src, Path(tmp), refs)
                    r.update(clips=n, clips_per_s=n / r["wall_s"], audio_s_per_s=audio_s / r["wall_s"])
                except Exception as exc:  # record the cause and go on with the other arms
                    r = {"clips": n, "failed": f"{type(exc).__name__}: {exc}"[-3000:]}
            results[arm][str(n)] = r
            save()
            print(
                f"[scale] {arm} at {n}: {json.dumps({k: v for k, v in r.items() if k != 'counts'})[:400]}", flush=True
            )
    print(f"results: {out}")


if __name__ == "__main__":
    main()
