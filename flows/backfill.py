"""Backfill: find splits under a Common Voice root, curate only shards not yet in the ledger."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from flows.curation import curate_dataset
from pipeline.config import Profile, StorageConfig
from pipeline.shards import discover_splits, pending_shards, plan_shards
from tasks.credentials import apply_credentials_block


@flow(name="backfill-common-voice", log_prints=True)
def backfill(
    source_root: str,
    output_root: str,
    dataset: str = "common-voice",
    splits: list[str] | None = None,
    num_shards_per_split: int | None = None,
    limit: int | None = None,
    threshold: float | None = None,
    profile: Profile = "local",
    ray_address: str | None = None,
    config_overrides: list[str] | None = None,
    credentials_block: str | None = None,
) -> dict[str, Any]:
    """``source_root`` looks like ``…/cv-corpus-<version>/<lang>``, holding ``<split>/*.parquet``."""
    logger = get_run_logger()
    if credentials_block:
        apply_credentials_block(credentials_block)
    found = discover_splits(source_root, StorageConfig())
    if splits:
        found = {k: v for k, v in found.items() if k in splits}
    processed: dict[str, Any] = {}
    for split, files in sorted(found.items()):
        specs = plan_shards(files, output_root, dataset, split, num_shards_per_split)
        todo = pending_shards(specs)
        if not todo:
            logger.info("%s: all %d shards already committed", split, len(specs))
            continue
        logger.info("%s: %d of %d shards to curate", split, len(todo), len(specs))
        processed[split] = curate_dataset(
            source=source_root,
            output_root=output_root,
            dataset=dataset,
            split=split,
            # Same files, same shard count: the same plan, so committed shards are skipped, not regrouped.
            files=files,
            num_shards=num_shards_per_split,
            limit=limit,
            threshold=threshold,
            profile=profile,
            ray_address=ray_address,
            config_overrides=config_overrides,
            credentials_block=credentials_block,
        )
    return {"splits_found": sorted(found), "splits_processed": sorted(processed)}
