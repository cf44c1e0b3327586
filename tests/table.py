"""Reading a run's output the way a user does: through the catalog, not the files."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.cli import RESULT_MARK
from pipeline.config import build_config
from pipeline.result import RunResult
from pipeline.table.catalog import table_root


def tables(output: str | Path, locale: str = "en", overrides: list[str] | None = None):
    """(clips table, audio table) of ``output``'s ``locale``."""
    root = table_root(str(output), build_config(overrides=overrides))
    catalog = root.catalog()
    clips_id, audio_id = root.identifiers(locale)
    return catalog.load_table(clips_id), catalog.load_table(audio_id)


def rows(output: str | Path, locale: str = "en", overrides: list[str] | None = None, snapshot_id=None) -> dict:
    """id -> row of the clips table's current (or given) snapshot; every id must be there once."""
    clips, _ = tables(output, locale, overrides)
    table = clips.scan(snapshot_id=snapshot_id).to_arrow()
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)), "an id appears more than once in the table"
    return {r["id"]: r for r in table.to_pylist()}


def summaries(output: str | Path, locale: str = "en", overrides: list[str] | None = None) -> list[dict[str, str]]:
    """Every snapshot's summary properties, oldest first."""
    clips, _ = tables(output, locale, overrides)
    return [dict(s.summary.additional_properties) | {"_id": s.snapshot_id} for s in clips.snapshots()]


def engine_rows(output: str | Path, locale: str = "en", overrides: list[str] | None = None) -> int:
    """How many clips went through Whisper and the judge, over every run (from snapshot properties)."""
    return sum(int(s.get("curate.engine-rows", 0)) for s in summaries(output, locale, overrides))


def result_of(stdout: str) -> RunResult:
    """The RunResult a `curate run --emit-result` printed."""
    line = next(ln for ln in reversed(stdout.splitlines()) if ln.startswith(RESULT_MARK))
    return RunResult.model_validate(json.loads(line[len(RESULT_MARK) + 1 :]))
