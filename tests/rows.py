"""Comparing a run's output rows with a clean run's."""

from __future__ import annotations

import pytest

# Columns that must match a clean run's row for row.  Floats from the judge and Whisper compare
# approximately: batches form differently after a failure, and batched float maths is not
# bit-stable across batch shapes.
EXACT = ("transcription", "kept", "reasons", "error", "score", "sentence", "duration_ms")
APPROX = ("score_expected", "wer", "cer", "avg_logprob", "no_speech_prob", "compression_ratio")


def same_rows(got: dict[str, dict], want: dict[str, dict]) -> None:
    assert sorted(got) == sorted(want)
    for rid, row in want.items():
        for col in EXACT:
            if col in row:
                assert got[rid][col] == row[col], (rid, col, got[rid][col], row[col])
        for col in APPROX:
            if row.get(col) is not None:
                assert got[rid][col] == pytest.approx(row[col], rel=1e-2, abs=1e-2), (rid, col, got[rid][col], row[col])
