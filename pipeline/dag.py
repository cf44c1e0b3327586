"""The curation DAG, top to bottom, in one place.

read (the clips the plan picked, from a Common Voice release or Parquet) -> decode+resample (CPU tasks)
-> acoustic quality (VAD, SNR, loudness in the same tasks; DNSMOS actors when on) -> transcribe
(Whisper actors) -> judge (ray.data.llm) -> gates -> (written by ``TableSink`` as data
files of the dataset's tables, committed by the driver)
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from ray.data import ActorPoolStrategy, Dataset

from pipeline.columns import (
    ARR,
    AUDIO,
    AUDIO_SHA,
    CONFIDENCE,
    DECODE,
    DETOKENIZE,
    DNSMOS_STAGE,
    DURATION,
    ERROR,
    FEATURIZE,
    GATES,
    GENERATE,
    ID,
    JUDGE,
    MEASURE,
    QUALITY,
    READ_ERROR,
    SINK,
    STAGE,
    TRANSCRIBE,
    TRANSCRIPT,
    StageColumns,
    check_stages,
)
from pipeline.config import CurationConfig
from pipeline.models import ResolvedModel
from pipeline.progress import track
from pipeline.stages.decode import decode_audio
from pipeline.stages.gates import apply_gates, build_gates
from pipeline.stages.judge import add_judge_stage, unjudged
from pipeline.stages.quality import DnsmosScorer, measure_quality
from pipeline.stages.transcribe import (
    FasterWhisperTranscriber,
    HFWhisperTranscriber,
    WhisperFeatures,
    WhisperTokenDecoder,
)


@dataclass(frozen=True)
class Models:
    transcriber: ResolvedModel
    judge: ResolvedModel


def add_transcription_stages(ds: Dataset, cfg: CurationConfig, model_path: str, progress: str | None = None) -> Dataset:
    t = cfg.transcriber
    actor = dict(fn_constructor_args=(t, model_path), batch_format="pyarrow")
    if t.backend == "ctranslate2":
        return ds.map_batches(
            track(FasterWhisperTranscriber, "transcribe", progress),
            batch_size=t.batch_size,
            compute=ActorPoolStrategy(size=t.num_actors),
            num_cpus=t.num_cpus_per_actor,
            num_gpus=t.num_gpus_per_actor,
            resources=t.resources or None,
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
        resources=t.resources or None,
        **actor,
    )
    return ds.map_batches(
        track(WhisperTokenDecoder, "transcribe", progress),
        batch_size=t.decoder_batch_size,
        compute=ActorPoolStrategy(size=t.decoder_actors),
        **actor,
    )


def judged_columns(input_columns: list[str]) -> tuple[str, ...]:
    """Columns that survive the judge stage (it sees whole rows and returns many more)."""
    base = [ID, AUDIO, AUDIO_SHA, "audio_size", DURATION, TRANSCRIPT, ERROR, STAGE, *CONFIDENCE, *QUALITY]
    return (*base, *(c for c in input_columns if c not in base and c not in (READ_ERROR, ARR)))


def stage_columns(cfg: CurationConfig, input_columns: list[str] | None = None) -> list[StageColumns]:
    """The stages' column contracts, in DAG order, for the configured backend; with ``input_columns``
    the judge's projection is declared too, so a column it would lose fails the check at build time."""
    whisper = [TRANSCRIBE] if cfg.transcriber.backend == "ctranslate2" else [FEATURIZE, GENERATE, DETOKENIZE]
    q = cfg.quality
    quality = [MEASURE] * q.enabled + [DNSMOS_STAGE] * q.dnsmos
    judge = JUDGE if input_columns is None else dataclasses.replace(JUDGE, keeps=judged_columns(input_columns))
    return [DECODE, *quality, *whisper, judge, GATES, SINK]


def add_quality_stages(ds: Dataset, cfg: CurationConfig, progress: str | None = None) -> Dataset:
    """How each clip sounds, measured on its 16 kHz samples before Whisper drops them."""
    q = cfg.quality
    if q.enabled:
        # A plain task like decode's, so Ray Data fuses the two: no extra hop for the samples.
        ds = ds.map_batches(
            functools.partial(measure_quality, cfg=q, audio=cfg.audio),
            batch_size=cfg.audio.decode_batch_size,
            batch_format="pyarrow",
            num_cpus=cfg.audio.decode_num_cpus,
        )
    if q.dnsmos:
        ds = ds.map_batches(
            DnsmosScorer,
            fn_constructor_args=(q,),
            batch_size=q.dnsmos_batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=q.dnsmos_actors),
            num_cpus=q.dnsmos_num_cpus,
        )
    return ds


def build_curation_dataset(
    ds: Dataset,
    input_columns: list[str],
    cfg: CurationConfig,
    models: Models,
    split: str | None = None,
    progress: str | None = None,
) -> Dataset:
    """The DAG over ``ds`` (the read of the clips that need engines, with ``input_columns``);
    ``progress`` names the counter actor each stage reports its rows to (None: no counting)."""
    check_stages([ID, AUDIO, *input_columns], stage_columns(cfg, input_columns))  # here, not in a worker
    block_rows = cfg.transcriber.batch_size if cfg.block_rows is None else cfg.block_rows
    if block_rows:
        ds = ds.repartition(target_num_rows_per_block=block_rows)
    ds = ds.map_batches(
        track(functools.partial(decode_audio, cfg=cfg.audio, quality=cfg.quality), "decode", progress),
        batch_size=cfg.audio.decode_batch_size,
        batch_format="pyarrow",
        num_cpus=cfg.audio.decode_num_cpus,
    )
    ds = add_quality_stages(ds, cfg, progress)
    ds = add_transcription_stages(ds, cfg, models.transcriber.path, progress)
    keep = judged_columns(input_columns)
    if cfg.judge.enabled:
        ds = add_judge_stage(ds, cfg.judge, models.judge.path, keep=keep)
    else:  # a locale the judge does not score (judge.locales): no engine, null scores
        ds = ds.map_batches(functools.partial(unjudged, keep=keep), batch_format="pyarrow")
    gates = build_gates(cfg, split)
    ds = ds.map_batches(
        track(
            functools.partial(
                apply_gates, gates=gates, language=cfg.transcriber.language, fold_diacritics=cfg.gates.fold_diacritics
            ),
            "judge",
            progress,
        ),
        batch_format="pyarrow",
    )
    return ds
