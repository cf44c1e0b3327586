"""Stages that hear how a clip sounds, on its 16 kHz samples, before Whisper drops them.

``measure_quality`` (a few ms a clip; fused into decode's tasks by Ray Data): Silero VAD's speech
frames give ``speech_ratio``, the leading and trailing silence and the SNR; BS.1770 gives the loudness.
``DnsmosScorer`` (an actor pool, when ``quality.dnsmos`` is on): DNSMOS P.835 and P.808.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa

from pipeline.columns import (
    ARR,
    DNSMOS,
    ERROR,
    LEADING_SILENCE,
    LOUDNESS,
    SNR,
    SPEECH_RATIO,
    TRAILING_SILENCE,
    VAD_SIGNALS,
)
from pipeline.config import AudioConfig, CurationConfig, QualityConfig
from pipeline.quality.signals import PAUSE_PROB, frame_power, loudness_lufs, snr_db, speech_span
from pipeline.quality.vad import speech_probs
from pipeline.stage import Stage


def vad_signals(audio: np.ndarray, rate: int, threshold: float) -> dict[str, float | None]:
    """Every signal measured on one clip's 16 kHz samples."""
    probs = speech_probs(audio)
    speech = probs >= threshold
    ratio, leading, trailing = speech_span(speech, rate)
    return {
        SPEECH_RATIO: ratio,
        LEADING_SILENCE: leading,
        TRAILING_SILENCE: trailing,
        SNR: snr_db(frame_power(audio), speech, probs < min(PAUSE_PROB, threshold)),
        LOUDNESS: loudness_lufs(audio, rate),
    }


def measure_quality(batch: pa.Table, cfg: QualityConfig, audio: AudioConfig) -> pa.Table:
    """Stage: add ``snr_db``, ``speech_ratio``, ``leading_silence_s``, ``trailing_silence_s`` and
    ``loudness_lufs`` (null on quarantined rows)."""
    arrs = batch.column(ARR).to_numpy(zero_copy_only=False)
    errors = batch.column(ERROR).to_pylist()
    names = VAD_SIGNALS
    cols: dict[str, list[float | None]] = {n: [] for n in names}
    rate, threshold = audio.target_sample_rate, cfg.vad_threshold
    for arr, err in zip(arrs, errors, strict=True):
        got = {} if err is not None else vad_signals(np.asarray(arr, np.float32), rate, threshold)
        for n in names:
            cols[n].append(got.get(n))
    for n in names:
        batch = batch.append_column(n, pa.array(cols[n], pa.float64()))
    return batch


class DnsmosScorer:
    """Actor stage: DNSMOS of every healthy row, its two ONNX sessions loaded once, onnxruntime bounded
    to the CPUs the actor was given."""

    def __init__(self, cfg: QualityConfig):
        from pipeline.quality.dnsmos import Dnsmos

        self.model = Dnsmos(threads=max(1, int(cfg.dnsmos_num_cpus)))

    def __call__(self, batch: pa.Table) -> pa.Table:
        arrs = batch.column(ARR).to_numpy(zero_copy_only=False)
        errors = batch.column(ERROR).to_pylist()
        healthy = [i for i, e in enumerate(errors) if e is None]
        scores = self.model.score([np.asarray(arrs[i], np.float32) for i in healthy])
        by_row = dict(zip(healthy, scores, strict=True))
        for name in DNSMOS:
            values = [by_row[i][name] if i in by_row else None for i in range(batch.num_rows)]
            batch = batch.append_column(name, pa.array(values, pa.float64()))
        return batch


def stages(cfg: CurationConfig) -> list[Stage]:
    """How each clip sounds, measured on its 16 kHz samples before Whisper drops them."""
    q, out = cfg.quality, []
    if q.enabled:
        # Plain tasks shaped like decode's, so Ray Data fuses the two: no extra hop for the samples.
        out.append(
            Stage(
                "quality",
                reads=(ARR, ERROR),
                writes=VAD_SIGNALS,
                call=functools.partial(measure_quality, cfg=q, audio=cfg.audio),
                batch_size=cfg.audio.decode_batch_size,
                num_cpus=cfg.audio.decode_num_cpus,
            )
        )
    if q.dnsmos:
        out.append(
            Stage(
                "dnsmos",
                reads=(ARR, ERROR),
                writes=DNSMOS,
                call=DnsmosScorer,
                setup=(q,),
                batch_size=q.dnsmos_batch_size,
                actors=q.dnsmos_actors,
                num_cpus=q.dnsmos_num_cpus,
            )
        )
    return out
