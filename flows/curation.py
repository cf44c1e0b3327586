"""The curation flow: plan deterministic shards, map the shard task over them, publish artifacts."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, task, unmapped
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, State
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline import report
from pipeline.config import CurationConfig, Profile, StorageConfig, build_config
from pipeline.io.cv_release import classify_release_input, is_release_name, parse_tarball_name
from pipeline.io.storage import list_parquet_files
from pipeline.shards import ShardSpec, plan_release_shards, plan_shards, slug
from tasks.credentials import apply_credentials_block
from tasks.curate_shard import ShardOutcome, curate_shard


def source_label(source: str, dataset: str) -> str:
    """The locale of a Common Voice release source (a tarball or ``…/cv-corpus-…/<locale>``), else ``dataset``."""
    named = parse_tarball_name(source)
    if named:
        return named[1]
    parts = source.rstrip("/").split("/")
    if len(parts) >= 2 and is_release_name(parts[-2]):
        return parts[-1]
    return dataset


def run_name() -> str:
    """``validated-en-2026-12-02``: what was curated, and the night it was scheduled for."""
    p = flow_run.parameters
    what = source_label(p["source"], p.get("dataset") or "dataset")
    return f"{slug(p.get('split') or 'validated')}-{slug(what)}-{flow_run.scheduled_start_time:%Y-%m-%d}"


def outcome(counts: dict[str, Any]) -> str:
    """The Completed state's message, shown in the runs list: ``39/40 kept, 1 rejected, 0 quarantined``."""
    return f"{counts['kept']}/{counts['in']} kept, {counts['rejected']} rejected, {counts['quarantined']} quarantined"


@task
def plan(
    source: str,
    output_root: str,
    dataset: str,
    split: str,
    num_shards: int | None,
    files: list[str] | None,
    storage: StorageConfig,
) -> list[ShardSpec]:
    st = storage
    if not files:
        releases = classify_release_input(source, st)
        if releases:
            specs, skipped = plan_release_shards(releases, output_root, split, st)
            for note in skipped:
                get_run_logger().info("skipping %s", note)
            if not specs:
                raise ValueError(f"no release under {source} lists {split}.tsv ({'; '.join(skipped)})")
            return specs
    found = files or list_parquet_files(source, st)
    return plan_shards(found, output_root, dataset, split, num_shards)


def run_shards(specs: list[ShardSpec], cfg: CurationConfig, force: bool, progress_id) -> list[ShardOutcome]:
    # In-cluster shards have no child process for a watchdog to stop, so Prefect's own timeout bounds
    # them.  The other launchers stop their child or job themselves (Prefect cannot interrupt a task
    # blocked in a worker thread, and says so in every run's log when asked to).
    limit = cfg.shard_timeout_s if cfg.ray_address == "auto" else None
    shard_task = curate_shard.with_options(timeout_seconds=limit)
    futures = shard_task.map(specs, cfg=unmapped(cfg), force=unmapped(force))
    results, failures = [], []
    for done, fut in enumerate(as_completed(futures), 1):
        update_progress_artifact(progress_id, progress=100 * done / len(specs))
        try:
            results.append(fut.result())
        except Exception as exc:  # wait for every shard: one failure must not orphan the others
            failures.append(exc)
    if failures:
        raise RuntimeError(f"{len(failures)} of {len(specs)} shards failed after retries") from failures[0]
    return sorted(results, key=lambda r: r.spec["shard_id"])


@flow(name="run-shards-on-ray", log_prints=True)
def run_shards_on_ray(specs: list[ShardSpec], cfg: CurationConfig, force: bool, progress_id) -> list[ShardOutcome]:
    """Subflow for ``ray_address="auto"``: shards run as Ray tasks through prefect-ray."""
    return run_shards(specs, cfg, force, progress_id)


@task
def publish(results: list[ShardOutcome], output_root: str, dataset: str, split: str, wall_s: float) -> dict[str, Any]:
    key = slug(f"{dataset}-{split}")
    manifests = [r.manifest for r in results]
    run = report.aggregate(manifests)
    rows = report.file_rows(manifests, [r.spec["output"] for r in results], output_root)
    create_table_artifact(
        key=f"{key}-files", table=rows, description=f"Output files of {dataset}/{split}, under {output_root}"
    )
    create_markdown_artifact(
        key=f"{key}-histogram",
        markdown=report.histogram_markdown(run),
        description="Judge scores, WER against the prompt, and reasons rows were not kept",
    )
    skipped = sum(1 for r in results if r.skipped)
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=report.summary_markdown(run, wall_s, f"Curation of {dataset}/{split}", output_root, skipped),
        description=f"Counts, what 'kept' meant, and where the output is ({output_root})",
    )
    return {
        "shards": run.shards,
        **run.tally.model_dump(by_alias=True),
        "audio_hours": run.audio_hours,
        "files": rows,
        "skipped_shards": skipped,
    }


@flow(
    name="curate-common-voice",
    flow_run_name=run_name,
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def curate_dataset(
    source: str,
    output_root: str,
    dataset: str = "common-voice",
    split: str = "validated",
    num_shards: int | None = None,
    files: list[str] | None = None,
    limit: int | None = None,
    threshold: float | None = None,
    profile: Profile = "local",
    ray_address: str | None = None,
    config_overrides: list[str] | None = None,
    force: bool = False,
    credentials_block: str | None = None,
) -> State:
    """Curate one split of ``source``: Common Voice releases (a tarball, an extracted locale folder, or a
    folder/prefix holding several; one shard per release and locale, ``split`` picks the TSV), or
    Parquet (a file, directory, glob or s3:// prefix; shards group files, ``split`` is a label).

    ``limit`` caps clips per shard.  ``ray_address``: none (embedded local Ray), ``auto`` (inside the
    cluster, via prefect-ray), or ``http://HEAD:8265`` (Ray Jobs).  ``credentials_block`` names a
    Prefect Secret block of S3/hub credentials (see ``tasks/credentials.py``).
    """
    started = time.time()
    logger = get_run_logger()
    if credentials_block:
        logger.info(
            "credentials from Secret block %r: %s",
            credentials_block,
            ", ".join(apply_credentials_block(credentials_block)),
        )
    # The one typed config every task gets; ray_address travels inside it and picks the launcher.
    cfg = build_config(profile, overrides=config_overrides, threshold=threshold, limit=limit, ray_address=ray_address)
    specs = plan(source, output_root, dataset, split, num_shards, files, cfg.storage)
    logger.info("planned %d shard(s) for %s (%s)", len(specs), source, split)
    progress_id = create_progress_artifact(
        progress=0.0, key=slug(f"{dataset}-{split}-progress"), description="shards finished"
    )
    if ray_address == "auto":
        from prefect_ray import RayTaskRunner

        results = run_shards_on_ray.with_options(task_runner=RayTaskRunner(address="auto"))(
            specs, cfg, force, progress_id
        )
    else:
        results = run_shards(specs, cfg, force, progress_id)
    summary = publish(results, output_root, dataset, split, time.time() - started)
    # The message is what the runs list shows beside the state: the night's outcome at a glance.
    return Completed(message=outcome(summary["counts"]), data=summary)
