"""A locale's two tables, opened (created if new) for a run, with the upkeep due before any write: the
orphan files of dead writers removed, and which Common Voice statuses ``kept`` follows checked."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.config import CurationConfig
from pipeline.run.context import RunContext
from pipeline.runtime.storage import resolve_filesystem
from pipeline.stages.gate_rules import kept_statuses
from pipeline.table import upkeep as table_upkeep
from pipeline.table.catalog import CLIPS_TABLE_PROPERTIES, load_or_create, update_metadata
from pipeline.table.schema import AUDIO_TABLE, clips_schema

if TYPE_CHECKING:
    from pyiceberg.table import Table

log = logging.getLogger("pipeline")


@dataclass
class Tables:
    """One locale's two tables, opened (created if new) for this run."""

    catalog: Any
    clips_id: str
    audio_id: str
    clips: Table
    audio: Table
    schema: pa.Schema  # the clips table's, with the input's own pass-through columns
    resolve: Callable[[str], Any]

    def load_clips(self) -> Table:
        return self.catalog.load_table(self.clips_id)

    def load_audio(self) -> Table:
        return self.catalog.load_table(self.audio_id)


KEPT_STATUSES = "curate.kept-statuses"


class MixedSplitsError(ValueError):
    """A run would decide ``kept`` under other Common Voice statuses than the table was curated with."""


def check_kept_statuses(table: Table | None, cfg: CurationConfig, split: str | None) -> None:
    """``kept`` is a clip's verdict under every gate, Common Voice's status among them; which split it is in
    is its ``split`` (and its history), never ``kept``.  Curating train, dev, test or validated into one
    table gives each clip one verdict (they all keep validated clips).  Curating ``other`` (which keeps
    other clips too) into the same table would flip every other clip's verdict at each run: refused."""
    if table is None:
        return
    have = table.properties.get(KEPT_STATUSES)
    want = ",".join(sorted(kept_statuses(split, cfg.gates.keep_cv_status)))
    if have is not None and have != want:
        raise MixedSplitsError(
            f"{'.'.join(table.name())} keeps clips of status {have}; curating split {split!r} keeps {want}, which "
            "would decide every clip again under other rules at each run. Curate it into another output root, "
            "or set gates.keep_cv_status to the same statuses for both"
        )


def remember_kept_statuses(table: Table, cfg: CurationConfig, split: str | None) -> None:
    """Record the statuses ``kept`` follows, once; refused if another writer recorded others meanwhile."""
    check_kept_statuses(table, cfg, split)
    want = ",".join(sorted(kept_statuses(split, cfg.gates.keep_cv_status)))
    if table.properties.get(KEPT_STATUSES) != want:
        with table.transaction() as txn:
            txn.set_properties({KEPT_STATUSES: want})


def open_tables(ctx: RunContext, locale: str) -> Tables:
    """The locale's tables, and their upkeep before any write: orphan files of dead writers removed."""
    cfg = ctx.cfg
    clips_id, audio_id = ctx.root.identifiers(locale)
    catalog = ctx.root.catalog()
    schema = clips_schema(ctx.inputs.passthrough())
    load_or_create(catalog, clips_id, schema, CLIPS_TABLE_PROPERTIES)
    clips = update_metadata(
        catalog, clips_id, "record kept's statuses", lambda t: remember_kept_statuses(t, cfg, ctx.split)
    )
    audio = load_or_create(catalog, audio_id, AUDIO_TABLE)
    resolve = lambda uri: resolve_filesystem(uri, cfg.storage)  # noqa: E731
    for t in (clips, audio):
        gone = table_upkeep.remove_orphans(t, cfg.table.orphan_min_age_s, resolve, cfg.table.writer_ttl_s)
        if gone:
            log.info("removed %d orphan data file(s) of %s (a dead writer's)", len(gone), ".".join(t.name()))
    return Tables(catalog, clips_id, audio_id, clips, audio, schema, resolve)
