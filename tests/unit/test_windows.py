"""The encoder window sized to the clips (``transcriber.window: auto``): it never cuts speech."""

from __future__ import annotations

import random

import pytest

from pipeline.config import build_config
from pipeline.engines.windows import FRAMES_PER_S, FULL_WINDOW_S, WINDOW_STEP_S, buckets, window_s


@pytest.mark.parametrize("margin,floor", [(1.0, 10.0), (0.0, 0.0), (2.5, 5.0), (1.0, 30.0)])
def test_every_bucket_holds_its_longest_clip_plus_the_margin(margin, floor):
    rng = random.Random(7)
    for _ in range(200):
        durations = [rng.uniform(0.05, 30.0) for _ in range(rng.randint(1, 64))]
        got = buckets(durations, margin, floor)
        rows = sorted(i for b, _ in got for i in b)
        assert rows == list(range(len(durations)))  # every row once
        for b, n_frames in got:
            seconds = n_frames / FRAMES_PER_S
            longest = max(durations[i] for i in b)
            assert seconds >= min(FULL_WINDOW_S, longest + margin)  # never cuts speech, margin kept
            assert seconds >= min(FULL_WINDOW_S, floor) and seconds <= FULL_WINDOW_S
            assert seconds % WINDOW_STEP_S == 0  # few shapes for a compiled encoder
            assert seconds - WINDOW_STEP_S < max(longest + margin, floor, WINDOW_STEP_S)  # the smallest that fits
        assert [w for _, w in got] == sorted({w for _, w in got})  # one bucket per window, shortest first


def test_windows_at_the_edges():
    assert window_s(4.0, 1.0, 0.0) == 5.0  # exactly on the grid
    assert window_s(4.01, 1.0, 0.0) == 10.0
    assert window_s(2.0, 1.0, 10.0) == 10.0  # the floor
    assert window_s(29.5, 1.0, 10.0) == 30.0  # never past Whisper's window
    assert window_s(0.0, 0.0, 0.0) == WINDOW_STEP_S


def test_the_window_enters_the_engine_key_only_when_it_changes_the_output():
    """Tables scored before the setting existed keep their key (nothing is scored again); ``auto`` is
    another output, so its rows are another key's."""
    full = build_config().content_settings()["transcriber"]
    assert "window" not in full
    auto = build_config(overrides=["transcriber.window=auto"]).content_settings()["transcriber"]
    assert auto["window"] == "auto" and auto["window_margin_s"] == 1.0
    with pytest.raises(ValueError):
        build_config(overrides=["transcriber.window=20"])
