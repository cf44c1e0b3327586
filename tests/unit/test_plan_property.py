"""The columnar plan against the plan as first written (a loop over Python rows), on random histories.

Each case draws a table (scored, unscored, quarantined rows under this or older engines, with histories
over several releases), an incoming view (status, lists, splits, votes, duplicates, held rows, older
releases applied late) and the run's full releases, then compares every engine row, every update, the
counts and what was kept before.
"""

from __future__ import annotations

import functools
import json
import random

import pytest

from pipeline.commonvoice.releases import release_key
from pipeline.config import build_config
from pipeline.stages.gate_rules import build_gates
from pipeline.stages.gates import decide_table, failed_gates, measure_agreement
from pipeline.table.plan import Rules, SplitSelection, plan_table, plan_work
from pipeline.table.plan_rows import as_rows, load_rows, row_decider
from pipeline.table.workspace import Workspace
from tests import plan_reference

RELEASES = ["cv-corpus-21.0-2025-03-14", "cv-corpus-22.0-2025-06-20", "cv-corpus-23.0-delta-2025-09-05",
            "cv-corpus-23.0-2025-09-05", "cv-corpus-24.0-2025-12-05"]  # fmt: skip
FULL = [r for r in RELEASES if "-delta-" not in r]
GATES = build_gates(build_config(), "validated")
CV_GATES = GATES[:2]
COMPARED = ("client_id", "sentence", "up_votes", "down_votes", "cv_status", "split", "sentence_reported",
            "duration_ms", "last_release", "first_release", "releases")  # fmt: skip
STORED = (*COMPARED, "kept", "reasons", "error", "stage", "engine_key", "transcription")


def _entry(rng: random.Random, release: str) -> dict:
    return {
        "release": release,
        "status": rng.choice(["validated", "validated", "other", "invalidated"]),
        "split": rng.choice([None, "train", "dev", "test"]),
    }


def _history(rng: random.Random) -> list[dict]:
    picked = sorted(rng.sample(range(len(RELEASES)), rng.randint(1, 3)))
    return [_entry(rng, RELEASES[i]) for i in picked]


def _existing(rng: random.Random, rid: str) -> dict:
    history = _history(rng)
    last = history[-1]
    row = {
        "id": rid,
        "client_id": f"c{rng.randint(0, 3)}",
        "sentence": rng.choice(["a sentence", "another one"]),
        "up_votes": rng.randint(0, 4),
        "down_votes": rng.randint(0, 2),
        "duration_ms": rng.choice([None, 3000, 4200]),
        "cv_status": last["status"],
        "split": last["split"],
        "sentence_reported": rng.random() < 0.1,
        "first_release": history[0]["release"],
        "last_release": last["release"],
        "releases": history,
        "engine_key": rng.choice(["k1", "k1", "k1", "old", None]),
        "transcription": "a sentence",
        "score": rng.choice([1, 3, 4, 5]),
        "score_expected": rng.choice([1.5, 3.5, 4.2]),
        "wer": rng.choice([0.0, 0.2, 0.9]),
        "cer": 0.1,
        "avg_logprob": -0.3,
        "no_speech_prob": 0.05,
        "compression_ratio": 1.2,
        "duration_s": rng.choice([0.3, 3.0, 5.0]),
        "error": None,
        "stage": None,
    }
    if rng.random() < 0.1:
        row["error"], row["stage"] = "clip missing from release", rng.choice(["read", "decode"])
    # What the table says now: usually decided as today's gates would, sometimes stale.
    if rng.random() < 0.7 and row["error"] is None and row["engine_key"] is not None:
        row["reasons"] = failed_gates(row, GATES)
        row["kept"] = not row["reasons"]
    else:
        row["kept"], row["reasons"] = rng.random() < 0.5, rng.choice([[], ["judge_below"], ["cv_invalidated"]])
    return row


def _incoming(rng: random.Random, rid: str, old: dict | None) -> dict:
    history = _history(rng)
    last = history[-1]
    lists = [last["status"], *([last["split"]] if last["split"] else [])]
    if rng.random() < 0.2 and old:  # the same releases again, with new votes
        history, last = old["releases"], old["releases"][-1]
        lists = [last["status"] or "validated"]
    elif rng.random() < 0.2 and old:  # the last release applied again (new gates), its word on the clip changed
        last = {**_entry(rng, old["releases"][-1]["release"])}
        history = [last]
        lists = [last["status"], *([last["split"]] if last["split"] else [])]
    return {
        "id": rid,
        "client_id": f"c{rng.randint(0, 3)}",
        "sentence": rng.choice(["a sentence", "another one"]),
        "up_votes": rng.randint(0, 4),
        "down_votes": rng.randint(0, 2),
        "duration_ms": rng.choice([None, 3000]),
        "cv_status": last["status"],
        "split": last["split"],
        "lists": lists,
        "sentence_reported": rng.random() < 0.1,
        "first_release": history[0]["release"],
        "last_release": last["release"],
        "releases_json": json.dumps(history),
        "_hold": "path_outside_release: empty path" if rng.random() < 0.05 else None,
    }


def _case(seed: int):
    rng = random.Random(seed)
    ids = [f"common_voice_en_{i}.mp3" for i in range(rng.randint(1, 14))]
    existing = {rid: _existing(rng, rid) for rid in ids if rng.random() < 0.6}
    incoming = []
    for rid in ids:
        if rng.random() < 0.7:
            incoming.append(_incoming(rng, rid, existing.get(rid)))
            if rng.random() < 0.08:
                incoming.append(_incoming(rng, rid, existing.get(rid)))  # listed twice
    rng.shuffle(incoming)
    kwargs = dict(
        selected=lambda r: "validated" in (r.get("lists") or ()),
        ever_selected=lambda r: any(e["status"] == "validated" for e in r["releases"]),
        engine_key="k1",
        decide=lambda r: failed_gates(r, GATES),
        unscored=lambda r: failed_gates(r, CV_GATES),
        full_releases=rng.sample(FULL, rng.randint(0, 2)),
        force=rng.random() < 0.1,
    )
    return incoming, existing, kwargs


def _pick(row: dict, columns) -> dict:
    return {c: row.get(c) for c in columns}


@pytest.mark.parametrize("seed", range(150))
def test_the_columnar_plan_equals_the_reference_on_random_histories(seed):
    incoming, existing, kwargs = _case(seed)
    want = plan_reference.plan_work(incoming, existing, **kwargs)
    got = plan_work(incoming, existing, **kwargs)
    assert +got.counts == +want.counts
    assert [r["id"] for r in got.engine] == sorted(r["id"] for r in want.engine)
    engine_want = {r["id"]: _pick(r, COMPARED) for r in want.engine}
    assert {r["id"]: _pick(r, COMPARED) for r in got.engine} == engine_want
    assert {r["id"]: _pick(r, STORED) for r in got.updates} == {r["id"]: _pick(r, STORED) for r in want.updates}
    # What was kept before, for every row the plan writes or scores (the rest changed nothing).
    written = {r["id"] for r in [*want.engine, *want.updates]}
    assert got.previous_kept == {k: v for k, v in want.previous_kept.items() if k in written}


@pytest.mark.parametrize("seed", range(150, 230))
def test_the_runs_own_selection_by_split_equals_the_reference(seed):
    """What a run uses: selection by the curated split in SQL (``SplitSelection``), not Python predicates."""
    incoming, existing, kwargs = _case(seed)
    want = plan_reference.plan_work(incoming, existing, **kwargs)
    newest = max(kwargs["full_releases"], key=release_key, default=None)
    rules = Rules(engine_key="k1", split="validated", newest_full=newest, force=kwargs["force"])
    with Workspace(memory_limit_mb=128, threads=1) as ws:
        load_rows(ws, incoming, existing)
        got = as_rows(plan_table(ws, rules, row_decider(kwargs["decide"], kwargs["unscored"]), SplitSelection()))
    assert +got.counts == +want.counts
    assert sorted(r["id"] for r in got.engine) == sorted(r["id"] for r in want.engine)
    assert {r["id"]: _pick(r, STORED) for r in got.updates} == {r["id"]: _pick(r, STORED) for r in want.updates}


@pytest.mark.parametrize("seed", range(230, 290))
def test_the_runs_own_columnar_decider_equals_the_reference(seed):
    """What a run decides with: ``decide_table`` over whole batches (a release's own rows, the unscored
    ones, have no engine columns at all), against the reference's gates row by row."""
    incoming, existing, kwargs = _case(seed)
    for row in existing.values():  # stored agreement as measured under today's settings ("a1")
        measure_agreement(row, "en")
        row["agreement_key"] = "a1"

    def measured_then_judged(row: dict) -> list[str]:  # the sentence may have changed: measure again
        measure_agreement(row, "en")
        return failed_gates(row, GATES)

    want = plan_reference.plan_work(incoming, existing, **{**kwargs, "decide": measured_then_judged})
    newest = max(kwargs["full_releases"], key=release_key, default=None)
    rules = Rules(engine_key="k1", split="validated", newest_full=newest, force=kwargs["force"])
    decide = functools.partial(
        decide_table, gates=GATES, unscored_gates=CV_GATES, language="en", fold_diacritics=False, agreement_key="a1"
    )
    with Workspace(memory_limit_mb=128, threads=1) as ws:
        load_rows(ws, incoming, existing)
        got = as_rows(plan_table(ws, rules, decide, SplitSelection()))
    assert +got.counts == +want.counts
    assert {r["id"]: _pick(r, STORED) for r in got.updates} == {r["id"]: _pick(r, STORED) for r in want.updates}
