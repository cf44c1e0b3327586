"""Shards: a run's inputs cut into parallel pieces by a hash of each clip's id.  Pure: no Prefect, no Ray.

Every shard reads the same sources and plans against the same table, keeping only the clips whose id
hashes to it (``pipeline.run.shard_of``), so each clip is processed by exactly one shard whatever the
releases hold, and a clip that two cumulative releases both list is never done twice.  Each shard
commits its own snapshot; the ledger counts a unit of work applied once every shard of it has.
The embedded default runs one shard (one engine start-up); a cluster runs several in parallel.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ShardSpec:
    sources: tuple[str, ...]
    split: str
    index: int
    count: int
    output: str

    @property
    def shard_id(self) -> str:
        return f"shard-{self.index + 1}-of-{self.count}"

    def to_dict(self) -> dict:
        return {**asdict(self), "sources": list(self.sources), "shard_id": self.shard_id}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def plan_shards(sources: list[str], output: str, split: str, count: int | None = None) -> list[ShardSpec]:
    """``count`` shards (default 1) over the same sources."""
    if not sources:
        raise ValueError("no input sources")
    n = max(1, count or 1)
    return [ShardSpec(tuple(sorted(sources)), split, i, n, output) for i in range(n)]


def discover_splits(source_root: str, storage=None) -> dict[str, str]:
    """``<root>/<split>/*.parquet`` -> {split: its folder}.  Files directly under the root are ignored."""
    from pipeline.storage import list_parquet_files, locate

    where = locate(source_root, storage)
    root = where.at(where.path).uri.rstrip("/")
    splits: dict[str, str] = {}
    for f in list_parquet_files(where):
        parts = f.uri[len(root) :].lstrip("/").split("/")
        if len(parts) >= 2:
            splits.setdefault(parts[0], f"{root}/{parts[0]}")
    return splits
