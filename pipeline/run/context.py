"""What every step of a run shares: the run's context, and a clock that times each step."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.config import CurationConfig
from pipeline.dag import Models
from pipeline.io.inputs import ParquetInputs, ReleaseInputs
from pipeline.result import ModelInfo
from pipeline.shards import settings_key
from pipeline.table.catalog import TableRoot

if TYPE_CHECKING:
    from pipeline.show.console import Console

log = logging.getLogger("pipeline")


@dataclass
class RunContext:
    cfg: CurationConfig
    root: TableRoot
    inputs: ParquetInputs | ReleaseInputs
    models: Models
    split: str | None
    run_id: str
    shard: tuple[int, int]
    force: bool
    console: Console | None

    @property
    def settings(self) -> str:
        return settings_key(self.cfg, self.models, self.split)


def model_info(cfg: CurationConfig, models: Models) -> dict[str, ModelInfo]:
    return {
        "transcriber": ModelInfo(
            backend=cfg.transcriber.backend, ref=models.transcriber.ref, revision=models.transcriber.revision
        ),
        "judge": ModelInfo(ref=models.judge.ref, revision=models.judge.revision, engine="vllm"),
    }


@contextlib.contextmanager
def timed(clock: dict[str, float], step: str):
    """Adds the block's seconds to ``clock[step]``, and logs the driver's memory after it."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        clock[step] = round(clock.get(step, 0.0) + time.perf_counter() - t0, 3)
        log.info("%s took %.1f s; driver memory %s", step, time.perf_counter() - t0, _memory())


def _memory() -> str:
    try:
        with open("/proc/self/status") as f:
            got = {k: v.split()[0] for k, _, v in (line.partition(":") for line in f) if k in ("VmRSS", "VmHWM")}
        return f"{int(got['VmRSS']) >> 10} MiB (peak {int(got['VmHWM']) >> 10} MiB)"
    except (OSError, KeyError, ValueError):
        return "unknown"
