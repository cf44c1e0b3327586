"""The curation DAG, top to bottom, in one place.

read (the clips the plan picked, from a Common Voice release or Parquet) -> decode+resample (CPU tasks)
-> acoustic quality (VAD, SNR, loudness in the same tasks; DNSMOS actors when on) -> transcribe
(Whisper actors) -> judge (ray.data.llm) -> gates -> (written by ``TableSink`` as data
files of the dataset's tables, committed by the driver)

Each stage declares itself in its own file (``pipeline/stage.py``: name, columns, resources, batch
size, setup, call); this file only lists them, checks their columns and adds them in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.data import Dataset

from pipeline.columns import AUDIO, ID
from pipeline.config import CurationConfig
from pipeline.io.table_sink import WRITER
from pipeline.models import ResolvedModel
from pipeline.stage import Stage, check_stages
from pipeline.stages import decode, gates, judge, quality, transcribe


@dataclass(frozen=True)
class Models:
    transcriber: ResolvedModel
    judge: ResolvedModel


def curation_stages(
    cfg: CurationConfig, models: Models, input_columns: list[str], split: str | None = None, scratch: str | None = None
) -> list[Stage]:
    """The stages in DAG order for this config (backend, quality, judge on or off) and input; ``scratch``: the
    temp folder the judge's engine writes to (None: its own)."""
    return [
        decode.stage(cfg),
        *quality.stages(cfg),
        *transcribe.stages(cfg, models.transcriber.path),
        judge.stage(cfg, models.judge.path, input_columns, scratch),
        gates.stage(cfg, split),
    ]


def check_curation(input_columns: list[str], stages: list[Stage]) -> set[str]:
    """The columns the writer gets; ``ColumnContractError`` naming the stage, at build time."""
    return check_stages([ID, AUDIO, *input_columns], [*stages, WRITER])


def build_curation_dataset(
    ds: Dataset,
    input_columns: list[str],
    stages: list[Stage],
    cfg: CurationConfig,
    progress: str | None = None,
) -> Dataset:
    """The DAG over ``ds`` (the read of the clips that need engines, with ``input_columns``);
    ``progress`` names the counter actor the counted stages report their rows to (None: no counting)."""
    check_curation(input_columns, stages)  # here, not in a worker
    block_rows = cfg.transcriber.batch_size if cfg.block_rows is None else cfg.block_rows
    if block_rows:
        ds = ds.repartition(target_num_rows_per_block=block_rows)
    return apply_stages(ds, stages, progress)


def apply_stages(ds: Dataset, stages: list[Stage], progress: str | None = None) -> Dataset:
    for stage in stages:
        try:
            ds = stage.apply(ds, progress)
        except Exception as exc:
            # Raised here, on the driver, before any row ran (the judge's chat template loads its tokenizer
            # here): the failure is this stage's setting up, whatever stage the progress lines wait on.
            exc.building_stage = stage.name  # type: ignore[attr-defined]
            raise
    return ds
