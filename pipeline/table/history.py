"""A table's history as a person reads it: every snapshot (when, what made it, what it changed) and the
tags on it (``curate history``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipeline.config import CurationConfig


@dataclass
class Entry:
    snapshot_id: int
    when: str
    operation: str  # the run's own, or Iceberg's (append, overwrite)
    run: str
    releases: str
    changes: dict[str, int]
    counts: dict[str, int]
    tags: list[str] = field(default_factory=list)
    current: bool = False


def history(output: str, cfg: CurationConfig, locale: str | None) -> list[Entry]:
    """Every snapshot of ``locale``'s clips table at ``output`` (None: its one locale), oldest first."""
    from pipeline.table.export import open_tables

    clips, _ = open_tables(output, cfg, locale)
    tags: dict[int, list[str]] = {}
    for name, ref in clips.refs().items():
        if ref.snapshot_ref_type == "tag":
            tags.setdefault(ref.snapshot_id, []).append(name)
    current = clips.current_snapshot().snapshot_id if clips.current_snapshot() else None
    out = []
    for s in clips.snapshots():
        props = dict(s.summary.additional_properties) if s.summary else {}
        op = props.get("curate.operation") or (s.summary.operation.value if s.summary else "")
        out.append(
            Entry(
                snapshot_id=s.snapshot_id,
                when=datetime.fromtimestamp(s.timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
                operation=op,
                run=props.get("curate.run-id", ""),
                releases=props.get("curate.releases", ""),
                changes=json.loads(props.get("curate.changes") or "{}"),
                counts=json.loads(props.get("curate.counts") or "{}"),
                tags=sorted(tags.get(s.snapshot_id, [])),
                current=s.snapshot_id == current,
            )
        )
    return out


def history_text(entries: list[Entry]) -> str:
    """One line a snapshot: when, its id, what made it, what changed, its tags; the current one marked."""
    if not entries:
        return "no snapshot yet"
    lines = []
    for e in entries:
        c = e.changes
        what = (
            f"{c.get('engine_rows', 0)} through the engines, {c.get('added', 0)} added, {c.get('updated', 0)} "
            f"updated, {c.get('withdrawn', 0)} withdrawn; {e.counts.get('kept', 0)}/{e.counts.get('in', 0)} kept"
            if c
            else ""
        )
        tags = f"  [{', '.join(e.tags)}]" if e.tags else ""
        mark = "*" if e.current else " "
        lines.append(f"{mark} {e.when}  {e.snapshot_id}  {e.operation:<10} {e.run:<24} {what}{tags}".rstrip())
        if e.releases:
            lines.append(f"    releases: {e.releases}")
    lines.append("(* the current snapshot; export one with --as-of <tag | snapshot id | ISO time>)")
    return "\n".join(lines)
