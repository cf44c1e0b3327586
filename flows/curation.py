"""The curation flow: plan shards, map the shard task over them under the table's concurrency limit,
publish artifacts."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow, get_run_logger, unmapped
from prefect.artifacts import (
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.futures import as_completed
from prefect.states import Completed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.publish import ensure_table_lock, night_tag, outcome, publish, run_name, show_outcome, table_lock
from pipeline.config import CurationConfig, Profile, build_config, refuse_secrets
from pipeline.launch import runs_in_cluster
from pipeline.shards import ShardSpec, plan_shards, slug
from tasks.credentials import apply_credentials_block
from tasks.curate_shard import ShardOutcome, curate_shard


def flow_config(
    where: str,
    profile: Profile = "local",
    config_file: str | None = None,
    config_overrides: list[str] | None = None,
    credentials_block: str | None = None,
    **fields: Any,
) -> CurationConfig:
    """The one typed config of a flow run, built once from the flow's parameters (profile, a config file on
    the worker, overrides, and the ``threshold``/``limit``/``ray_address`` shortcuts); a flow that starts
    others passes it on built.  The overrides are refused before anything is logged or handed on:
    Prefect has stored the parameter already, so the error names the keys, never the values."""
    cfg = build_config(profile, file=config_file, overrides=config_overrides, **fields)
    refuse_secrets(cfg, config_overrides, where=where)  # a config file may hold one too
    if credentials_block:
        get_run_logger().info(
            "credentials from Secret block %r: %s",
            credentials_block,
            ", ".join(apply_credentials_block(credentials_block)),
        )
    return cfg


def run_shards(
    specs: list[ShardSpec], cfg: CurationConfig, force: bool, progress_id, credentials_block: str | None = None
) -> list[ShardOutcome]:
    # In-cluster shards have no child process for a watchdog to stop, so Prefect's own timeout bounds
    # them.  The other launchers stop their child or job themselves (Prefect cannot interrupt a task
    # blocked in a worker thread, and says so in every run's log when asked to).
    limit = cfg.shard_timeout_s if runs_in_cluster(cfg.ray_address) else None
    shard_task = curate_shard.with_options(timeout_seconds=limit)
    futures = shard_task.map(
        specs, cfg=unmapped(cfg), force=unmapped(force), credentials_block=unmapped(credentials_block)
    )
    results, failures = [], []
    for done, fut in enumerate(as_completed(futures), 1):
        update_progress_artifact(progress_id, progress=100 * done / len(specs))
        try:
            results.append(fut.result())
        except Exception as exc:  # wait for every shard: one failure must not orphan the others
            failures.append(exc)
    if failures:
        first = str(failures[0]).splitlines()[0][:300]
        raise RuntimeError(f"{len(failures)} of {len(specs)} shards failed: {first}") from failures[0]
    return sorted(results, key=lambda r: r.spec["index"])


@flow(name="run-shards-on-ray", log_prints=True)
def run_shards_on_ray(
    specs: list[ShardSpec], cfg: CurationConfig, force: bool, progress_id, credentials_block: str | None = None
) -> list[ShardOutcome]:
    """Subflow for ``ray_address="auto"``: shards run as Ray tasks through prefect-ray."""
    return run_shards(specs, cfg, force, progress_id, credentials_block)


@flow(
    name="curate-common-voice",
    flow_run_name=run_name,
    log_prints=True,
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def curate_dataset(
    source: str | list[str],
    output_root: str,
    dataset: str = "common-voice",
    split: str = "validated",
    num_shards: int | None = None,
    limit: int | None = None,
    threshold: float | None = None,
    profile: Profile = "local",
    ray_address: str | None = None,
    config_overrides: list[str] | None = None,
    config_file: str | None = None,
    config: CurationConfig | None = None,
    force: bool = False,
    credentials_block: str | None = None,
    alert_kept_drop_points: float = 10.0,
    alert_min_nights: int = 3,
) -> State:
    """Curate one split of ``source`` into the dataset's tables at ``output_root``: Common Voice releases
    (a tarball, an extracted locale folder, or a folder/prefix holding several, full and delta alike, or a
    list of them) or Parquet (a file, directory, glob or s3:// prefix).

    ``num_shards`` (default 1: one engine start-up) cuts the clips by a hash of their id into parallel
    shard tasks.  ``limit`` caps clips per shard.  ``ray_address``: none (embedded local Ray), ``auto``
    (inside the cluster, via prefect-ray), or ``http://HEAD:8265`` (Ray Jobs).  ``credentials_block``
    names a Prefect Secret block of S3/hub credentials (see ``tasks/credentials.py``).  ``config``: a
    config built already (by the backfill flow), used as it is, instead of ``profile``, ``config_file``,
    ``config_overrides`` and the shortcuts.  When tonight's
    kept % is more than ``alert_kept_drop_points`` below the mean of the (at least ``alert_min_nights``)
    nights before it, the run emits an ``audio-curate.kept-drop`` event for the deployment's automation.
    """
    started = time.time()
    logger = get_run_logger()
    shortcuts = dict(threshold=threshold, limit=limit, ray_address=ray_address)
    if config is None:
        cfg = flow_config("curate_dataset", profile, config_file, config_overrides, credentials_block, **shortcuts)
    else:
        loose = dict(profile=profile != "local", config_overrides=config_overrides, config_file=config_file)
        given = [k for k, v in {**loose, **shortcuts}.items() if v]
        if given:
            raise ValueError(f"curate_dataset got a built config and {given}: build them into the config")
        refuse_secrets(config, where="curate_dataset")
        cfg = config
        if credentials_block:
            apply_credentials_block(credentials_block)
    if cfg.table.tag is None:
        cfg = cfg.model_copy(update={"table": cfg.table.model_copy(update={"tag": night_tag()})})
    sources = [source] if isinstance(source, str) else list(source)
    shown = ", ".join(sources)
    specs = plan_shards(sources, output_root, split, num_shards)
    logger.info("planned %d shard(s) for %s (%s)", len(specs), shown, split)
    progress_id = create_progress_artifact(
        progress=0.0, key=slug(f"{dataset}-{split}-progress"), description="shards finished"
    )
    lock = table_lock(output_root)
    ensure_table_lock(lock)
    from prefect.concurrency.sync import concurrency

    # Renewal failures (a server restart) must not stop the night: the lock only saves duplicate
    # engine work; the table's commit keeps every id once whatever happens to it.
    with concurrency(lock, occupy=1, strict=True, raise_on_lease_renewal_failure=False):
        # Decided from the built config, like the launcher and the timeout: ray_address=auto given as a
        # parameter or as an override (config_overrides=["ray_address=auto"]) runs the same way.
        if runs_in_cluster(cfg.ray_address):
            from prefect_ray import RayTaskRunner

            results = run_shards_on_ray.with_options(task_runner=RayTaskRunner(address="auto"))(
                specs, cfg, force, progress_id, credentials_block
            )
        else:
            results = run_shards(specs, cfg, force, progress_id, credentials_block)
    summary = publish(
        results, shown, output_root, dataset, split, time.time() - started, alert_kept_drop_points, alert_min_nights
    )
    message = (
        "nothing to do: every input already in the table" if summary["nothing_to_do"] else outcome(summary["counts"])
    )
    # The runs list shows names, not state messages: the outcome joins the name, so a morning's glance
    # at the list says how each night went ("validated-en-2026-12-02 · 39/40 kept").
    show_outcome(message.split(",")[0].split(":")[0])
    return Completed(message=message, data=summary)
