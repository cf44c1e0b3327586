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

from pipeline.config import TranscriberConfig

log = logging.getLogger(__name__)

WHISPER_WINDOW_S = 30.0
SAMPLE_RATE = 16_000


def _set_errors(batch: pa.Table, errors: list[str], stages: list[str]) -> pa.Table:
    batch = batch.set_column(batch.schema.get_field_index("error"), "error", pa.array(errors, pa.string()))
    return batch.set_column(batch.schema.get_field_index("stage"), "stage", pa.array(stages, pa.string()))


def _finish(batch: pa.Table, texts: list[str], errors: list[str], stages: list[str]) -> pa.Table:
    """Attach transcripts; an empty transcript is a failure, not a row with nothing to judge."""
    for i, text in enumerate(texts):
        if not errors[i] and not text.strip():
            errors[i], stages[i] = "empty transcript", "transcribe"
    batch = _set_errors(batch, errors, stages)
    drop = [c for c in ("arr", "input_features", "token_ids") if c in batch.schema.names]
    return batch.drop_columns(drop).append_column("transcription", pa.array(texts, pa.string()))


class FasterWhisperTranscriber:
    """Stage (actor): faster-whisper on CTranslate2, a whole batch of clips per encoder call.

    With ``cfg.batched`` the clips are sorted by duration, encoded together with the mel padded to
    the longest clip (at least ``cfg.min_window_s``), and decoded greedily as one batch; clips over
    30 s and failed-looking decodes take faster-whisper's own per-clip path (see ``whisper_batch``).
    """

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from pipeline.whisper_batch import BatchedWhisper

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
        errors = batch.column("error").to_pylist()
        stages = batch.column("stage").to_pylist()
        arrs = batch.column("arr")
        texts = [""] * batch.num_rows
        todo = [i for i in range(batch.num_rows) if not errors[i]]
        clips = [arrs[i].values.to_numpy(zero_copy_only=False).astype(np.float32, copy=False) for i in todo]
        if self.cfg.batched and clips:
            try:
                for i, text in zip(
                    todo,
                    self.engine.transcribe(clips, self.cfg.batch_size, min_window_s=self.cfg.min_window_s),
                    strict=True,
                ):
                    texts[i] = text
                return _finish(batch, texts, errors, stages)
            except Exception as exc:  # retried clip by clip below, so the bad clip gets its own error
                log.warning("batched transcription failed (%s: %s); retrying clip by clip", type(exc).__name__, exc)
        for i, audio in zip(todo, clips, strict=True):
            try:
                texts[i] = self.engine.transcribe_one(audio)
            except Exception as exc:  # one bad clip must not fail its whole batch
                errors[i], stages[i] = f"transcription failed: {type(exc).__name__}: {exc}", "transcribe"
        return _finish(batch, texts, errors, stages)


class WhisperFeatures:
    """Stage (CPU actor): log-mel features with the model's own processor, as the seed does."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column("error").to_pylist()
        stages = batch.column("stage").to_pylist()
        durations = batch.column("duration_s").to_pylist()
        arrs = batch.column("arr")
        clips = []
        for i in range(batch.num_rows):
            if not errors[i] and durations[i] > WHISPER_WINDOW_S:
                errors[i] = (
                    f"clip is {durations[i]:.1f} s, over Whisper's {WHISPER_WINDOW_S:.0f} s window; "
                    "the transformers backend does not chunk long audio (use backend=ctranslate2)"
                )
                stages[i] = "features"
            ok = not errors[i]
            clips.append(arrs[i].values.to_numpy(zero_copy_only=False) if ok else np.zeros(SAMPLE_RATE, np.float32))
        feats = self.processor.feature_extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features
        flat = pa.array(list(feats.astype(np.float32).reshape(len(clips), -1)), type=pa.list_(pa.float32()))
        batch = _set_errors(batch, errors, stages).drop_columns(["arr"])
        return batch.append_column("input_features", flat)


class HFWhisperTranscriber:
    """Stage (GPU or CPU actor): ``AutoModelForSpeechSeq2Seq.generate`` on the features."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        import torch
        from transformers import AutoModelForSpeechSeq2Seq

        self.torch = torch
        self.cfg = cfg
        self.device = "cuda" if cfg.num_gpus_per_actor > 0 else "cpu"
        self.dtype = getattr(torch, cfg.dtype)
        self.model = AutoModelForSpeechSeq2Seq.from_pretrained(model_path, dtype=self.dtype, low_cpu_mem_usage=True).to(
            self.device
        )
        self.model.eval()
        self.n_mels = self.model.config.num_mel_bins
        gen = self.model.generation_config
        self.gen_kwargs: dict = {"max_new_tokens": cfg.max_new_tokens}
        if getattr(gen, "is_multilingual", False) and cfg.language:
            self.gen_kwargs.update(language=cfg.language, task="transcribe")

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column("error").to_pylist()
        todo = [i for i, e in enumerate(errors) if not e]
        tokens: list[list[int]] = [[] for _ in errors]
        if todo:
            feats = batch.column("input_features").take(pa.array(todo))
            flat = np.stack([f.values.to_numpy(zero_copy_only=False) for f in feats])
            x = self.torch.from_numpy(flat.reshape(len(todo), self.n_mels, -1)).to(self.device, self.dtype)
            with self.torch.inference_mode():
                out = self.model.generate(x, **self.gen_kwargs)
            for j, i in enumerate(todo):
                tokens[i] = out[j].cpu().tolist()
        batch = batch.drop_columns(["input_features"])
        return batch.append_column("token_ids", pa.array(tokens, type=pa.list_(pa.int32())))


class WhisperTokenDecoder:
    """Stage (CPU actor): token ids to text, apart from ``generate`` so the GPU never waits on it."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column("error").to_pylist()
        stages = batch.column("stage").to_pylist()
        token_ids = batch.column("token_ids").to_pylist()
        texts = [t.strip() for t in self.processor.batch_decode(token_ids, skip_special_tokens=True)]
        texts = ["" if errors[i] else t for i, t in enumerate(texts)]
        return _finish(batch, texts, errors, stages)
