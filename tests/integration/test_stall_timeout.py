"""A stage that can never start ends the run after stall_timeout_s, naming it, instead of waiting forever.

Its own module, apart from test_engine_failures: no judge engine starts here, so it holds no judge slot
(tests/conftest.py) while it waits out its timeout."""

from __future__ import annotations

import pytest

from tests.integration.test_engine_failures import _run

pytestmark = pytest.mark.slow


def test_a_judge_that_can_never_be_placed_fails_after_the_stall_timeout(tmp_path):
    # A GPU judge on a CPU-only machine: its actor waits for a GPU forever, unless the run is bounded.
    # 120 s: on a 2-core AVX2-only EPYC beside two other test workers, Whisper had not moved a row by 40 s.
    # Bounded by the process timeout; no upper bound on the clock: before the 120 s start, a busy 2-core
    # host took up to 400 s to start a run's engines (CI, 2026-12-07).
    proc, took = _run(tmp_path, "judge.num_gpus_per_actor=1", "stall_timeout_s=120", timeout=1200)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no stage moved a row for stall_timeout_s; the judge stage never got going" in proc.stderr
    assert took >= 120  # the timer did not fire early
