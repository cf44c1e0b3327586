"""The curation DAG, top to bottom, in one place.

read Parquet -> decode+resample (CPU tasks) -> transcribe (Whisper actors) -> judge (ray.data.llm)
-> threshold -> (written by ``CurationSink`` into curated / scores / quarantine)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import ray
from ray.data import ActorPoolStrategy, Dataset

from pipeline.config import CurationConfig
from pipeline.models import ResolvedModel
from pipeline.schema import InputLayout, to_canonical
from pipeline.stages.audio import decode_audio
from pipeline.stages.filter import apply_threshold
from pipeline.stages.judge import add_judge_stage
from pipeline.stages.transcribe import (
    FasterWhisperTranscriber,
    HFWhisperTranscriber,
    WhisperFeatures,
    WhisperTokenDecoder,
)
from pipeline.storage import resolve_filesystem


@dataclass(frozen=True)
class Models:
    transcriber: ResolvedModel
    judge: ResolvedModel


def read_clips(files: list[str], cfg: CurationConfig, layout: InputLayout) -> Dataset:
    fs, _ = resolve_filesystem(files[0], cfg.storage)
    paths = [resolve_filesystem(f, cfg.storage)[1] for f in files]
    ds = ray.data.read_parquet(paths, filesystem=fs)
    if cfg.limit is not None:
        ds = ds.limit(cfg.limit)
    return ds.map_batches(functools.partial(to_canonical, layout=layout), batch_format="pyarrow")


def add_transcription_stages(ds: Dataset, cfg: CurationConfig, model_path: str) -> Dataset:
    t = cfg.transcriber
    actor = dict(fn_constructor_args=(t, model_path), batch_format="pyarrow")
    if t.backend == "ctranslate2":
        return ds.map_batches(
            FasterWhisperTranscriber,
            batch_size=t.batch_size,
            compute=ActorPoolStrategy(size=t.num_actors),
            num_cpus=t.num_cpus_per_actor,
            num_gpus=t.num_gpus_per_actor,
            **actor,
        )
    ds = ds.map_batches(
        WhisperFeatures, batch_size=t.feature_batch_size, compute=ActorPoolStrategy(size=t.feature_actors), **actor
    )
    ds = ds.map_batches(
        HFWhisperTranscriber,
        batch_size=t.batch_size,
        compute=ActorPoolStrategy(size=t.num_actors),
        num_cpus=t.num_cpus_per_actor,
        num_gpus=t.num_gpus_per_actor,
        **actor,
    )
    return ds.map_batches(
        WhisperTokenDecoder, batch_size=t.decoder_batch_size, compute=ActorPoolStrategy(size=t.decoder_actors), **actor
    )


def judged_columns(layout: InputLayout) -> tuple[str, ...]:
    """Columns that survive the judge stage (it sees whole rows and returns many more)."""
    base = ["id", "audio_bytes", "duration_s", "transcription", "error", "stage"]
    if layout.has_sentence:
        base.append("sentence")
    return (*base, *layout.passthrough)


def build_curation_dataset(
    files: list[str],
    cfg: CurationConfig,
    layout: InputLayout,
    models: Models,
    duplicate_ids: frozenset[str] = frozenset(),
) -> Dataset:
    ds = read_clips(files, cfg, layout)
    block_rows = cfg.transcriber.batch_size if cfg.block_rows is None else cfg.block_rows
    if block_rows:
        ds = ds.repartition(target_num_rows_per_block=block_rows)
    ds = ds.map_batches(
        functools.partial(decode_audio, cfg=cfg.audio, duplicate_ids=duplicate_ids),
        batch_size=cfg.audio.decode_batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.audio.decode_num_cpus,
    )
    ds = add_transcription_stages(ds, cfg, models.transcriber.path)
    ds = add_judge_stage(ds, cfg.judge, models.judge.path, keep=judged_columns(layout))
    ds = ds.map_batches(
        functools.partial(apply_threshold, threshold=cfg.threshold, on=cfg.threshold_on), batch_format="pyarrow"
    )
    return ds
