"""The plan as it was first written: a Python loop over rows.  Kept here as the reference the columnar
plan (``pipeline/table/plan.py``) is compared with on random histories (``tests/unit/test_plan_property.py``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.columns import CV_METADATA, ERROR, ID, KEPT, REASONS, STAGE
from pipeline.commonvoice.releases import release_key

# The release's own verdicts and metadata (the product's column list; the rules below are the reference's own).
METADATA = CV_METADATA
# Compared to tell whether a row changed at all (and so must be written).
COMPARED = (*METADATA, "first_release", "releases", KEPT, REASONS)
DUPLICATE = "duplicate id: listed {n} times in the input (every copy held back; which one is right is undefined)"


def merge_history(*histories: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    """The union of release entries, one per release (the later argument wins), in release order."""
    by_release: dict[str, dict[str, Any]] = {}
    for h in histories:
        for entry in h or []:
            by_release[entry["release"]] = dict(entry)
    return [by_release[r] for r in sorted(by_release, key=release_key)]


@dataclass
class Plan:
    engine: list[dict[str, Any]] = field(default_factory=list)  # incoming rows, merged, for the DAG
    updates: list[dict[str, Any]] = field(default_factory=list)  # whole table rows to write as they are
    previous_kept: dict[str, bool] = field(default_factory=dict)  # id -> kept before, for what changed
    counts: Counter = field(default_factory=Counter)

    @property
    def idle(self) -> bool:
        return not self.engine and not self.updates


def _merged(row: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
    """The incoming row with the table's history folded in; the newer release's metadata wins."""
    history = merge_history(old.get("releases") if old else None, json.loads(row.get("releases_json") or "[]"))
    out = dict(row)
    if old is not None and release_key(old.get("last_release")) > release_key(row.get("last_release")):
        for k in METADATA:
            out[k] = old.get(k)
    elif old is not None:
        # What the input does not carry keeps the table's value, and so does a duration it does not give.
        for k in METADATA:
            if k not in row or (k == "duration_ms" and row.get(k) is None):
                out[k] = old.get(k)
    firsts = [r for r in (row.get("first_release"), old.get("first_release") if old else None) if r]
    out["first_release"] = min(firsts, key=release_key) if firsts else None
    out["releases"] = history
    out["releases_json"] = json.dumps(history, separators=(",", ":"))
    return out


def _decided(row: dict[str, Any], decide: Callable[[dict[str, Any]], list[str]], unscored) -> dict[str, Any]:
    """``row`` with ``kept``/``reasons`` decided again from its stored scores (a quarantined row stays so);
    a row the engines never scored is decided by ``unscored`` (Common Voice's own verdicts) and not kept."""
    out = dict(row)
    if out.get(ERROR) is not None:
        out[KEPT], out[REASONS] = False, []
        return out
    if out.get("engine_key") is None:
        reasons = unscored(out)
        out[KEPT], out[REASONS] = False, reasons or ["not_scored"]
        return out
    reasons = decide(out)
    out[KEPT], out[REASONS] = not reasons, reasons
    return out


def _changed(new: dict[str, Any], old: dict[str, Any]) -> bool:
    return any(new.get(k) != old.get(k) for k in COMPARED)


def plan_work(
    incoming: list[dict[str, Any]],
    existing: Mapping[str, dict[str, Any]],
    *,
    selected: Callable[[dict[str, Any]], bool],
    engine_key: str,
    decide: Callable[[dict[str, Any]], list[str]],
    unscored: Callable[[dict[str, Any]], list[str]] = lambda row: [],
    ever_selected: Callable[[dict[str, Any]], bool] = lambda row: False,
    full_releases: Sequence[str] = (),
    force: bool = False,
) -> Plan:
    """The plan for ``incoming`` rows against ``existing`` table rows (id -> row).

    ``selected`` says whether a merged row is in the curated split as of its newest release, and
    ``ever_selected`` whether any release in its history put it there (a clip validated by N and
    invalidated by N+1 enters the table unscored, rejected with N+1's reason, as if N had been curated
    first).  ``decide`` returns the gate codes a scored row fails, ``unscored`` those of a row the
    engines never saw; ``full_releases`` are this run's full (cumulative) releases, whose newest
    withdraws the table's rows it no longer lists.
    """
    plan = Plan()
    copies = Counter(r[ID] for r in incoming)
    seen: set[str] = set()
    for row in incoming:
        rid = row[ID]
        if rid in seen:
            continue
        seen.add(rid)
        old = existing.get(rid)
        plan.counts["incoming"] += 1
        if old is not None:
            plan.previous_kept[rid] = bool(old.get(KEPT))
        merged = _merged(row, old)
        n = max(copies[rid], row.get("copies") or 1)
        hold = DUPLICATE.format(n=n) if n > 1 else row.get("_hold")
        if hold:  # quarantined before any engine: a duplicate, a row without an id
            plan.counts["held"] += 1
            if old is None:  # a clip the table holds keeps its row: which copy is right is undefined
                plan.updates.append({**merged, ERROR: hold, STAGE: "read", KEPT: False, REASONS: []})
            continue
        wanted = selected(merged)
        plan.counts["selected"] += wanted
        scored_here = old is not None and old.get("engine_key") == engine_key and old.get(STAGE) != "read"
        if wanted and (force or not scored_here):
            plan.engine.append(merged)
            continue
        if old is None:
            if ever_selected(merged):
                plan.updates.append(_decided({**merged, ERROR: None, STAGE: None}, decide, unscored))
                plan.counts["unscored"] += 1
            else:
                plan.counts["not_selected"] += 1  # listed by the release, but never in the split curated
            continue
        new = _decided(
            {**old, **{k: merged.get(k) for k in (*METADATA, "first_release", "releases")}}, decide, unscored
        )
        if _changed(new, old):
            plan.updates.append(new)
            plan.counts["updated"] += 1
        else:
            plan.counts["unchanged"] += 1
    newest = max(full_releases, key=release_key, default=None)
    if newest is not None:
        for rid, old in existing.items():
            if rid in seen or release_key(old.get("last_release")) >= release_key(newest):
                continue
            if old.get("cv_status") == "deleted":
                continue
            history = merge_history(old.get("releases"), [{"release": newest, "status": "deleted", "split": None}])
            new = _decided({**old, "cv_status": "deleted", "split": None, "releases": history}, decide, unscored)
            plan.updates.append(new)
            plan.counts["withdrawn"] += 1
            plan.previous_kept[rid] = bool(old.get(KEPT))
    return plan
