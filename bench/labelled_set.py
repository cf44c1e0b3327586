"""A labelled set for choosing and checking the curation gates, built from audio we can make or ship.

Every clip is "recorded for" a Common Voice sentence, as in a real release, and labelled:
- ``good``: the bundled sample's real speech with the sentence it says;
- ``mismatch``: a sample clip with *another* clip's sentence (a wrong recording, or a swapped file);
- ``music``: synthetic hold music (chords with a beat) for a sentence;
- ``noise``: white or pink noise for a sentence;
- ``hiss``: near-silence (a -55 dBFS noise floor) for a sentence;
- ``silence``: digital silence;
- ``too_short``: 0.3 s cut from the start of a sample clip, with its full sentence;
- ``too_long``: several sample clips joined past 30 s, with their joined sentences (correct text).
Only ``good`` clips should reach ``curated/``.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "sample_data" / "common_voice_sample.parquet"
RATE = 48_000
BAD_LABELS = ("mismatch", "music", "noise", "hiss", "silence", "too_short", "too_long")


def _flac(audio: np.ndarray, rate: int = RATE) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1, 1).astype(np.float32), rate, format="FLAC")
    return buf.getvalue()


def hold_music(seconds: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    out = np.zeros_like(t)
    beat = 60 / rng.uniform(80, 130)
    roots = rng.choice([220.0, 246.9, 261.6, 293.7, 329.6], size=int(seconds / (4 * beat)) + 1)
    for i, root in enumerate(roots):  # a chord per bar, with harmonics
        bar = (t >= i * 4 * beat) & (t < (i + 1) * 4 * beat)
        for ratio in (1.0, 1.26, 1.5, 2.0):
            out[bar] += 0.08 * np.sin(2 * np.pi * root * ratio * t[bar]) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t[bar]))
    kick = np.exp(-((t % beat) * 40)) * np.sin(2 * np.pi * 60 * t)  # a kick drum on every beat
    return out + 0.3 * kick


def noise(seconds: float, seed: int, pink: bool, level: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    white = rng.standard_normal(int(seconds * RATE))
    if pink:  # 1/f by filtering the spectrum
        spec = np.fft.rfft(white)
        spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
        white = np.fft.irfft(spec, n=len(white))
    return level * white / (np.abs(white).max() + 1e-9)


def build(per_bad: int = 5) -> pa.Table:
    """The labelled set as Common-Voice-shaped Parquet rows: id, audio_bytes, sentence, label."""
    sample = pq.read_table(SAMPLE).to_pylist()
    decoded = [sf.read(io.BytesIO(r["audio_bytes"]), dtype="float32") for r in sample]
    rows: list[dict] = []

    def add(label: str, i: int, audio_or_bytes, sentence: str) -> None:
        data = audio_or_bytes if isinstance(audio_or_bytes, bytes) else _flac(audio_or_bytes)
        rows.append({"id": f"{label}-{i:03d}", "audio_bytes": data, "sentence": sentence, "label": label})

    for i, r in enumerate(sample):
        add("good", i, r["audio_bytes"], r["sentence"])
    n = len(sample)
    for i in range(per_bad * 2):  # another clip's sentence: half of each pair's neighbours
        add("mismatch", i, sample[i]["audio_bytes"], sample[(i + n // 2) % n]["sentence"])
    for i in range(per_bad):
        sentence = sample[(3 * i) % n]["sentence"]
        add("music", i, hold_music(5.0 + i, seed=i), sentence)
        add("noise", i, noise(4.0 + i % 3, seed=i, pink=i % 2 == 1, level=0.3), sentence)
        add("hiss", i, noise(4.0, seed=100 + i, pink=False, level=10 ** (-55 / 20)), sentence)
        add("too_short", i, decoded[i][0][: int(0.3 * decoded[i][1])], sample[i]["sentence"])
    for i in range(max(1, per_bad // 2)):
        add("silence", i, np.zeros(3 * RATE, np.float32), sample[i]["sentence"])
        idx = [(i * 7 + k) % n for k in range(8)]
        joined = np.concatenate([np.concatenate([decoded[k][0], np.zeros(RATE // 2, np.float32)]) for k in idx])
        while len(joined) / RATE <= 32:
            joined = np.concatenate([joined, joined])
            idx = idx + idx
        add("too_long", i, joined, " ".join(sample[k]["sentence"] for k in idx))
    return pa.Table.from_pylist(rows)
