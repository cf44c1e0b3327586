"""Benchmark clips: real espeak-ng speech at Common Voice-like durations (2-10 s, mean ~5 s)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from scripts.make_sample import CHITCHAT, EDUCATIONAL, VOICES, speak, to_flac_48k

REPO = Path(__file__).resolve().parents[1]


def utterances(n: int) -> list[tuple[str, str]]:
    """Short fragments, single sentences and sentence pairs, so durations span 2-10 s."""
    pool = [(s, "educational") for s in EDUCATIONAL] + [(s, "chitchat") for s in CHITCHAT]
    out = []
    for i in range(n):
        text, label = pool[i % len(pool)]
        kind = i % 5
        if kind == 0:
            text = " ".join(text.split()[:4]).rstrip(",.?!") + "."
        elif kind == 4:
            text = f"{text} {pool[(i * 7 + 3) % len(pool)][0]}"
        out.append((text, label))
    return out


def build(n: int, path: Path) -> Path:
    if path.exists() and pq.read_metadata(path).num_rows == n:
        return path
    rows = []
    for i, (text, label) in enumerate(utterances(n)):
        voice, wpm, gap = VOICES[i % len(VOICES)]
        audio, rate = speak(text, voice, wpm, gap)
        rows.append(
            {
                "id": hashlib.sha1(f"{i}|{text}|{voice}".encode()).hexdigest()[:16],
                "audio_bytes": to_flac_48k(audio, rate),
                "sentence": text,
                "label": label,
                "duration_s": round(len(audio) / rate, 3),
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    # No duration_s in the input (the pipeline adds its own); keep it as a sidecar column name.
    table = pa.Table.from_pylist(rows).rename_columns(["id", "audio_bytes", "sentence", "label", "source_duration_s"])
    pq.write_table(table, path)
    return path
