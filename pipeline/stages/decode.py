"""Decode any clip (FLAC, MP3, WAV, OGG; any rate; mono or stereo) to 16 kHz mono float32.

The signals only the original samples can tell (clipping at the rails, the bandwidth a resampler would
hide, and dropouts, whose digital silence the DC blocker and the resampler fill in) are measured here,
before resampling.
"""

from __future__ import annotations

import functools
import hashlib
import io

import numpy as np
import pyarrow as pa
import soundfile as sf
import soxr

from pipeline.columns import (
    ARR,
    AUDIO,
    AUDIO_SHA,
    AUDIO_SIZE,
    DURATION,
    ERROR,
    ID,
    NATIVE_SIGNALS,
    READ_ERROR,
    STAGE,
)
from pipeline.config import AudioConfig, CurationConfig, QualityConfig
from pipeline.quality.signals import bandwidth_hz, clipping_ratio, dropouts, remove_dc
from pipeline.stage import READ, Stage

NAME = "decode"

# Peak amplitude under which a clip counts as silence (about -80 dBFS).
SILENCE_PEAK = 1e-4


class DecodeError(ValueError):
    pass


# libsndfile's words for a stream too short to hold one frame, which only make sense for a path on disk;
# the bytes here never are one.
_MISREAD = {"File does not exist or is not a regular file (possibly a pipe?).": "no audio frame in it (truncated?)"}


def read_samples(data: bytes | None, cfg: AudioConfig) -> tuple[np.ndarray, int]:
    """One clip's bytes to mono float32 at its own rate; ``DecodeError`` with a reason."""
    if data is None:
        raise DecodeError("audio is null")
    if len(data) == 0:
        raise DecodeError("audio is empty (0 bytes)")
    if len(data) > cfg.max_clip_bytes:
        # Checked before decoding so a huge payload never expands into memory.
        raise DecodeError(f"audio is {len(data)} bytes, over max_clip_bytes={cfg.max_clip_bytes}")
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.frames > 0 and f.frames / f.samplerate > cfg.max_duration_s:
                raise DecodeError(f"audio is {f.frames / f.samplerate:.1f} s, over max_duration_s={cfg.max_duration_s}")
            audio = f.read(dtype="float32", always_2d=True)
            rate = f.samplerate
    except DecodeError:
        raise
    except Exception as exc:  # libsndfile raises several types for corrupt input
        # libsndfile's own words, not "Error opening <_io.BytesIO object at 0x…>": one reason per kind of
        # damage, the same on every row, so a night's quarantine groups by it.
        said = getattr(exc, "error_string", None) or str(exc)
        raise DecodeError(f"cannot decode audio: {_MISREAD.get(said, said)}") from None
    if audio.shape[0] == 0:
        raise DecodeError("audio has no samples")
    mono = downmix(audio)
    if not np.isfinite(mono).all():
        raise DecodeError("audio holds NaN or infinite samples")
    return mono, rate


# A downmix this far (20 dB) under its loudest channel means the channels cancel one another.
CANCELLED_POWER = 0.01


def downmix(audio: np.ndarray) -> np.ndarray:
    """(frames, channels) to mono: the channels' mean, or the loudest channel where the mean cancels it (a
    channel wired in opposite phase gives a stereo take whose mean is silence, though each channel speaks)."""
    if audio.shape[1] == 1:
        return audio[:, 0]
    mono = audio.mean(axis=1)
    power = np.square(audio, dtype=np.float64).mean(axis=0)
    loudest = int(np.argmax(power))
    if power[loudest] > 0 and float(np.square(mono, dtype=np.float64).mean()) < CANCELLED_POWER * power[loudest]:
        return np.ascontiguousarray(audio[:, loudest])
    return mono


def resampled(mono: np.ndarray, rate: int, cfg: AudioConfig) -> np.ndarray:
    """``mono`` at ``cfg.target_sample_rate``, its DC offset removed; ``DecodeError`` when it is silence.

    A cheap microphone's offset (0.02 of full scale is common) is no sound, but the pauses would measure it
    as the noise floor: 0.02 made a 46 dB clip ``noisy`` (13 dB).  Only the samples the stages hear lose
    it; the stored audio is the release's bytes."""
    if rate != cfg.target_sample_rate:
        mono = soxr.resample(mono, rate, cfg.target_sample_rate, quality="HQ")
    mono = remove_dc(mono, cfg.target_sample_rate)
    if float(np.abs(mono).max(initial=0.0)) < SILENCE_PEAK:
        raise DecodeError("audio is silent")
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_clip(data: bytes | None, cfg: AudioConfig) -> np.ndarray:
    """One clip's bytes to mono float32 at ``cfg.target_sample_rate``; ``DecodeError`` with a reason."""
    return resampled(*read_samples(data, cfg), cfg)


def native_signals(mono: np.ndarray, rate: int, cfg: QualityConfig) -> tuple[float | None, ...]:
    """The ``NATIVE_SIGNALS`` of the original samples, in that order.  Clipping is at the rails and dropouts
    are digital silence, so both read the samples as they are; the bandwidth reads them without their DC
    offset, whose power at 0 Hz would raise the spectrum's peak and so cut the band short (an offset of 0.3
    made 10.7 kHz of band read as 6.9)."""
    return (
        clipping_ratio(mono, cfg.clip_level, cfg.clip_min_run, cfg.clip_tolerance),
        bandwidth_hz(remove_dc(mono, rate), rate, cfg.bandwidth_floor_db),
        dropouts(mono, rate),
    )


def decode_audio(batch: pa.Table, cfg: AudioConfig, quality: QualityConfig | None = None) -> pa.Table:
    """Stage: add ``arr`` (16 kHz samples), ``duration_s``, the bytes' ``audio_sha256`` and ``audio_size``,
    ``error``/``stage`` for failures, and (``quality.enabled``) ``clipping_ratio``, ``bandwidth_hz`` and
    ``dropouts``."""
    ids = batch.column(ID).to_pylist()
    blobs = batch.column(AUDIO).to_pylist()
    # Set by the release reader for a TSV row whose clip is not in the release.
    read_errors = batch.column(READ_ERROR).to_pylist() if READ_ERROR in batch.schema.names else [None] * len(ids)
    measure = quality is not None and quality.enabled
    arrs, durations, errors, stages, shas, sizes = [], [], [], [], [], []
    native: dict[str, list[float | None]] = {name: [] for name in NATIVE_SIGNALS}
    for i, data in enumerate(blobs):
        err: str | None = None
        stage: str | None = NAME
        arr = np.zeros(0, dtype=np.float32)
        signals: tuple[float | None, ...] = (None,) * len(NATIVE_SIGNALS)
        if read_errors[i]:
            err, stage = read_errors[i], READ
        else:
            try:
                mono, rate = read_samples(data, cfg)
                arr = resampled(mono, rate, cfg)
                if measure:
                    signals = native_signals(mono, rate, quality)
            except DecodeError as exc:
                err = str(exc)
        for name, value in zip(NATIVE_SIGNALS, signals, strict=True):
            native[name].append(value)
        arrs.append(arr)
        durations.append(len(arr) / cfg.target_sample_rate)
        errors.append(err)
        stages.append(stage if err else None)
        shas.append(hashlib.sha256(data).hexdigest() if data else None)
        sizes.append(len(data) if data is not None else None)
    if READ_ERROR in batch.schema.names:
        batch = batch.drop_columns([READ_ERROR])
    if "duration_ms" in batch.schema.names:
        # Common Voice rows: clip_durations.tsv's figure, or the decoded length where it had none.
        given = batch.column("duration_ms").to_pylist()
        ms = [g if g is not None or not arrs[i].size else round(1000 * durations[i]) for i, g in enumerate(given)]
        batch = batch.set_column(batch.schema.get_field_index("duration_ms"), "duration_ms", pa.array(ms, pa.int64()))
    batch = (
        batch.append_column(ARR, pa.array(arrs, type=pa.list_(pa.float32())))
        .append_column(DURATION, pa.array(durations, pa.float64()))
        .append_column(ERROR, pa.array(errors, pa.string()))  # null: the row is healthy
        .append_column(STAGE, pa.array(stages, pa.string()))
        .append_column(AUDIO_SHA, pa.array(shas, pa.string()))
        .append_column(AUDIO_SIZE, pa.array(sizes, pa.int64()))
    )
    for name, values in native.items():
        batch = batch.append_column(name, pa.array(values, pa.float64()))
    return batch


def stage(cfg: CurationConfig) -> Stage:
    """Plain Ray tasks on CPU workers; ``measure_quality`` fuses into them."""
    return Stage(
        NAME,
        reads=(ID, AUDIO),
        writes=(ARR, DURATION, ERROR, STAGE, AUDIO_SHA, AUDIO_SIZE, *NATIVE_SIGNALS),
        drops=(READ_ERROR,),
        call=functools.partial(decode_audio, cfg=cfg.audio, quality=cfg.quality),
        batch_size=cfg.audio.decode_batch_size,
        num_cpus=cfg.audio.decode_num_cpus,
        counted=True,
    )
