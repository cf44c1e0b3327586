"""The curation flow: plan shards, map the shard task over them under the table's concurrency limit,
publish artifacts."""

from __future__ import annotations

import contextlib
import hashlib
import time
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
from pipeline.config import CurationConfig, Profile, build_config, refuse_secrets
from pipeline.io.cv_release import parse_tarball_name
from pipeline.launch import runs_in_cluster
from pipeline.releases import is_release_name
from pipeline.shards import ShardSpec, plan_shards, slug
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


def _root_run():
    """This run's root flow run as the API has it (the run itself unless it is a subflow), or None."""
    from prefect import get_client

    run_id = flow_run.get_root_flow_run_id() or flow_run.get_id()
    if not run_id:
        return None
    try:
        with get_client(sync_client=True) as client:
            return client.read_flow_run(run_id)
    except Exception:  # no API to ask
        return None


def is_night() -> bool:
    """Whether this run is a night: created by its deployment's schedule (its root run, for a subflow).  A
    custom run from the UI, ``prefect deployment run`` or the CLI is manual."""
    root = _root_run()
    return bool(root and root.auto_scheduled)


def night_of(scheduled: datetime, timezone: str | None) -> str:
    """The night a scheduled run belongs to, as its deployment's schedule sees it: 23:30 in New York is
    that day's night there, although it is the next day in UTC."""
    try:
        zone = ZoneInfo(timezone) if timezone else UTC
    except (ZoneInfoNotFoundError, ValueError):
        zone = UTC
    return f"{scheduled.astimezone(zone):%Y-%m-%d}"


def _schedule_timezone(root) -> str | None:
    """The timezone of the schedule that created ``root``, read from its deployment."""
    from prefect import get_client

    if root is None or not root.deployment_id:
        return None
    try:
        with get_client(sync_client=True) as client:
            schedules = client.read_deployment(root.deployment_id).schedules or []
    except Exception:
        return None
    zones = [getattr(s.schedule, "timezone", None) for s in schedules]
    return next((z for z in zones if z), None)


def run_name() -> str:
    """``validated-en-2026-12-02``: what was curated, and the night it was scheduled for (in the schedule's
    timezone); a manual run says so and when it started: ``validated-en-manual-2026-12-04-1530``."""
    p = flow_run.parameters
    what = source_label(p["source"], p.get("dataset") or "dataset")
    base = f"{slug(p.get('split') or 'validated')}-{slug(what)}"
    root = _root_run()
    if root and root.auto_scheduled:
        return f"{base}-{night_of(flow_run.scheduled_start_time, _schedule_timezone(root))}"
    return f"{base}-manual-{datetime.now(UTC):%Y-%m-%d-%H%M}"


def outcome(counts: dict[str, Any]) -> str:
    """The Completed state's message, shown in the runs list: ``39/40 kept, 1 rejected, 0 quarantined``."""
    return f"{counts['kept']}/{counts['in']} kept, {counts['rejected']} rejected, {counts['quarantined']} quarantined"


def table_lock(output_root: str) -> str:
    """The global concurrency limit of one output root's tables: nightly and backfill runs on the same
    tables take turns, so no clip is scored twice at once (the commit would keep it once anyway)."""
    return f"curate-table-{hashlib.sha1(output_root.rstrip('/').encode()).hexdigest()[:12]}"


def ensure_table_lock(name: str) -> None:
    """Create the limit (1 slot) if missing: Prefect only enforces limits that exist."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def create() -> None:
        async with get_client() as client:
            try:
                await client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                    await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))

    run_coro_as_sync(create())


def show_outcome(short: str) -> None:
    from prefect import get_client

    run_id, name = flow_run.get_id(), flow_run.name
    if run_id and name and " · " not in name:
        with get_client(sync_client=True) as client:
            client.update_flow_run(run_id, name=f"{name} · {short}")


def night_tag() -> str:
    """The snapshot's tag: ``nightly-2026-12-02`` for a scheduled run (the night it was scheduled for,
    whichever deployment), ``manual-20261204T153000Z`` for any other run.  Expiry removes only these
    forms; a tag a person makes stays (``pipeline.table.commit.PRODUCT_TAG``)."""
    if is_night():
        return f"nightly-{flow_run.scheduled_start_time:%Y-%m-%d}"
    return f"manual-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


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
    refuse_secrets(overrides=config_overrides, where=where)
    if credentials_block:
        get_run_logger().info(
            "credentials from Secret block %r: %s",
            credentials_block,
            ", ".join(apply_credentials_block(credentials_block)),
        )
    cfg = build_config(profile, file=config_file, overrides=config_overrides, **fields)
    refuse_secrets(cfg, where=where)  # a config file may hold one too
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


def previous_trend(key: str) -> list[dict[str, Any]]:
    """The rows of the latest ``key`` artifact: the nights before tonight (Prefect's own history)."""
    import json

    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC, limit=1
        )
    if not found:
        return []
    data = found[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [r for r in rows if isinstance(r, dict) and "night" in r]


@task
def publish(
    results: list[ShardOutcome],
    source: str,
    output_root: str,
    dataset: str,
    split: str,
    wall_s: float,
    alert_kept_drop_points: float,
    alert_min_nights: int,
) -> dict[str, Any]:
    key = slug(f"{dataset}-{split}")
    run = report.aggregate([r.result for r in results])
    head = report.headline(run)
    c = run.tally.counts
    logs = [r.result.log for r in results if r.result.log]
    files = report.file_rows(run, logs)
    data = [f for f in files if f["kind"] == "data"]
    create_table_artifact(
        key=f"{key}-files",
        table=files,
        description=f"{len(data)} data file{'s' * (len(data) != 1)}, {sum(f['rows'] for f in data)} rows added to "
        f"{output_root}'s tables; {len(logs)} log{'s' * (len(logs) != 1)}",
    )
    create_markdown_artifact(key=f"{key}-histogram", markdown=report.histogram_markdown(run), description=head)
    rejected = report.rejected_rows(run)
    create_table_artifact(
        key=f"{key}-rejected",
        table=rejected or [{"id": "", "why": "every row was kept"}],
        description=f"{c.rejected} rejected, {c.quarantined} quarantined tonight"
        + (f"; the first {len(rejected)} listed" if len(rejected) < c.rejected + c.quarantined else ""),
    )
    idle = sum(1 for r in results if r.result.nothing_to_do)
    create_markdown_artifact(
        key=f"{key}-summary",
        markdown=report.summary_markdown(run, wall_s, f"Curation of {dataset}/{split}", output_root, idle, source),
        description=f"{head} (input {source})",
    )
    kind = "night" if is_night() else "manual"
    tonight = report.trend_row(run, f"{flow_run.scheduled_start_time:%Y-%m-%d}", flow_run.name or "", kind)
    before = report.nights(previous_trend(f"{key}-trend"))
    drop = None
    if idle == len(results):  # nothing happened: the trend stays as it was, with no row for this run
        create_table_artifact(key=f"{key}-trend", table=before or [{"night": "", "run": "no night yet"}],
                              description="nothing to do: the trend is unchanged")  # fmt: skip
    else:
        rows = report.trend(before, tonight)
        past = [r["kept %"] for r in rows[:-1] if r.get("kept %") is not None]
        nights = "the night before" if len(past) == 1 else f"the {len(past)} nights before"
        versus = f" vs {sum(past) / len(past):.0f}% over {nights}" if past else ""
        kept_pct = "-" if tonight["kept %"] is None else f"{tonight['kept %']:.0f}%"
        what = "tonight" if kind == "night" else "this manual run"
        create_table_artifact(key=f"{key}-trend", table=rows, description=f"{what} {kept_pct} kept{versus}")
        drop = report.kept_drop(rows, alert_kept_drop_points, alert_min_nights)
    if drop:
        # The deployment's automation (deployments/deploy.py) turns this into a notification.
        from prefect.events import emit_event

        get_run_logger().warning("kept %% dropped: %s", drop)
        emit_event(
            event="audio-curate.kept-drop",
            resource={"prefect.resource.id": f"audio-curate.dataset.{key}", "prefect.resource.name": key},
            payload={**drop, "output_root": output_root},
        )
    return {
        "shards": run.shards,
        **run.tally.model_dump(by_alias=True),
        "changes": run.changes,
        "tables": [
            {"table": r.table, "snapshot": r.snapshot_id, "tag": r.tag, "nothing_to_do": r.nothing_to_do}
            for r in run.locales
        ],
        "audio_hours": run.audio_hours,
        "files": files,
        "nothing_to_do": idle == len(results),
        "kept_drop": drop,
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
    (a tarball, an extracted locale folder, or a folder/prefix holding several, full and delta alike) or
    Parquet (a file, directory, glob or s3:// prefix).

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
    specs = plan_shards([source], output_root, split, num_shards)
    logger.info("planned %d shard(s) for %s (%s)", len(specs), source, split)
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
        results, source, output_root, dataset, split, time.time() - started, alert_kept_drop_points, alert_min_nights
    )
    message = (
        "nothing to do: every input already in the table" if summary["nothing_to_do"] else outcome(summary["counts"])
    )
    # The runs list shows names, not state messages: the outcome joins the name, so a morning's glance
    # at the list says how each night went ("validated-en-2026-12-02 · 39/40 kept").
    show_outcome(message.split(",")[0].split(":")[0])
    return Completed(message=message, data=summary)
