"""Deterministic shard planning and the ledger of committed shards.  Pure: no Prefect, no Ray.

Shard ids hash the shard's file list, so the same input always gives the same ids and output
directories, and a committed shard is recognised on any later run.  The ledger is not a separate
file that could drift: it *is* the set of shard directories whose manifest is committed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from pipeline.config import CurationConfig, StorageConfig
from pipeline.io.commit import is_committed
from pipeline.io.cv_release import ReleaseSource
from pipeline.io.storage import list_parquet_files, resolve_filesystem, to_uri


@dataclass(frozen=True)
class ShardSpec:
    dataset: str
    split: str
    shard_id: str
    files: tuple[str, ...]
    output: str

    def to_dict(self) -> dict:
        return {**asdict(self), "files": list(self.files)}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def shard_dir(output_root: str, dataset: str, split: str, shard_id: str) -> str:
    return f"{output_root.rstrip('/')}/{slug(dataset)}/{slug(split)}/{shard_id}"


def plan_shards(
    files: list[str],
    output_root: str,
    dataset: str,
    split: str,
    num_shards: int | None = None,
) -> list[ShardSpec]:
    """Split the sorted file list into ``num_shards`` contiguous groups (default: one file each)."""
    files = sorted(files)
    if not files:
        raise ValueError(f"no input files for {dataset}/{split}")
    n = len(files) if num_shards is None else max(1, min(num_shards, len(files)))
    groups = [files[i * len(files) // n : (i + 1) * len(files) // n] for i in range(n)]
    specs = []
    for i, group in enumerate(groups):
        digest = hashlib.sha1("\n".join(os.path.basename(f) for f in group).encode()).hexdigest()[:10]
        shard_id = f"shard-{i:05d}-{digest}"
        specs.append(
            ShardSpec(dataset, split, shard_id, tuple(group), shard_dir(output_root, dataset, split, shard_id))
        )
    return specs


def discover_splits(source_root: str, storage: StorageConfig | None = None) -> dict[str, list[str]]:
    """``<root>/<split>/*.parquet`` -> {split: files}.  Files directly under the root are ignored."""
    # Listing returns URIs in one canonical form (absolute local paths, s3://bucket/key): compare alike.
    root = to_uri(source_root, resolve_filesystem(source_root, storage)[1]).rstrip("/")
    splits: dict[str, list[str]] = {}
    for f in list_parquet_files(source_root, storage):
        parts = f[len(root) :].lstrip("/").split("/")
        if len(parts) >= 2:
            splits.setdefault(parts[0], []).append(f)
    return splits


def request_key(cfg: CurationConfig, inputs: list[str] | tuple[str, ...], split: str | None) -> str:
    """What a shard's output is a function of: its inputs, its split and the content settings."""
    body = json.dumps(
        {"inputs": sorted(inputs), "split": split, "content": cfg.content_settings()}, sort_keys=True, default=str
    )
    return hashlib.sha256(body.encode()).hexdigest()[:20]


def is_done(spec: ShardSpec, cfg: CurationConfig) -> bool:
    """Committed, and by a run that asked for the same thing (inputs, split, limit, models, gates)."""
    return is_committed(spec.output, cfg.storage, request_key(cfg, spec.files, spec.split))


def pending_shards(specs: list[ShardSpec], cfg: CurationConfig) -> list[ShardSpec]:
    return [s for s in specs if not is_done(s, cfg)]


def release_has_split(src: ReleaseSource, split: str, storage: StorageConfig | None = None) -> bool:
    """Whether a release lists ``split``, without reading a tarball: deltas have no train/dev/test."""
    if src.form == "tarball":
        return not (src.delta and split in ("train", "dev", "test"))
    fs, folder = resolve_filesystem(src.uri, storage)
    return fs.get_file_info(f"{folder}/{split}.tsv").type == pafs.FileType.File


def plan_release_shards(
    releases: list[ReleaseSource], output_root: str, split: str, storage: StorageConfig | None = None
) -> tuple[list[ShardSpec], list[str]]:
    """One shard per release, locale and split: ``OUT/<release>/<locale>/<split>/shard-00000-<hash>/``.

    A gzip tarball can only be read in order, so it is one shard; its read streams.  A release that is
    there both as a tarball and extracted is curated once, from the folder (whose clips read in
    parallel).  Returns the specs and a note for each release skipped (e.g. a delta has no train).
    """
    chosen: dict[tuple[str, str], ReleaseSource] = {}
    for src in sorted(releases, key=lambda s: (s.form != "folder", s.uri)):
        chosen.setdefault((src.release, src.locale), src)
    specs, skipped = [], []
    for (release, locale), src in sorted(chosen.items()):
        if not release_has_split(src, split, storage):
            skipped.append(f"{release}/{locale} has no {split}.tsv")
            continue
        digest = hashlib.sha1(f"{release}/{locale}/{split}".encode()).hexdigest()[:10]
        shard_id = f"shard-00000-{digest}"
        output = f"{output_root.rstrip('/')}/{release}/{locale}/{slug(split)}/{shard_id}"
        specs.append(ShardSpec(f"{release}/{locale}", split, shard_id, (src.uri,), output))
    return specs, skipped
