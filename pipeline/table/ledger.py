"""The ledger (``curate.ledger``): which units of work (a release's clip list, a Parquet file) a table has
applied, per shard.  It is cumulative: every snapshot's summary holds every unit applied so far, so
expiring old snapshots forgets nothing (pure, but for reading it off a table)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyiceberg.table import Table

LEDGER = "curate.ledger"


def read_ledger(table: Table) -> dict[str, dict[str, Any]]:
    """unit key -> {"shards": k, "done": [shard indices], "run": run id}: from the newest snapshot of the
    current branch that carries one (every snapshot we make does; one made by another tool may not),
    joined with the units applied without a snapshot (nothing changed; the table's ``curate.ledger``
    property)."""
    ledger: dict[str, dict[str, Any]] = {}
    snap = table.current_snapshot()
    while snap is not None:
        text = snap.summary.additional_properties.get(LEDGER) if snap.summary else None
        if text:
            ledger = json.loads(text)
            break
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    idle = json.loads(table.properties.get(LEDGER) or "{}")
    for unit, entry in idle.items():
        have = ledger.get(unit)
        if have is None or have["shards"] != entry["shards"]:
            ledger[unit] = entry
        else:
            ledger[unit] = {**have, "done": sorted(set(have["done"]) | set(entry["done"]))}
    return ledger


def is_applied(ledger: dict[str, dict[str, Any]], unit: str, shard: tuple[int, int] | None = None) -> bool:
    """Whether every shard of ``unit`` is committed, or with ``shard``, whether that shard is."""
    entry = ledger.get(unit)
    if not entry:
        return False
    if set(range(entry["shards"])) <= set(entry["done"]):
        return True
    return shard is not None and entry["shards"] == shard[1] and shard[0] in entry["done"]


def merge_ledger(
    ledger: dict[str, dict[str, Any]], units: Iterable[str], shard: tuple[int, int], run_id: str
) -> dict[str, dict[str, Any]]:
    """``ledger`` with ``units`` marked done by shard ``i`` of ``k``."""
    out = {k: dict(v) for k, v in ledger.items()}
    i, k = shard
    for unit in units:
        entry = out.get(unit)
        if entry is None or entry["shards"] != k:
            entry = {"shards": k, "done": []}
        entry["done"] = sorted(set(entry["done"]) | {i})
        entry["run"] = run_id
        out[unit] = entry
    return out
