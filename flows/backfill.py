"""Backfill: find what a source root holds, curate only the shards not yet in the ledger.

Two kinds of root:
- Common Voice releases (tarballs and extracted locale folders, full and delta, local or S3): one
  shard per release, locale and split, under ``OUT/<release>/<locale>/<split>/``.  A delta release
  is its own release, so it becomes new shards and never re-reads the full release it extends.
- Parquet mirrors laid out as ``<root>/<split>/*.parquet``: each split's files are sharded as in
  ``curate_dataset``.

The ledger is the set of committed shard manifests, not a separate file that could drift.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.curation import curate_dataset
from pipeline.config import CurationConfig, Profile, build_config
from pipeline.io.cv_release import discover_releases
from pipeline.shards import discover_splits, pending_shards, plan_release_shards, plan_shards, slug
from tasks.credentials import apply_credentials_block

DEFAULT_RELEASE_SPLITS = ("validated",)


def _config(profile: Profile, config_overrides: list[str] | None, threshold, limit) -> CurationConfig:
    # The same config curate_dataset builds: its storage section lists the root (e.g. an S3 endpoint),
    # its content settings decide which committed shards still answer the request.
    return build_config(profile, overrides=config_overrides, threshold=threshold, limit=limit)


def run_name() -> str:
    """``backfill-mdc-2026-12-02``: the source root's name and the day the run was scheduled for."""
    root = flow_run.parameters["source_root"].rstrip("/").rsplit("/", 1)[-1]
    return f"backfill-{slug(root)}-{flow_run.scheduled_start_time:%Y-%m-%d}"


@flow(name="backfill-common-voice", flow_run_name=run_name, log_prints=True)
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
) -> State:
    """Curate what ``source_root`` holds that the output lacks.

    For releases, ``splits`` names the clip lists to curate (default ``validated``); for Parquet
    mirrors it filters the ``<split>/`` folders (default: all).
    """
    logger = get_run_logger()
    if credentials_block:
        apply_credentials_block(credentials_block)
    cfg = _config(profile, config_overrides, threshold, limit)
    storage = cfg.storage
    common = dict(
        output_root=output_root,
        limit=limit,
        threshold=threshold,
        profile=profile,
        ray_address=ray_address,
        config_overrides=config_overrides,
        credentials_block=credentials_block,
    )
    releases = discover_releases(source_root, storage)
    if releases:
        names = sorted({f"{r.release}/{r.locale}" for r in releases})
        logger.info("found %d release(s) under %s: %s", len(names), source_root, ", ".join(names))
        planned, committed, processed = 0, [], []
        for split in splits or DEFAULT_RELEASE_SPLITS:
            specs, skipped = plan_release_shards(releases, output_root, split, storage)
            for note in skipped:
                logger.info("skipping %s", note)
            todo = pending_shards(specs, cfg)
            planned += len(specs)
            if not todo:
                logger.info("%s: all %d shard(s) already committed; nothing to do", split, len(specs))
                continue
            logger.info("%s: %d of %d shard(s) to curate", split, len(todo), len(specs))
            curate_dataset(source=source_root, split=split, **common)
            committed += [f"{s.dataset}/{s.split}" for s in todo]
            processed.append(split)
        result = {
            "releases_found": names,
            "splits_processed": processed,
            "shards_planned": planned,
            "shards_committed": committed,
        }
        done = f"committed {len(committed)} shard(s)" if committed else "nothing to do"
        return Completed(message=f"{done}; {len(names)} release(s) found", data=result)

    found = discover_splits(source_root, storage)
    if splits:
        found = {k: v for k, v in found.items() if k in splits}
    processed = []
    for split, files in sorted(found.items()):
        specs = plan_shards(files, output_root, dataset, split, num_shards_per_split)
        todo = pending_shards(specs, cfg)
        if not todo:
            logger.info("%s: all %d shards already committed", split, len(specs))
            continue
        logger.info("%s: %d of %d shards to curate", split, len(todo), len(specs))
        curate_dataset(
            source=source_root,
            dataset=dataset,
            split=split,
            # Same files, same shard count: the same plan, so committed shards are skipped, not regrouped.
            files=files,
            num_shards=num_shards_per_split,
            **common,
        )
        processed.append(split)
    result = {"splits_found": sorted(found), "splits_processed": processed}
    return Completed(message=f"curated {', '.join(processed) or 'nothing new'}", data=result)
