"""Whisper's encoder window sized to the clips: pure logic, no torch.

Whisper pads every clip to a 30 s window, and Common Voice clips last 2-10 s, so most of the encoder's
work is padding.  With ``transcriber.window: auto`` the transformers backend sorts a batch's clips by
duration, cuts it into buckets, and encodes each bucket over the smallest window on a fixed grid that
holds its longest clip plus a margin (never under a floor): few distinct shapes, so a compiled encoder
compiles a handful of graphs, and a window never cuts speech.
"""

from __future__ import annotations

import math

FULL_WINDOW_S = 30.0
# Windows come in steps of this many seconds: few shapes for a compiled encoder, little padding left.
WINDOW_STEP_S = 5.0
# Mel frames per second of audio (Whisper's 10 ms hop); the encoder halves them.
FRAMES_PER_S = 100


def window_s(longest_s: float, margin_s: float, floor_s: float) -> float:
    """The smallest window on the grid that holds ``longest_s`` plus ``margin_s``, at least ``floor_s``,
    at most Whisper's 30 s (longer clips never reach this backend)."""
    need = max(longest_s + margin_s, floor_s, WINDOW_STEP_S)
    return min(FULL_WINDOW_S, math.ceil(need / WINDOW_STEP_S - 1e-9) * WINDOW_STEP_S)


def frames(seconds: float) -> int:
    return round(seconds * FRAMES_PER_S)


def buckets(durations: list[float], margin_s: float, floor_s: float) -> list[tuple[list[int], int]]:
    """Rows of a batch grouped by the window they need, shortest first: ``[(row indices, mel frames)]``.
    Every row lands in exactly one bucket; a bucket's window holds each of its clips plus the margin."""
    by_window: dict[float, list[int]] = {}
    for i in sorted(range(len(durations)), key=lambda i: durations[i]):
        by_window.setdefault(window_s(durations[i], margin_s, floor_s), []).append(i)
    return [(rows, frames(w)) for w, rows in sorted(by_window.items())]
