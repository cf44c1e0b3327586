"""The plan: which clips need engines, which only a metadata update, which nothing.  Pure."""

from __future__ import annotations

import json

from pipeline.config import build_config
from pipeline.stages.gate_rules import build_gates
from pipeline.stages.gates import failed_gates
from pipeline.table.plan import merge_histories, plan_work, release_key

N, D, N1 = "cv-corpus-22.0-2025-06-20", "cv-corpus-23.0-delta-2025-09-05", "cv-corpus-23.0-2025-09-05"
GATES = build_gates(build_config(), "validated")


def decide(row):
    return failed_gates(row, GATES)


def incoming(rid, release, status="validated", split=None, lists=None, **kw):
    lists = lists or [status, *([split] if split else [])]
    return {
        "id": rid,
        "sentence": "a sentence",
        "cv_status": status,
        "split": split,
        "lists": lists,
        "sentence_reported": False,
        "up_votes": 2,
        "down_votes": 0,
        "last_release": release,
        "first_release": release,
        "releases_json": json.dumps([{"release": release, "status": status, "split": split}]),
        **kw,
    }


def scored(row, key="k1", kept=True):
    """The table's row after the engines scored ``row``."""
    history = json.loads(row["releases_json"])
    return {
        **{k: v for k, v in row.items() if k not in ("lists", "releases_json")},
        "releases": history,
        "engine_key": key,
        "transcription": "a sentence",
        "score": 4 if kept else 2,
        "score_expected": 3.9 if kept else 2.1,
        "wer": 0.0,
        "cer": 0.0,
        "avg_logprob": -0.2,
        "no_speech_prob": 0.01,
        "compression_ratio": 1.0,
        "duration_s": 3.0,
        "error": None,
        "stage": None,
        "kept": kept,
        "reasons": [] if kept else ["judge_below"],
    }


def plan(rows, existing, **kw):
    kw.setdefault("engine_key", "k1")
    return plan_work(rows, existing, selected=lambda r: "validated" in (r.get("lists") or ()), decide=decide, **kw)


def test_releases_order_by_version_then_delta_before_full():
    assert release_key(N) < release_key(D) < release_key(N1)
    old = [{"release": N1, "status": "validated", "split": "dev"}, {"release": N, "status": "other", "split": None}]
    new = [
        {"release": D, "status": "validated", "split": "train"},
        {"release": N, "status": "validated", "split": "train"},
    ]
    (merged, alone) = merge_histories([old, None], [new, new[:1]])
    assert [e["release"] for e in merged] == [N, D, N1]
    assert merged[0]["status"] == "validated"  # a release both list: the newer side's entry
    assert alone == new[:1]


def test_a_new_clip_goes_to_the_engines_and_a_known_one_never_again():
    new = incoming("a.mp3", N)
    p = plan([new], {})
    assert [r["id"] for r in p.engine] == ["a.mp3"] and not p.updates
    # The next full release lists it again with the same votes: nothing to do at all.
    again = incoming("a.mp3", N1, split="train")
    p = plan([again], {"a.mp3": scored(new)})
    assert not p.engine and len(p.updates) == 1  # its split and history changed: a metadata update only
    row = p.updates[0]
    assert row["split"] == "train" and row["last_release"] == N1 and row["first_release"] == N
    assert [e["release"] for e in row["releases"]] == [N, N1] and row["kept"]
    assert row["transcription"] == "a sentence" and row["engine_key"] == "k1"  # scores kept
    p = plan([again], {"a.mp3": row})
    assert not p.engine and not p.updates and p.counts["unchanged"] == 1


def test_new_engines_score_again_and_force_does_too():
    old = scored(incoming("a.mp3", N), key="old-models")
    assert [r["id"] for r in plan([incoming("a.mp3", N)], {"a.mp3": old}).engine] == ["a.mp3"]
    same = scored(incoming("a.mp3", N))
    assert [r["id"] for r in plan([incoming("a.mp3", N)], {"a.mp3": same}, force=True).engine] == ["a.mp3"]


def test_a_clip_moved_to_invalidated_stops_being_kept_without_engines():
    before = scored(incoming("a.mp3", N))
    moved = incoming("a.mp3", N1, status="invalidated", lists=["invalidated"])
    p = plan([moved], {"a.mp3": before})
    assert not p.engine
    (row,) = p.updates
    assert row["cv_status"] == "invalidated" and not row["kept"] and row["reasons"] == ["cv_invalidated"]


def test_a_reported_sentence_stops_being_kept_unless_switched_off():
    before = scored(incoming("a.mp3", N))
    reported = incoming("a.mp3", N1, sentence_reported=True)
    (row,) = plan([reported], {"a.mp3": before}).updates
    assert row["reasons"] == ["sentence_reported"] and not row["kept"]
    lenient = build_gates(build_config(overrides=["gates.exclude_reported=false"]), "validated")
    p = plan_work(
        [reported],
        {"a.mp3": before},
        selected=lambda r: True,
        engine_key="k1",
        decide=lambda r: failed_gates(r, lenient),
    )
    assert p.updates[0]["kept"]


def test_a_clip_promoted_from_other_is_curated():
    # Release N listed it in other.tsv: not in the validated split, so not in the dataset.
    assert plan([incoming("p.mp3", N, status="other", lists=["other"])], {}).counts["not_selected"] == 1
    # N+1 validated it: now it goes through the engines.
    assert [r["id"] for r in plan([incoming("p.mp3", N1)], {}).engine] == ["p.mp3"]


def test_an_older_release_applied_late_never_moves_metadata_back():
    newest = scored(incoming("a.mp3", N1, status="invalidated", lists=["invalidated"]))
    newest["kept"], newest["reasons"] = False, ["cv_invalidated"]
    p = plan([incoming("a.mp3", N)], {"a.mp3": newest})
    (row,) = p.updates
    assert row["cv_status"] == "invalidated" and row["last_release"] == N1 and row["first_release"] == N
    assert [e["release"] for e in row["releases"]] == [N, N1]


def test_a_newer_full_release_that_no_longer_lists_a_clip_withdraws_it():
    gone = scored(incoming("gone.mp3", N))
    p = plan([incoming("a.mp3", N1)], {"gone.mp3": gone}, full_releases=[N1])
    (row,) = p.updates
    assert row["id"] == "gone.mp3" and row["cv_status"] == "deleted" and row["reasons"] == ["cv_deleted"]
    assert p.counts["withdrawn"] == 1
    # A delta lists only new clips: it never withdraws anything.
    assert not plan([incoming("a.mp3", D)], {"gone.mp3": gone}, full_releases=[]).updates


def test_an_id_listed_twice_is_one_quarantined_row():
    rows = [incoming("a.mp3", N), incoming("a.mp3", N), incoming("b.mp3", N)]
    p = plan(rows, {})
    assert [r["id"] for r in p.engine] == ["b.mp3"]
    (held,) = p.updates
    assert held["id"] == "a.mp3" and held["stage"] == "read" and "listed 2 times" in held["error"]
    assert p.counts["incoming"] == 2


def test_a_clip_first_seen_already_moved_enters_unscored_with_its_reason():
    """N validated it, N+1 invalidated it, and both arrive in one backfill: no engine work, but the row
    is in the table, rejected with N+1's reason, as if N had been curated first."""
    history = [
        {"release": N, "status": "validated", "split": None},
        {"release": N1, "status": "invalidated", "split": None},
    ]
    row = incoming("m.mp3", N1, status="invalidated", lists=["invalidated"], releases_json=json.dumps(history))
    cv = build_gates(build_config(), "validated")[:2]
    p = plan_work(
        [row],
        {},
        selected=lambda r: "validated" in r["lists"],
        ever_selected=lambda r: any(e["status"] == "validated" for e in r["releases"]),
        engine_key="k1",
        decide=decide,
        unscored=lambda r: failed_gates(r, cv),
    )
    assert not p.engine
    (got,) = p.updates
    assert not got["kept"] and got["reasons"] == ["cv_invalidated"] and got.get("score") is None


def test_rows_measured_under_new_agreement_rules_are_written_once_then_left_alone(monkeypatch):
    """A new agreement key (a setting, or new normaliser rules) measures a table's WER again.  A row whose
    WER, kept and reasons come out the same is still written once, with the new key: left with the old
    key, every later run measured the whole table again."""
    import functools

    from pipeline.stages import gates as gates_module
    from pipeline.stages.gates import decide_table
    from pipeline.table.plan import Rules, plan_table
    from pipeline.table.plan_rows import as_rows, load_rows
    from pipeline.table.workspace import Workspace

    measured = []
    real = gates_module._measure
    monkeypatch.setattr(gates_module, "_measure", lambda triples, fold: measured.extend(triples) or real(triples, fold))

    said = {"a.mp3": "the sun is a star", "b.mp3": "water boils at one hundred degrees"}

    def run(existing, key):
        rows = [incoming(rid, N1, sentence=said[rid]) for rid in existing]
        decide = functools.partial(decide_table, gates=GATES, unscored_gates=[], language="en",
                                   fold_diacritics=True, agreement_key=key)  # fmt: skip
        with Workspace(memory_limit_mb=128, threads=1) as ws:
            load_rows(ws, rows, existing)
            return as_rows(plan_table(ws, Rules(engine_key="k1", split="validated"), decide))

    table = {
        rid: {**scored(incoming(rid, N1, sentence=s)), "transcription": s.capitalize() + ".", "agreement_key": "old"}
        for rid, s in said.items()
    }
    p = run(table, "new")
    assert not p.engine and len(measured) == 2
    assert {r["id"]: (r["agreement_key"], r["wer"], r["kept"]) for r in p.updates} == {
        "a.mp3": ("new", 0.0, True),
        "b.mp3": ("new", 0.0, True),
    }
    assert p.counts["updated"] == 2
    measured.clear()
    p = run({r["id"]: r for r in p.updates}, "new")
    assert not p.updates and not measured and p.counts["unchanged"] == 2
