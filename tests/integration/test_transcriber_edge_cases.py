"""Real faster-whisper on edge-case audio: long clips are chunked, not truncated; noise is not text."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipeline.config import build_config
from pipeline.metrics import normalize_text
from pipeline.models import resolve_model
from pipeline.stages.decode import decode_audio
from pipeline.stages.gate_rules import build_gates
from pipeline.stages.gates import failed_gates
from pipeline.stages.transcribe import FasterWhisperTranscriber
from tests.conftest import encode

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def transcriber():
    cfg = build_config()
    return cfg, FasterWhisperTranscriber(cfg.transcriber, resolve_model(cfg.transcriber.model).path)


def _run(cfg, transcriber, ids, blobs):
    return transcriber(decode_audio(pa.table({"id": ids, "audio_bytes": blobs}), cfg.audio)).to_pylist()


def test_clip_longer_than_30s_is_transcribed_to_the_end(transcriber, sample_table):
    cfg, t = transcriber
    rows = sample_table.to_pylist()
    decoded = decode_audio(
        pa.table({"id": [r["id"] for r in rows[:12]], "audio_bytes": [r["audio_bytes"] for r in rows[:12]]}), cfg.audio
    )
    audio = np.concatenate([np.asarray(a.values) for a in decoded.column("arr")] + [np.zeros(8000, np.float32)])
    assert len(audio) / 16_000 > 40
    (out,) = _run(cfg, t, ["long"], [encode(audio, 16_000)])
    words = normalize_text(out["transcription"])
    assert out["error"] is None
    # The last sentence, which lies beyond the first 30 s window, is in the transcript.
    last = normalize_text(rows[11]["sentence"])
    assert len(set(last) & set(words[-len(last) - 4 :])) >= len(last) // 2, (last, words[-20:])


def test_noise_and_music_do_not_become_curated_text(transcriber):
    cfg, t = transcriber
    rng = np.random.default_rng(0)
    noise = (0.2 * rng.standard_normal(16_000 * 4)).astype(np.float32)
    tt = np.arange(16_000 * 4) / 16_000
    chord = (0.2 * sum(np.sin(2 * np.pi * f * tt) for f in (261.6, 329.6, 392.0))).astype(np.float32)
    out = _run(cfg, t, ["noise", "music"], [encode(noise, 16_000), encode(chord, 16_000)])
    gates = build_gates(cfg)
    for row in out:
        # Whisper's own no-speech rule drops the window: no text, and the gates reject the clip as no speech.
        assert row["error"] is None and row["transcription"] == "", row
        assert "no_speech" in failed_gates({**row, "sentence": "Plants use sunlight."}, gates), row
