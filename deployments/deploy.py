"""Apply the work pool and the deployments to whatever Prefect server PREFECT_API_URL points at.

    python -m deployments.deploy --source s3://bucket/mdc/cv-corpus-23.0-2025-09-05-en.tar.gz \
        --output-root s3://bucket/curated --ray-address http://ray-head:8265 --profile cluster

- ``audio-curation`` work pool (process type; workers: ``prefect worker start --pool audio-curation``);
- ``curate-common-voice/nightly``: cron schedule (timezone-aware) with default parameters; any of
  them can be overridden in the UI's "Custom run"; concurrency limit 1, so nightly runs never overlap;
- ``backfill-common-voice/backfill``: no schedule; run from the UI or ``prefect deployment run``;
- two automations: "audio-curate: a run failed" (a run of either deployment Failed, Crashed or
  TimedOut) and "audio-curate: kept dropped" (the flow's ``audio-curate.kept-drop`` event: tonight's
  kept % fell more than ``alert_kept_drop_points`` below the trailing mean).  With ``--alert-webhook
  URL`` (or ``CURATE_ALERT_WEBHOOK``) they POST ``{"subject", "text"}`` there through a
  ``CustomWebhookNotificationBlock`` (``audio-curate-alerts``); without one they only mark the event
  in the UI's event feed (point them at Slack or e-mail by editing the automation's action there).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from prefect import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.exceptions import ObjectNotFound
from prefect.flows import Flow
from prefect.schedules import Cron
from prefect.utilities.asyncutils import run_coro_as_sync

REPO = Path(__file__).resolve().parents[1]
POOL = "audio-curation"
# What a long-lived Prefect server for these flows runs with (docker/compose.yaml, docs/operations.md).  A
# table's lock is a global concurrency slot held under a lease; Prefect 3.7 keeps leases in memory by
# default, so a server restart mid-run forgot the lease, the run's release found nothing to release, and
# the slot stayed taken: every later run of that table waited on it for ever.  On disk (PREFECT_HOME's
# ``concurrency_leases``), the lease outlives the restart and is released.
SERVER_ENV = {"PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}
SAMPLE = str(REPO / "pipeline" / "sample_data" / "common_voice_sample.parquet")


async def ensure_work_pool(name: str, concurrency_limit: int | None) -> None:
    async with get_client() as client:
        try:
            await client.read_work_pool(name)
        except ObjectNotFound:
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    concurrency_limit=concurrency_limit,
                    description="Runs the audio curation flows; each flow drives Ray.",
                )
            )


def deploy_all(
    source: str = SAMPLE,
    output_root: str = str(REPO / "output" / "nightly"),
    source_root: str | None = None,
    dataset: str = "common-voice",
    split: str = "validated",
    profile: str = "local",
    config_file: str | None = None,
    ray_address: str | None = None,
    cron: str = "0 2 * * *",
    timezone: str = "UTC",
    pool: str = POOL,
    pool_concurrency: int | None = None,
    num_shards: int | None = None,
    limit: int | None = None,
) -> list[Any]:
    run_coro_as_sync(ensure_work_pool(pool, pool_concurrency))
    common = {
        "output_root": output_root,
        "dataset": dataset,
        "profile": profile,
        "config_file": config_file,
        "ray_address": ray_address,
        "limit": limit,
    }
    no_overlap = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)
    # Both run from this checkout on a process pool; neither may overlap with itself.
    # ignore_warnings: Prefect would print its "you're deploying to a process work pool" hint once per
    # deployment; a process pool is the point here (main() prints how to start its worker once).
    shared = dict(
        work_pool_name=pool,
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,
        concurrency_limit=no_overlap,
    )
    ids = []
    nightly = Flow.from_source(source=str(REPO), entrypoint="flows/curation.py:curate_dataset")
    ids.append(
        nightly.deploy(
            name="nightly",
            schedules=[Cron(cron, timezone=timezone)],
            parameters={**common, "source": source, "split": split, "num_shards": num_shards},
            tags=["audio-curation", "nightly"],
            description="Nightly curation of a Common Voice split.",
            **shared,
        )
    )
    backfill = Flow.from_source(source=str(REPO), entrypoint="flows/backfill.py:backfill")
    ids.append(
        backfill.deploy(
            name="backfill",
            parameters={**common, "source_root": source_root or str(Path(source).parent)},
            tags=["audio-curation", "backfill"],
            description="Curate every split under source_root that the ledger has not committed yet.",
            **shared,
        )
    )
    return ids


ALERT_BLOCK = "audio-curate-alerts"
FAILED = "audio-curate: a run failed"
DROPPED = "audio-curate: kept dropped"


async def ensure_alerts(deployment_ids: list[Any], webhook: str | None) -> dict[str, Any]:
    """The two automations, replaced if they exist, acting through the webhook block when given."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.events.actions import DoNothing, SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    related = {"prefect.resource.id": [f"prefect.deployment.{i}" for i in deployment_ids]}
    action = None
    if webhook:
        block = CustomWebhookNotificationBlock(
            name="audio-curate", url=webhook, json_data={"subject": "{{subject}}", "text": "{{body}}"}
        )
        block_id = await block.save(ALERT_BLOCK, overwrite=True)

        def action(subject: str, body: str):
            return SendNotification(block_document_id=block_id, subject=subject, body=body)

    specs = {
        FAILED: (
            EventTrigger(
                match={"prefect.resource.id": "prefect.flow-run.*"},
                match_related=related,
                expect={"prefect.flow-run.Failed", "prefect.flow-run.Crashed", "prefect.flow-run.TimedOut"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            "audio-curate: {{ flow_run.name }} {{ flow_run.state.name }}",
            "Flow run {{ flow_run.name }} of {{ deployment.name }} ended {{ flow_run.state.name }}: "
            "{{ flow_run.state.message }}",
        ),
        DROPPED: (
            EventTrigger(
                match={"prefect.resource.id": "audio-curate.dataset.*"},
                match_related=related,
                expect={"audio-curate.kept-drop"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            "audio-curate: kept dropped in {{ event.resource.name }}",
            "{{ event.resource.name }}: kept {{ event.payload.tonight }}% tonight, "
            "{{ event.payload.drop_points }} points below the {{ event.payload.trailing_mean }}% of "
            "{{ event.payload.before }} (run {{ flow_run.name }}).",
        ),
    }
    made = {}
    async with get_client() as client:
        for name, (trigger, subject, body) in specs.items():
            for old in await client.read_automations_by_name(name):
                await client.delete_automation(old.id)
            actions = [action(subject, body)] if action else [DoNothing()]
            made[name] = await client.create_automation(
                AutomationCore(name=name, description=body, trigger=trigger, actions=actions)
            )
    return made


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=SAMPLE)
    p.add_argument("--source-root")
    p.add_argument("--output-root", default=str(REPO / "output" / "nightly"))
    p.add_argument("--dataset", default="common-voice")
    p.add_argument("--split", default="validated")
    p.add_argument("--profile", choices=["local", "cluster"], default="local")
    p.add_argument("--config", dest="config_file", help="YAML or TOML file of config overrides, on the worker")
    p.add_argument("--ray-address")
    p.add_argument("--cron", default="0 2 * * *")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--pool", default=POOL)
    p.add_argument("--num-shards", type=int)
    p.add_argument("--limit", type=int)
    p.add_argument(
        "--alert-webhook",
        default=os.environ.get("CURATE_ALERT_WEBHOOK"),
        help="URL the alert automations POST to (default: $CURATE_ALERT_WEBHOOK; none: the UI's event feed only)",
    )
    a = p.parse_args(argv)
    from pipeline.runtime.storage import locate

    try:  # a scheme nothing here reads fails now, not on the first night
        for root in filter(None, (a.source, a.source_root, a.output_root)):
            locate(root)
    except ValueError as exc:
        p.error(str(exc))
    ids = deploy_all(
        source=a.source,
        output_root=a.output_root,
        source_root=a.source_root,
        dataset=a.dataset,
        split=a.split,
        profile=a.profile,
        config_file=a.config_file,
        ray_address=a.ray_address,
        cron=a.cron,
        timezone=a.timezone,
        pool=a.pool,
        num_shards=a.num_shards,
        limit=a.limit,
    )
    alerts = run_coro_as_sync(ensure_alerts(ids, a.alert_webhook))
    print(f"applied {len(ids)} deployments to work pool {a.pool!r}: {ids}")
    where = f"POST to {a.alert_webhook}" if a.alert_webhook else "the UI's event feed (no --alert-webhook)"
    print(f"alerts: {', '.join(alerts)} -> {where}")
    print(f"start a worker with: prefect worker start --pool {a.pool}")


if __name__ == "__main__":
    main()
