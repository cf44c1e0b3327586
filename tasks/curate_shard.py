"""The shard task: curate one shard, wherever the launcher puts it, with Prefect's retries.

Exactly once: a shard's result is one atomic snapshot of the dataset's table (per locale), so a failed
attempt committed nothing and its retry starts from the table as it was; a shard whose units of work
the table already holds does nothing (no engine, no snapshot) and says so.
"""

from __future__ import annotations

import logging
import uuid

from prefect import get_run_logger, task
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.runtime import flow_run
from prefect.tasks import exponential_backoff
from pydantic import BaseModel

from pipeline.config import CurationConfig
from pipeline.launch import InClusterLauncher, ShardRefused, launcher_for
from pipeline.result import RunResult
from pipeline.shards import ShardSpec
from tasks.credentials import apply_credentials_block


class ShardOutcome(BaseModel):
    spec: dict
    result: RunResult


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """The run's logger inside Prefect, a plain one outside (e.g. called from a script)."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("tasks.curate_shard")


def _attempt() -> int:
    ctx = TaskRunContext.get()
    return ctx.task_run.run_count if ctx else 1


def worth_retrying(task, task_run, state) -> bool:
    """Retry a shard unless its input or output was refused: that needs a person, not another try."""
    try:
        state.result()
    except ShardRefused:
        return False
    except Exception:
        return True
    return True


@task(
    retries=3,
    retry_condition_fn=worth_retrying,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    task_run_name="curate-{spec.split}-{spec.shard_id}",
    tags=["audio-curation"],
)
def curate_shard(
    spec: ShardSpec, cfg: CurationConfig, force: bool = False, credentials_block: str | None = None
) -> ShardOutcome:
    log = _logger()
    # Traceable: a snapshot's curate.run-id starts with the flow run's id (a failed attempt commits nothing).
    flow_id = flow_run.get_id()
    run_id = spec.run_id(flow_id) if flow_id else uuid.uuid4().hex[:12]
    log.info(
        "curating %s of %s -> %s (attempt %d, run %s)",
        spec.shard_id,
        ", ".join(spec.sources),
        spec.output,
        _attempt(),
        run_id,
    )
    launcher = launcher_for(cfg.ray_address)
    if credentials_block and isinstance(launcher, InClusterLauncher):
        # This task is a Ray task on a cluster node: the flow process's environment is not here, so the
        # block is read again, into this worker's environment only.  A child or a Ray Job has its own.
        log.info("credentials from Secret block %r: %s", credentials_block, apply_credentials_block(credentials_block))
    result = launcher.launch(spec, cfg, log, run_id=run_id, force=force)
    for r in result.locales:
        if r.nothing_to_do:
            log.info("%s: nothing to do in %s: every input already applied", spec.shard_id, r.table)
        else:
            log.info("%s committed %s snapshot %s (%s): %s", spec.shard_id, r.table, r.snapshot_id, r.tag, r.changes)
    return ShardOutcome(spec=spec.to_dict(), result=result)
