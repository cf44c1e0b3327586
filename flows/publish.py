"""What a person sees of a flow run in Prefect's UI: its name and outcome, the night it belongs to, the
table lock it takes, and the artifacts it publishes (files, histogram, rejected rows, summary, trend)."""

from __future__ import annotations

import contextlib
import hashlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from pipeline.commonvoice.releases import is_release_name, parse_tarball_name
from pipeline.shards import slug
from pipeline.show import report, trend
from tasks.curate_shard import ShardOutcome


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
    source = p["source"] if isinstance(p["source"], str) else p["source"][0]  # a backfill's: one locale's list
    what = source_label(source, p.get("dataset") or "dataset")
    base = f"{slug(p.get('split') or 'validated')}-{slug(what)}"
    night = tonight()
    return f"{base}-{night}" if night else f"{base}-manual-{datetime.now(UTC):%Y-%m-%d-%H%M}"


def tonight() -> str | None:
    """The night this run was scheduled for, in its schedule's timezone (``2026-12-04`` for 23:30 in New
    York, although UTC is on the 5th by then); None for a manual run."""
    root = _root_run()
    if not (root and root.auto_scheduled):
        return None
    return night_of(flow_run.scheduled_start_time, _schedule_timezone(root))


def outcome(counts: dict[str, Any]) -> str:
    """The Completed state's message, shown in the runs list: ``39/40 kept, 1 rejected, 0 quarantined``."""
    return f"{counts['kept']}/{counts['in']} kept, {counts['rejected']} rejected, {counts['quarantined']} quarantined"


def table_lock(output_root: str) -> str:
    """The global concurrency limit of one output root's tables: nightly and backfill runs on the same
    tables take turns, so no clip is scored twice at once (the commit would keep it once anyway)."""
    return f"curate-table-{hashlib.sha1(output_root.rstrip('/').encode()).hexdigest()[:12]}"


def ensure_table_lock(name: str) -> None:
    """Create the limit (1 slot) if missing: Prefect only enforces limits that exist.

    Under Prefect's temporary server (``curate backfill`` with no ``PREFECT_API_URL``) a slot already taken
    is a killed run's: the server keeps leases in memory, so the slot of a backfill stopped by Ctrl-C or
    SIGKILL outlived it in ~/.prefect's database, and every later backfill of the table waited on it
    forever.  Such a slot is freed (two backfills of one table at once would then both work: the commit
    keeps every id once, at the cost of engine work done twice)."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.settings import get_current_settings
    from prefect.utilities.asyncutils import run_coro_as_sync

    temporary = get_current_settings().api.url is None

    async def create() -> None:
        async with get_client() as client:
            try:
                limit = await client.read_global_concurrency_limit_by_name(name)
            except ObjectNotFound:
                with contextlib.suppress(ObjectAlreadyExists):  # another run created it first
                    await client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                return
            if temporary and limit.active_slots:
                get_run_logger().warning("%s: freeing the slot a killed run left taken", name)
                await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=0))
            elif limit.active_slots:
                # What a person needs when the wait does not end: a server that kept its leases in memory
                # (deployments.deploy.SERVER_ENV) and restarted mid-run left its slot taken for good.
                get_run_logger().warning(
                    "%s is taken: this run waits for the run of these tables that holds it. If none is running "
                    "(a Prefect server restart with leases in memory leaves it taken), free it with "
                    "`prefect gcl update %s --active-slots 0`",
                    name,
                    name,
                )

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
    forms; a tag a person makes stays (``pipeline.table.upkeep.PRODUCT_TAG``)."""
    night = tonight()
    return f"nightly-{night}" if night else f"manual-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"


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
    night = tonight()
    kind = "night" if night else "manual"
    this_run = trend.trend_row(run, night or f"{flow_run.scheduled_start_time:%Y-%m-%d}", flow_run.name or "", kind)
    before = trend.nights(previous_trend(f"{key}-trend"))
    drop = None
    if idle == len(results):  # nothing happened: the trend stays as it was, with no row for this run
        create_table_artifact(key=f"{key}-trend", table=before or [{"night": "", "run": "no night yet"}],
                              description="nothing to do: the trend is unchanged")  # fmt: skip
    else:
        rows = trend.trend(before, this_run)
        past = [r["kept %"] for r in rows[:-1] if r.get("kept %") is not None]
        nights = "the night before" if len(past) == 1 else f"the {len(past)} nights before"
        versus = f" vs {sum(past) / len(past):.0f}% over {nights}" if past else ""
        kept_pct = "-" if this_run["kept %"] is None else f"{this_run['kept %']:.0f}%"
        what = "tonight" if kind == "night" else "this manual run"
        create_table_artifact(key=f"{key}-trend", table=rows, description=f"{what} {kept_pct} kept{versus}")
        drop = trend.kept_drop(rows, alert_kept_drop_points, alert_min_nights)
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
