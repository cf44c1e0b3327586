"""The nightly trend: one row per night (kept %, WER, audio hours), the last nights kept, and the alert when
tonight's kept share drops well below the nights before it (pure)."""

from __future__ import annotations

from typing import Any

from pipeline.show.report import RunReport

TREND_NIGHTS = 14


def trend_row(report: RunReport, night: str, run: str, kind: str = "night") -> dict[str, Any]:
    """This run as one row of the trend: its counts and the tables after it; ``kind`` is ``night`` (the
    schedule made it) or ``manual``."""
    t = report.tally
    rows = sum(n for n, _ in report.tables_now.values())
    kept = sum(k for _, k in report.tables_now.values())
    return {
        "night": night,
        "kind": kind,
        "run": run,
        "clips": t.counts.in_,
        "kept %": None if t.kept_pct is None else round(t.kept_pct, 1),
        "mean WER": None if t.mean_wer is None else round(t.mean_wer, 3),
        "quarantined": t.counts.quarantined,
        "table clips": rows or None,
        "table kept %": round(100 * kept / rows, 1) if rows else None,
    }


def nights(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of scheduled nights (a manual run shows only in its own run's trend, never counts as one)."""
    return [r for r in rows if r.get("kind", "night") == "night" and r.get("night")]


def trend(previous: list[dict[str, Any]], tonight: dict[str, Any], nights: int = TREND_NIGHTS) -> list[dict[str, Any]]:
    """The last ``nights`` nights, oldest first, this run last (the previous artifact's nights carried on).
    One row per night: a second run for a night already there (a retry) replaces its row."""
    rows = [r for r in previous if r.get("kind", "night") == "night"]
    if tonight.get("kind", "night") == "night":
        rows = [r for r in rows if r.get("night") != tonight["night"]]
    return [*rows, tonight][-nights:]


def kept_drop(rows: list[dict[str, Any]], points: float, min_nights: int) -> dict[str, Any] | None:
    """When tonight's kept % is more than ``points`` below the mean of the nights before it (at least
    ``min_nights`` of them with clips): tonight, the trailing mean and the drop; else None."""
    *before, tonight = rows
    if tonight.get("kept %") is None:
        return None
    past = [r["kept %"] for r in before if r.get("kept %") is not None]
    if len(past) < min_nights:
        return None
    mean = sum(past) / len(past)
    drop = mean - tonight["kept %"]
    if drop <= points:
        return None
    return {
        "tonight": tonight["kept %"],
        "trailing_mean": round(mean, 1),
        "drop_points": round(drop, 1),
        "nights": len(past),
        "before": "the night before" if len(past) == 1 else f"the {len(past)} nights before",
    }
