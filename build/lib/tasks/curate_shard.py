"""The shard task: curate one shard, wherever the launcher puts it, with Prefect's retries.

Exactly-once: a shard writes to its own directory and commits last with a manifest.  A committed
shard is skipped unless ``force``; a failed attempt leaves only uncommitted staging files, which the
retry replaces.
"""

from __future__ import annotations

import logging

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from pipeline.config import CurationConfig
from pipeline.io.commit import is_committed, read_manifest
from pipeline.manifest import Manifest
from pipeline.shards import ShardSpec, is_done
from tasks.launchers import launcher_for


class ShardOutcome(BaseModel):
    spec: dict
    manifest: Manifest
    skipped: bool


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside Prefect, a plain one outside (e.g. called from a script)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("tasks.curate_shard")


def _attempt() -> int:
    ctx = TaskRunContext.get()
    return ctx.task_run.run_count if ctx else 1


@task(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    task_run_name="curate-{spec.split}-{spec.shard_id}",
    tags=["audio-curation"],
)
def curate_shard(spec: ShardSpec, cfg: CurationConfig, force: bool = False) -> ShardOutcome:
    log = _logger()
    if not force and is_done(spec, cfg):
        log.info("%s already committed at %s for this request; skipping", spec.shard_id, spec.output)
        return ShardOutcome(spec=spec.to_dict(), manifest=read_manifest(spec.output, cfg.storage), skipped=True)
    if not force and is_committed(spec.output, cfg.storage):
        log.info(
            "%s was committed for another request (inputs, split, limit, models or gates); redoing it", spec.shard_id
        )
    log.info("curating %s (%d inputs) -> %s (attempt %d)", spec.shard_id, len(spec.files), spec.output, _attempt())
    manifest = launcher_for(cfg.ray_address).launch(spec, cfg, log)
    log.info("%s committed: %s", spec.shard_id, manifest.counts.model_dump_json(by_alias=True))
    return ShardOutcome(spec=spec.to_dict(), manifest=manifest, skipped=False)
