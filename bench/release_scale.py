"""The table work around the engines at a real release's size: a cumulative full release and a nightly
delta against a clips table of N scored rows, through the real CLI.

    .venv/bin/python -m bench.release_scale [--sizes 200000 1000000 2000000] [--new 1000] [--judge]
    .venv/bin/python -m bench.release_scale --first-night [--sizes 2000000] [--new 20]

For each N, in a fresh output root:

1. **seed**: the clips table holds N scored rows of release N (``cv-corpus-22.0``), written through the
   product's own writer (``commit.write_rows`` and ``commit.upsert``: one snapshot), under the engine key
   and agreement key the run will compute, as if release N had been curated;
2. **full N+1** (``cv-corpus-23.0``, an extracted folder as users unpack it): TSVs that list every clip
   again (validated, train/dev/test, invalidated, other, reported, clip_durations), 30% with new votes,
   0.5% moved to invalidated, 0.1% with a reported sentence, 0.05% no longer listed (deleted at a
   speaker's request), plus ``--new`` clips with real audio from the bundled sample; ``curate run`` on
   it in a fresh process, as a user runs it;
3. **nightly delta** (``cv-corpus-24.0-delta``): ``--new`` newer clips with real audio; ``curate run``;
4. **upserts of ``--new`` existing ids**: two more deltas that list ``--new`` clips of the table again
   with new votes, no engine work: the newest clips (votes still coming in: ids next to each other,
   ``cv-corpus-25.0-delta``), then clips drawn at random (``cv-corpus-26.0-delta``).  Their data files
   rewritten show the table's layout: ids live in files in id order, so neighbours share a file.

Recorded per run: its wall time; the engines' seconds (the run's own ``timings``) and everything else
(wall minus engines: reading the TSVs, the plan, writing updates, the commit, tally, upkeep and the
process's start); the driver's peak RSS (``VmHWM``, polled); the data files the snapshot added and
removed; the table's snapshot count.  The judge is off unless ``--judge`` (its time is the engines').
Results: ``bench/results/release-scale-<utc>.json``.

``--first-night``: instead, per N, an empty table and a full release (an extracted folder) listing N clips
of which ``--new`` have audio (``first_night`` below); results ``bench/results/first-night-<utc>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]
N_RELEASE, FULL, DELTA = "cv-corpus-22.0-2025-06-20", "cv-corpus-23.0-2025-09-05", "cv-corpus-24.0-delta-2025-12-05"
REVOTE_NEWEST, REVOTE_SCATTERED = "cv-corpus-25.0-delta-2026-03-05", "cv-corpus-26.0-delta-2026-06-05"
FIRST_ID = 10_000_000
JUDGE_OFF = ["--set", "judge.locales=[]"]
SENTENCES = [
    "Plants use sunlight to turn water and carbon dioxide into sugar.",
    "The river carried the boat slowly past the old stone bridge.",
    "Please remember to close the window before you leave the house.",
    "Mathematics is the language in which the universe is written.",
    "She bought three apples and a loaf of bread at the market.",
]


def _ids(start: int, n: int) -> pa.Array:
    nums = pc.cast(pa.array(np.arange(start, start + n, dtype=np.int64)), pa.string())
    return pc.binary_join_element_wise("common_voice_en_", nums, ".mp3", "")


def _hex(rng: np.random.Generator, n: int, chars: int, pool: int) -> pa.Array:
    """``n`` hex strings of ``chars`` characters drawn from a pool of ``pool`` (speakers, sentences)."""
    words = np.array([rng.bytes(chars // 2).hex() for _ in range(pool)], dtype=object)
    return pa.array(words[rng.integers(0, pool, n)], pa.string())


@dataclass
class Seeded:
    ids: pa.Array
    client_id: pa.Array
    sentence_id: pa.Array
    sentence: pa.Array
    up_votes: np.ndarray
    split: np.ndarray
    duration_ms: np.ndarray  # clip_durations.tsv's figure; the decoded length agrees with it


def seed_table(output: Path, n: int, overrides: list[str], rng: np.random.Generator, rows_per_file: int = 250_000):
    """N scored rows of release N in ``output``'s clips table, through the product's writer (one snapshot)."""
    from pipeline.config import build_config
    from pipeline.run import locale_setups, resolve_models
    from pipeline.shards import agreement_key, engine_key
    from pipeline.table import commit as commits
    from pipeline.table.catalog import CLIPS_TABLE_PROPERTIES, load_or_create, table_root
    from pipeline.table.schema import AUDIO_TABLE, clips_schema, conform

    cfg = build_config(overrides=overrides)
    (local_cfg, models) = locale_setups(cfg, resolve_models(cfg), ["en"])["en"]
    root = table_root(str(output), cfg)
    catalog = root.catalog()
    clips_id, audio_id = root.identifiers("en")
    schema = clips_schema()
    table = load_or_create(catalog, clips_id, schema, CLIPS_TABLE_PROPERTIES)
    load_or_create(catalog, audio_id, AUDIO_TABLE)
    s = Seeded(
        ids=_ids(FIRST_ID, n),
        client_id=_hex(rng, n, 128, 20_000),
        sentence_id=_hex(rng, n, 64, 50_000),
        sentence=pa.array(np.array(SENTENCES, dtype=object)[rng.integers(0, len(SENTENCES), n)], pa.string()),
        up_votes=rng.integers(2, 6, n),
        split=np.array(["train", "dev", "test", None], dtype=object)[rng.choice(4, n, p=[0.6, 0.05, 0.05, 0.3])],
        duration_ms=rng.integers(2000, 9000, n),
    )
    files = []
    keys = {"engine_key": engine_key(local_cfg, models), "agreement_key": agreement_key(local_cfg)}
    for start in range(0, n, rows_per_file):
        m = min(rows_per_file, n - start)
        sl = slice(start, start + m)
        history = [[{"release": N_RELEASE, "status": "validated", "split": sp}] for sp in s.split[sl]]
        cols = {
            "id": s.ids[sl],
            "locale": pa.array(["en"] * m),
            "client_id": s.client_id[sl],
            "sentence_id": s.sentence_id[sl],
            "sentence": s.sentence[sl],
            "sentence_domain": pa.array([""] * m),
            "up_votes": pa.array(s.up_votes[sl]),
            "down_votes": pa.array(np.zeros(m, np.int64)),
            "age": pa.array(["twenties"] * m),
            "gender": pa.array(["female_feminine"] * m),
            "accents": pa.array(["United States English"] * m),
            "variant": pa.array([""] * m),
            "segment": pa.array([""] * m),
            "duration_ms": pa.array(s.duration_ms[sl]),
            "cv_status": pa.array(["validated"] * m),
            "split": pa.array(s.split[sl], pa.string()),
            "sentence_reported": pa.array(np.zeros(m, bool)),
            "first_release": pa.array([N_RELEASE] * m),
            "last_release": pa.array([N_RELEASE] * m),
            "releases": pa.array(history),
            "duration_s": pa.array(s.duration_ms[sl] / 1000),
            "transcription": s.sentence[sl],
            "wer": pa.array(np.zeros(m)),
            "cer": pa.array(np.zeros(m)),
            "avg_logprob": pa.array(np.full(m, -0.2)),
            "no_speech_prob": pa.array(np.full(m, 0.01)),
            "compression_ratio": pa.array(np.full(m, 1.1)),
            "snr_db": pa.array(rng.uniform(30, 45, m)),
            "speech_ratio": pa.array(rng.uniform(0.6, 0.9, m)),
            "loudness_lufs": pa.array(rng.uniform(-28, -16, m)),
            "kept": pa.array(np.ones(m, bool)),
            "reasons": pa.array([[]] * m, pa.list_(pa.string())),
            "audio_sha256": _hex(rng, m, 64, m),
            "audio_size": pa.array(np.full(m, 48_000)),
            "processed_run": pa.array(["seed"] * m),
            "updated_run": pa.array(["seed"] * m),
            "transcriber": pa.array([f"{models.transcriber.ref}@{models.transcriber.revision}"] * m),
            "judge": pa.array([f"{models.judge.ref}@{models.judge.revision}"] * m),
            "code_version": pa.array(["seed"] * m),
            **{k: pa.array([v] * m) for k, v in keys.items()},
        }
        files += commits.write_rows(table, conform(pa.table(cols), schema))
    commits.upsert(lambda: catalog.load_table(clips_id), files, s.ids, {"curate.run-id": "seed"})
    return s


def _write_tsv(path: Path, table: pa.Table) -> None:
    """Common Voice's TSV: tab-separated, no quoting anywhere (pyarrow quotes its own header: written here)."""
    with open(path, "wb") as f:
        f.write(("\t".join(table.column_names) + "\n").encode())
        pacsv.write_csv(table, f, pacsv.WriteOptions(delimiter="\t", quoting_style="none", include_header=False))


def _lists(n: int, s: Seeded, ids: pa.Array, status: np.ndarray, votes: np.ndarray) -> pa.Table:
    return pa.table(
        {
            "client_id": s.client_id,
            "path": ids,
            "sentence_id": s.sentence_id,
            "sentence": s.sentence,
            "sentence_domain": pa.array([""] * n),
            "up_votes": pa.array(votes),
            "down_votes": pa.array(np.zeros(n, np.int64)),
            "age": pa.array(["twenties"] * n),
            "gender": pa.array(["female_feminine"] * n),
            "accents": pa.array(["United States English"] * n),
            "variant": pa.array([""] * n),
            "locale": pa.array(["en"] * n),
            "segment": pa.array([""] * n),
        }
    )


def _new_clips(folder: Path, first: int, n: int) -> pa.Table:
    """``n`` new clips with real audio (the bundled sample's speech as MP3) in ``folder/clips``."""
    from scripts.make_cv_release import sample_clips

    clips = folder / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    audio = sample_clips(40)
    rows = []
    for k in range(n):
        data, sentence, seconds = audio[k % len(audio)]
        name = f"common_voice_en_{first + k}.mp3"
        (clips / name).write_bytes(data)
        rows.append({"path": name, "sentence": sentence, "ms": round(seconds * 1000)})
    return pa.Table.from_pylist(rows)


def _clip_list(t: pa.Table) -> pa.Table:
    n = t.num_rows
    return pa.table(
        {
            "client_id": pa.array(["f" * 128] * n),
            "path": t.column("path"),
            "sentence_id": pa.array(["e" * 64] * n),
            "sentence": t.column("sentence"),
            "sentence_domain": pa.array([""] * n),
            "up_votes": pa.array(["2"] * n),
            "down_votes": pa.array(["0"] * n),
            "age": pa.array([""] * n),
            "gender": pa.array([""] * n),
            "accents": pa.array([""] * n),
            "variant": pa.array([""] * n),
            "locale": pa.array(["en"] * n),
            "segment": pa.array([""] * n),
        }
    )


@dataclass
class Planted:
    moved: list[str]
    reported: list[str]
    deleted: list[str]
    voted: int
    new: list[str]


def write_full_release(root: Path, s: Seeded, new: int, rng: np.random.Generator) -> tuple[Path, Planted]:
    """Full N+1 as an extracted folder: every seeded clip again, with the changes above, and ``new`` clips."""
    folder = root / FULL / "en"
    folder.mkdir(parents=True)
    n = len(s.ids)
    order = rng.permutation(n)
    moved_i = np.sort(order[: max(1, n // 200)])
    reported_i = np.sort(order[n // 200 : n // 200 + max(1, n // 1000)])
    gone = n // 200 + max(1, n // 1000)
    deleted_i = np.sort(order[gone : gone + max(1, n // 2000)])
    voted = rng.random(n) < 0.3
    votes = s.up_votes + voted.astype(np.int64)
    status = np.full(n, "validated", dtype=object)
    status[moved_i] = "invalidated"
    status[deleted_i] = "deleted"  # listed nowhere: the release withdraws it
    # A reported clip gets a sentence of its own, so only it is flagged (reported.tsv lists the sentence).
    sentence = np.array(s.sentence.to_pylist(), dtype=object)
    for i in reported_i:
        sentence[i] = f"A sentence someone reported, number {i}."
    s2 = Seeded(s.ids, s.client_id, s.sentence_id, pa.array(sentence, pa.string()), votes, s.split, s.duration_ms)
    everything = _lists(n, s2, s.ids, status, votes)
    made = _new_clips(folder, FIRST_ID + n, new)
    fresh = _clip_list(made)
    valid = pa.concat_tables([everything.filter(pa.array(status == "validated")), fresh.cast(everything.schema)])
    _write_tsv(folder / "validated.tsv", valid)
    _write_tsv(folder / "invalidated.tsv", everything.filter(pa.array(status == "invalidated")))
    for split in ("train", "dev", "test"):
        _write_tsv(folder / f"{split}.tsv", everything.filter(pa.array((s.split == split) & (status == "validated"))))
    _write_tsv(folder / "other.tsv", everything.slice(0, 0))
    _write_tsv(
        folder / "reported.tsv",
        pa.table({"sentence_id": pa.array([""] * len(reported_i)), "sentence": pa.array(sentence[reported_i]),
                  "locale": pa.array(["en"] * len(reported_i)), "reason": pa.array(["offensive"] * len(reported_i))}),
    )  # fmt: skip
    listed = s.ids.filter(pa.array(status != "deleted"))
    # Each clip's figure as release N listed it (and the new clips' own lengths): a release lists the
    # length of the file it ships, and the truncated gate compares the two.
    listed_ms = s.duration_ms[status != "deleted"]
    durations = pa.table(
        {"clip": pa.concat_arrays([listed, fresh.column("path").combine_chunks()]),
         "duration[ms]": pa.concat_arrays([pa.array(listed_ms), made.column("ms").combine_chunks()])}
    )  # fmt: skip
    _write_tsv(folder / "clip_durations.tsv", durations)
    planted = Planted(
        moved=s.ids.take(pa.array(moved_i)).to_pylist(),
        reported=s.ids.take(pa.array(reported_i)).to_pylist(),
        deleted=s.ids.take(pa.array(deleted_i)).to_pylist(),
        voted=int((voted & (status != "deleted")).sum()),  # a deleted clip's new votes are never seen
        new=fresh.column("path").to_pylist(),
    )
    return folder, planted


def write_delta(root: Path, first: int, new: int) -> Path:
    folder = root / DELTA / "en"
    folder.mkdir(parents=True)
    fresh = _clip_list(_new_clips(folder, first, new))
    _write_tsv(folder / "validated.tsv", fresh)
    for name in ("invalidated", "other", "reported"):
        _write_tsv(folder / f"{name}.tsv", fresh.slice(0, 0))
    return folder


def write_revote(root: Path, release: str, s: Seeded, picked: np.ndarray, bump: int) -> Path:
    """A delta listing the seeded clips ``picked`` again, their up votes raised by ``bump``."""
    folder = root / release / "en"
    folder.mkdir(parents=True)
    n = len(picked)
    take = pa.array(picked)
    sub = Seeded(s.ids.take(take), s.client_id.take(take), s.sentence_id.take(take), s.sentence.take(take),
                 s.up_votes[picked] + bump, s.split[picked], s.duration_ms[picked])  # fmt: skip
    _write_tsv(folder / "validated.tsv", _lists(n, sub, sub.ids, np.full(n, "validated"), sub.up_votes))
    for name in ("invalidated", "other", "reported"):
        _write_tsv(folder / f"{name}.tsv", _clip_list(pa.table({"path": pa.array([], pa.string()),
                                                                "sentence": pa.array([], pa.string())})))  # fmt: skip
    return folder


def _hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_curate(args: list[str], log: Path) -> tuple[float, int, str]:
    """``curate ARGS`` in a fresh process: its wall time, peak RSS (polled ``VmHWM``) and output."""
    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *args], cwd=REPO, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
        peak = 0
        while proc.poll() is None:
            peak = max(peak, _hwm(proc.pid))
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    text = log.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"curate {args[0]} failed ({proc.returncode}): {text[-3000:]}")
    return wall, peak, text


def run_cli(args: list[str], log: Path) -> dict:
    """``curate run ARGS`` in a fresh process; its RunResult, wall time and peak RSS (the driver's)."""
    from pipeline.cli import RESULT_MARK

    wall, peak, text = run_curate(["run", *args, "--emit-result"], log)
    line = next(ln for ln in reversed(text.splitlines()) if ln.startswith(RESULT_MARK))
    return {"wall_s": wall, "peak_rss_bytes": peak, "result": json.loads(line[len(RESULT_MARK) + 1 :])}


def snapshot_facts(output: Path, overrides: list[str]) -> dict:
    from pipeline.config import build_config
    from pipeline.table.catalog import table_root

    root = table_root(str(output), build_config(overrides=overrides))
    clips = root.catalog().load_table(root.identifiers("en")[0])
    snaps = [
        s for s in clips.snapshots() if (s.summary.additional_properties or {}).get("curate.operation") != "compaction"
    ]
    last = snaps[-1].summary.additional_properties
    return {
        "snapshots": len(clips.snapshots()),
        "added_data_files": int(last.get("added-data-files", 0)),
        "deleted_data_files": int(last.get("deleted-data-files", 0)),
        "total_data_files": int(last.get("total-data-files", 0)),
    }


def _record(run: dict, output: Path, overrides: list[str]) -> dict:
    (loc,) = run["result"]["locales"]
    engines = loc["timings"].get("engines", 0.0)
    return {
        "wall_s": round(run["wall_s"], 1),
        "engines_s": round(engines, 1),
        "non_engine_s": round(run["wall_s"] - engines, 1),
        "timings": loc["timings"],
        "peak_rss_mib": round(run["peak_rss_bytes"] / 2**20),
        "changes": loc["changes"],
        "table_rows": loc["table_rows"],
        **snapshot_facts(output, overrides),
    }


def bench_size(n: int, new: int, judge: bool, keep: Path | None = None) -> dict:
    overrides = [] if judge else ["judge.locales=[]"]
    sets = [a for o in overrides for a in ("--set", o)]
    rng = np.random.default_rng(n)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"release-scale-{n}-", dir=keep))
    try:
        out, src = work / "out", work / "downloads"
        t0 = time.perf_counter()
        seeded = seed_table(out, n, overrides, rng)
        seed_s = time.perf_counter() - t0
        full, planted = write_full_release(src, seeded, new, rng)
        full_run = _record(
            run_cli(["--input", str(full), "--output", str(out), *sets], work / "full.log"), out, overrides
        )
        delta = write_delta(src, FIRST_ID + n + new, new)
        delta_run = _record(
            run_cli(["--input", str(delta), "--output", str(out), *sets], work / "delta.log"), out, overrides
        )
        upserts = {}
        k = min(new, n)
        picks = {
            "newest": (REVOTE_NEWEST, np.arange(n - k, n)),
            "scattered": (REVOTE_SCATTERED, np.sort(rng.choice(n, k, replace=False))),
        }
        for bump, (name, (release, picked)) in enumerate(picks.items(), start=2):
            folder = write_revote(src, release, seeded, picked, bump)
            run = run_cli(["--input", str(folder), "--output", str(out), *sets], work / f"{name}.log")
            upserts[name] = _record(run, out, overrides)
        return {
            "rows": n,
            "seed_s": round(seed_s, 1),
            "planted": {"moved": len(planted.moved), "reported": len(planted.reported),
                        "deleted": len(planted.deleted), "voted": planted.voted, "new": len(planted.new)},
            "full": full_run,
            "delta": delta_run,
            "upserts": upserts,
        }  # fmt: skip
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def first_night(n: int, new: int, judge: bool) -> dict:
    """A first night: an empty table and a full release listing ``n`` clips, as an extracted folder that
    holds only ``new`` of them (a partial extraction, or a list ahead of its clips): every listed row is
    planned for the engines, the absent ones stored quarantined without them.  What is measured is the
    work around the engines on every row of a release: the view, the plan, the history each row carries
    as JSON, the absent rows' writes, the ids checked to come out once, and the commit."""
    overrides = [] if judge else ["judge.locales=[]"]
    sets = [a for o in overrides for a in ("--set", o)]
    rng = np.random.default_rng(n)
    work = Path(tempfile.mkdtemp(prefix=f"first-night-{n}-"))
    try:
        folder = work / "downloads" / FULL / "en"
        folder.mkdir(parents=True)
        sentence = np.array(SENTENCES, dtype=object)[rng.integers(0, len(SENTENCES), n)]
        s = Seeded(ids=_ids(FIRST_ID, n), client_id=_hex(rng, n, 128, 20_000), sentence_id=_hex(rng, n, 64, 50_000),
                   sentence=pa.array(sentence, pa.string()), up_votes=rng.integers(2, 6, n),
                   split=np.full(n, None, dtype=object), duration_ms=np.zeros(n))  # fmt: skip
        listed = _lists(n, s, s.ids, np.full(n, "validated", dtype=object), s.up_votes)
        made = _new_clips(folder, FIRST_ID + n, new)
        _write_tsv(folder / "validated.tsv", pa.concat_tables([listed, _clip_list(made).cast(listed.schema)]))
        for name in ("invalidated", "other", "reported"):
            _write_tsv(folder / f"{name}.tsv", listed.slice(0, 0))
        _write_tsv(
            folder / "clip_durations.tsv", pa.table({"clip": made.column("path"), "duration[ms]": made.column("ms")})
        )
        out = work / "out"
        run = _record(
            run_cli(["--input", str(folder), "--output", str(out), *sets], work / "first.log"), out, overrides
        )
        return {"rows": n + new, "with_audio": new, "first_night": run}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000, 2_000_000])
    ap.add_argument("--new", type=int, default=1000, help="new clips with audio in the full release and the delta")
    ap.add_argument("--judge", action="store_true", help="run the judge too (its time is the engines')")
    ap.add_argument("--keep", type=Path, help="keep each size's folders under this directory")
    ap.add_argument("--first-night", action="store_true",
                    help="instead: an empty table and a release listing N clips, --new of them with audio")  # fmt: skip
    args = ap.parse_args()
    from bench.common import write_results
    from pipeline.runtime.hardware import cpu_flags, describe

    out = {"created": datetime.now(UTC).isoformat(), "hardware": describe(cpu_flags(), {}), "new": args.new,
           "judge": args.judge, "sizes": []}  # fmt: skip
    path = None
    for n in args.sizes:
        print(f"release scale: N = {n:,}", flush=True)
        if args.first_night:
            r = first_night(n, args.new, args.judge)
            print(json.dumps(r, indent=1), flush=True)
        else:
            r = bench_size(n, args.new, args.judge, args.keep)
            print(json.dumps({k: r[k] for k in ("rows", "full", "delta", "upserts")}, indent=1), flush=True)
        out["sizes"].append(r)
        path = write_results("first-night-" if args.first_night else "release-scale-", out, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
