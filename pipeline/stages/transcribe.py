"""Whisper transcription behind one interface, two backends.

- ``ctranslate2``: faster-whisper in one actor stage, batched.  Clips over 30 s are transcribed
  window by window, so nothing is truncated.
- ``transformers``: the seed's path as three stages: log-mel features (CPU), ``generate`` (GPU in
  fp16, or CPU), token decoding (CPU).  It does not chunk, so clips over 30 s are quarantined.

Rows that already carry an ``error`` pass through untouched.  The output drops ``arr``.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa

from pipeline.columns import (
    ARR,
    AVG_LOGPROB,
    COMPRESSION_RATIO,
    CONFIDENCE,
    DETECTED_LANGUAGE,
    DETECTED_LANGUAGE_PROB,
    DURATION,
    ERROR,
    FEATURES,
    LOCALE,
    NO_SPEECH_PROB,
    STAGE,
    TOKENS,
    TRANSCRIPT,
)
from pipeline.commonvoice.languages import whisper_language
from pipeline.config import CurationConfig, TranscriberConfig
from pipeline.engines.whisper import SAMPLE_RATE, BatchedWhisper, Transcript
from pipeline.engines.windows import FULL_WINDOW_S, buckets, frames, window_s
from pipeline.stage import Stage

log = logging.getLogger(__name__)

# The stage that hands out the transcript (on the transformers backend, the last of three).
NAME = "transcribe"
FEATURES_STAGE = "features"
GENERATE_STAGE = "generate"


# What the transformers decoder measures on the GPU; the token decoder adds the compression ratio.
DECODER_CONFIDENCE = (AVG_LOGPROB, NO_SPEECH_PROB, DETECTED_LANGUAGE, DETECTED_LANGUAGE_PROB)


def _set_errors(batch: pa.Table, errors: list[str | None], stages: list[str | None]) -> pa.Table:
    batch = batch.set_column(batch.schema.get_field_index(ERROR), ERROR, pa.array(errors, pa.string()))
    return batch.set_column(batch.schema.get_field_index(STAGE), STAGE, pa.array(stages, pa.string()))


def _finish(
    batch: pa.Table, transcripts: list[Transcript], errors: list[str | None], stages: list[str | None]
) -> pa.Table:
    """Attach transcripts and Whisper's confidence.  An empty transcript is Whisper's own verdict that the clip
    holds no speech (its no-speech rule dropped every window): the gates reject it (``no_speech``), the judge
    leaves it unscored."""
    batch = _set_errors(batch, errors, stages)
    drop = [c for c in (ARR, FEATURES, TOKENS, *CONFIDENCE) if c in batch.schema.names]
    batch = batch.drop_columns(drop).append_column(TRANSCRIPT, pa.array([t.text for t in transcripts], pa.string()))
    for col in CONFIDENCE:
        typ = pa.string() if col == DETECTED_LANGUAGE else pa.float64()
        batch = batch.append_column(col, pa.array([getattr(t, col) for t in transcripts], typ))
    return batch


def row_languages(batch: pa.Table, cfg: TranscriberConfig) -> list[str | None]:
    """The language each row is decoded as: with ``force_language``, its Common Voice locale's (else the
    configured one); otherwise None, and a multilingual Whisper decodes the language it detects."""
    if not cfg.force_language:
        return [None] * batch.num_rows
    if LOCALE not in batch.schema.names:
        return [cfg.language] * batch.num_rows
    return [whisper_language(loc) or cfg.language for loc in batch.column(LOCALE).to_pylist()]


class FasterWhisperTranscriber:
    """Stage (actor): faster-whisper on CTranslate2, a whole batch of clips per encoder call.

    With ``cfg.batched`` the clips are sorted by duration, encoded together with the mel padded to
    the longest clip (at least ``cfg.min_window_s``), and decoded greedily as one batch; clips over
    30 s and failed-looking decodes take faster-whisper's own per-clip path (``pipeline/engines/whisper.py``).
    """

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        self.cfg = cfg
        self.engine = BatchedWhisper(
            model_path,
            device="cuda" if cfg.num_gpus_per_actor > 0 else "cpu",
            compute_type=cfg.compute_type,
            cpu_threads=cfg.cpu_threads,
            language=cfg.language,
            beam_size=cfg.beam_size,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column(ERROR).to_pylist()
        stages = batch.column(STAGE).to_pylist()
        arrs = batch.column(ARR)
        langs = row_languages(batch, self.cfg)
        out = [Transcript(text="") for _ in range(batch.num_rows)]
        todo = [i for i in range(batch.num_rows) if not errors[i]]
        clips = [arrs[i].values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False) for i in todo]
        if self.cfg.batched and clips:
            try:
                got = self.engine.transcribe(
                    clips, self.cfg.batch_size, min_window_s=self.cfg.min_window_s, languages=[langs[i] for i in todo]
                )
                for i, t in zip(todo, got, strict=True):
                    out[i] = t
                return _finish(batch, out, errors, stages)
            except Exception as exc:  # retried clip by clip below, so the bad clip gets its own error
                log.warning("batched transcription failed (%s: %s); retrying clip by clip", type(exc).__name__, exc)
        for i, audio in zip(todo, clips, strict=True):
            try:
                out[i] = self.engine.transcribe_one(audio, langs[i])
            except Exception as exc:  # one bad clip must not fail its whole batch
                errors[i], stages[i] = f"transcription failed: {type(exc).__name__}: {exc}", NAME
        return _finish(batch, out, errors, stages)


class WhisperFeatures:
    """Stage (CPU actor): log-mel features with the model's own processor, as the seed does."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from transformers import AutoFeatureExtractor

        self.feature_extractor = AutoFeatureExtractor.from_pretrained(model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column(ERROR).to_pylist()
        stages = batch.column(STAGE).to_pylist()
        durations = batch.column(DURATION).to_pylist()
        arrs = batch.column(ARR)
        clips = []
        for i in range(batch.num_rows):
            if not errors[i] and durations[i] > FULL_WINDOW_S:
                errors[i] = (
                    f"clip is {durations[i]:.1f} s, over Whisper's {FULL_WINDOW_S:.0f} s window; "
                    "the transformers backend does not chunk long audio (use backend=ctranslate2)"
                )
                stages[i] = FEATURES_STAGE
            ok = not errors[i]
            clips.append(arrs[i].values.to_numpy(zero_copy_only=False) if ok else np.zeros(SAMPLE_RATE, np.float32))
        feats = self.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        flat = pa.array(list(feats.astype(np.float32).reshape(len(clips), -1)), type=pa.list_(pa.float32()))
        batch = _set_errors(batch, errors, stages).drop_columns([ARR])
        return batch.append_column(FEATURES, flat)


class HFWhisperTranscriber:
    """Stage (GPU or CPU actor): ``engines/hf_whisper.py``'s Whisper on the features: token ids, and Whisper's
    own confidence (mean token log-probability, "no speech", the language it hears)."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from pipeline.engines.hf_whisper import HFWhisper

        self.cfg = cfg
        device = "cuda" if cfg.num_gpus_per_actor > 0 else "cpu"
        self.engine = HFWhisper(
            model_path,
            device,
            cfg.dtype,
            cfg.language,
            cfg.max_new_tokens,
            compile_encoder=cfg.compile_encoder,
            windows_s=self.windows_s(),
            decoder=cfg.decoder,
            compile_decoder=cfg.compile_decoder,
        )

    def windows_s(self) -> tuple[float, ...]:
        """The windows the compiled encoder warms up at start: 30 s, or with ``auto`` the smallest (most of
        Common Voice's 2-10 s clips).  A longer window compiles on its first batch, once per actor."""
        if self.cfg.window == 30:
            return (FULL_WINDOW_S,)
        return (window_s(0.0, self.cfg.window_margin_s, self.cfg.min_window_s),)

    def buckets(self, durations: list[float]) -> list[tuple[list[int], int]]:
        """Rows by encoder window: all in one at 30 s, or by duration with ``window: auto``."""
        if self.cfg.window == 30:
            return [(list(range(len(durations))), frames(FULL_WINDOW_S))]
        return buckets(durations, self.cfg.window_margin_s, self.cfg.min_window_s)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column(ERROR).to_pylist()
        langs = row_languages(batch, self.cfg)
        todo = [i for i, e in enumerate(errors) if not e]
        tokens: list[list[int]] = [[] for _ in errors]
        conf = {c: [None] * len(errors) for c in DECODER_CONFIDENCE}
        if todo:
            # Every row's features in one buffer, without a Python list per row: (rows, mels, 3,000 frames).
            feats = batch.column(FEATURES).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            feats = feats.reshape(batch.num_rows, self.engine.n_mels, -1)
            durations = batch.column(DURATION).to_pylist()
            for rows, n_frames in self.buckets([durations[i] for i in todo]):
                picked = [todo[k] for k in rows]
                got = self.engine.transcribe(feats[picked, :, :n_frames], [langs[i] for i in picked])
                for i, d in zip(picked, got, strict=True):
                    tokens[i] = d.tokens
                    conf[AVG_LOGPROB][i], conf[NO_SPEECH_PROB][i] = d.avg_logprob, d.no_speech_prob
                    conf[DETECTED_LANGUAGE][i], conf[DETECTED_LANGUAGE_PROB][i] = d.language, d.language_prob
        batch = batch.drop_columns([FEATURES]).append_column(TOKENS, pa.array(tokens, type=pa.list_(pa.int32())))
        for col, values in conf.items():
            typ = pa.string() if col == DETECTED_LANGUAGE else pa.float64()
            batch = batch.append_column(col, pa.array(values, typ))
        return batch


class WhisperTokenDecoder:
    """Stage (CPU actor): token ids to text, apart from ``generate`` so the GPU never waits on it."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        from faster_whisper.transcribe import get_compression_ratio

        errors = batch.column(ERROR).to_pylist()
        stages = batch.column(STAGE).to_pylist()
        token_ids = batch.column(TOKENS).to_pylist()
        texts = [t.strip() for t in self.processor.batch_decode(token_ids, skip_special_tokens=True)]
        conf = {c: batch.column(c).to_pylist() for c in DECODER_CONFIDENCE}
        out = [
            Transcript(
                text="" if errors[i] else t,
                compression_ratio=get_compression_ratio(t) if t and not errors[i] else None,
                **{c: v[i] for c, v in conf.items()},
            )
            for i, t in enumerate(texts)
        ]
        return _finish(batch, out, errors, stages)


def stages(cfg: CurationConfig, model_path: str) -> list[Stage]:
    """One actor stage on ctranslate2; features, ``generate`` and token decoding on transformers."""
    t = cfg.transcriber
    engine = dict(
        batch_size=t.batch_size,
        setup=(t, model_path),
        actors=t.num_actors,
        num_cpus=t.num_cpus_per_actor,
        num_gpus=t.num_gpus_per_actor,
        resources=t.resources or None,
    )
    if t.backend == "ctranslate2":
        return [
            Stage(
                NAME,
                reads=(ARR, ERROR, STAGE),
                writes=(TRANSCRIPT, *CONFIDENCE),
                drops=(ARR,),
                call=FasterWhisperTranscriber,
                counted=True,
                **engine,
            )
        ]
    return [
        Stage(
            FEATURES_STAGE,
            reads=(ARR, DURATION, ERROR, STAGE),
            writes=(FEATURES,),
            drops=(ARR,),
            call=WhisperFeatures,
            setup=(t, model_path),
            batch_size=t.feature_batch_size,
            actors=t.feature_actors,
        ),
        Stage(
            GENERATE_STAGE,
            reads=(FEATURES, DURATION, ERROR),
            writes=(TOKENS, *DECODER_CONFIDENCE),
            drops=(FEATURES,),
            call=HFWhisperTranscriber,
            **engine,
        ),
        Stage(
            NAME,
            reads=(TOKENS, ERROR, STAGE, *DECODER_CONFIDENCE),
            writes=(TRANSCRIPT, COMPRESSION_RATIO),
            drops=(TOKENS,),
            call=WhisperTokenDecoder,
            setup=(t, model_path),
            batch_size=t.decoder_batch_size,
            actors=t.decoder_actors,
            counted=True,
        ),
    ]
