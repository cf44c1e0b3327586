"""Whisper transcription behind one interface, two backends.

- ``ctranslate2``: faster-whisper in one actor stage, batched.  Clips over 30 s are transcribed
  window by window, so nothing is truncated.
- ``transformers``: the seed's path as three stages: log-mel features (CPU), ``generate`` (GPU in
  fp16, or CPU), token decoding (CPU).  It does not chunk, so clips over 30 s are quarantined.

Rows that already carry an ``error`` pass through untouched.  The output drops ``arr``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from pipeline.columns import ARR, DURATION, ERROR, FEATURES, STAGE, TOKENS, TRANSCRIPT
from pipeline.config import TranscriberConfig

log = logging.getLogger(__name__)

WHISPER_WINDOW_S = 30.0
SAMPLE_RATE = 16_000


def _set_errors(batch: pa.Table, errors: list[str], stages: list[str]) -> pa.Table:
    batch = batch.set_column(batch.schema.get_field_index(ERROR), ERROR, pa.array(errors, pa.string()))
    return batch.set_column(batch.schema.get_field_index(STAGE), STAGE, pa.array(stages, pa.string()))


def _finish(batch: pa.Table, texts: list[str], errors: list[str], stages: list[str]) -> pa.Table:
    """Attach transcripts; an empty transcript is a failure, not a row with nothing to judge."""
    for i, text in enumerate(texts):
        if not errors[i] and not text.strip():
            errors[i], stages[i] = "empty transcript", "transcribe"
    batch = _set_errors(batch, errors, stages)
    drop = [c for c in (ARR, FEATURES, TOKENS) if c in batch.schema.names]
    return batch.drop_columns(drop).append_column(TRANSCRIPT, pa.array(texts, pa.string()))


class FasterWhisperTranscriber:
    """Stage (actor): faster-whisper on CTranslate2, a whole batch of clips per encoder call.

    With ``cfg.batched`` the clips are sorted by duration, encoded together with the mel padded to
    the longest clip (at least ``cfg.min_window_s``), and decoded greedily as one batch; clips over
    30 s and failed-looking decodes take faster-whisper's own per-clip path (see ``BatchedWhisper`` below).
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
        errors = batch.column(ERROR).to_pylist()
        stages = batch.column(STAGE).to_pylist()
        durations = batch.column(DURATION).to_pylist()
        arrs = batch.column(ARR)
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
        batch = _set_errors(batch, errors, stages).drop_columns([ARR])
        return batch.append_column(FEATURES, flat)


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
        errors = batch.column(ERROR).to_pylist()
        todo = [i for i, e in enumerate(errors) if not e]
        tokens: list[list[int]] = [[] for _ in errors]
        if todo:
            feats = batch.column(FEATURES).take(pa.array(todo))
            flat = np.stack([f.values.to_numpy(zero_copy_only=False) for f in feats])
            x = self.torch.from_numpy(flat.reshape(len(todo), self.n_mels, -1)).to(self.device, self.dtype)
            with self.torch.inference_mode():
                out = self.model.generate(x, **self.gen_kwargs)
            for j, i in enumerate(todo):
                tokens[i] = out[j].cpu().tolist()
        batch = batch.drop_columns([FEATURES])
        return batch.append_column(TOKENS, pa.array(tokens, type=pa.list_(pa.int32())))


class WhisperTokenDecoder:
    """Stage (CPU actor): token ids to text, apart from ``generate`` so the GPU never waits on it."""

    def __init__(self, cfg: TranscriberConfig, model_path: str):
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(model_path)

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column(ERROR).to_pylist()
        stages = batch.column(STAGE).to_pylist()
        token_ids = batch.column(TOKENS).to_pylist()
        texts = [t.strip() for t in self.processor.batch_decode(token_ids, skip_special_tokens=True)]
        texts = ["" if errors[i] else t for i, t in enumerate(texts)]
        return _finish(batch, texts, errors, stages)


# ------------------------------------------------------------------ the batched CTranslate2 engine
# faster-whisper's ``transcribe`` handles one clip at a time (encoder, then a decode loop).  Common
# Voice clips are 2-10 s, so batching them amortises the per-call overhead and turns the decoder's
# matrix-vector products into matrix products.  Clips over 30 s and batched outputs that look like a
# failed decode (a repetition loop, a very low log-probability) go through ``transcribe`` itself,
# which chunks long audio and retries with temperature fallback, so batching never costs a clip.
WINDOW_FRAMES = 3000  # Whisper's 30 s window in mel frames
FRAMES_PER_S = 100
# faster-whisper's own thresholds for a failed decode (compression ratio, mean log-probability).
MAX_COMPRESSION_RATIO = 2.4
MIN_AVG_LOGPROB = -1.0


class BatchedWhisper:
    def __init__(
        self,
        model_path: str,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 2,
        language: str | None = "en",
        beam_size: int = 1,
    ):
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.language = language
        self.beam_size = beam_size
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer, multilingual, task="transcribe", language=language if multilingual else None
        )
        self.prompt = self.model.get_prompt(self.tokenizer, [], without_timestamps=True)
        self.suppress = list(get_suppressed_tokens(self.tokenizer, [-1]))
        self.can_batch = not multilingual or language is not None

    def transcribe_one(self, audio: np.ndarray) -> str:
        """faster-whisper's own path: chunks audio over 30 s, temperature fallback on failure."""
        segments, _ = self.model.transcribe(
            audio,
            language=self.language,
            beam_size=self.beam_size,
            # Independent clips: no carried context, no VAD trimming, no timestamps.
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        return " ".join(s.text.strip() for s in segments).strip()

    def transcribe(
        self, clips: Sequence[np.ndarray], batch_size: int = 8, sort: bool = True, min_window_s: float = 30.0
    ) -> list[str]:
        """Texts in input order.

        ``sort`` groups similar durations into a batch.  ``min_window_s`` below 30 pads the mel only
        to the batch's longest clip or this many seconds, whichever is longer, instead of to 30 s.
        """
        texts: list[str | None] = [None] * len(clips)
        short = [i for i, a in enumerate(clips) if len(a) <= SAMPLE_RATE * 30 and self.can_batch]
        if sort:
            short.sort(key=lambda i: len(clips[i]))
        for start in range(0, len(short), batch_size):
            idx = short[start : start + batch_size]
            for i, text in zip(idx, self._batch([clips[i] for i in idx], min_window_s), strict=True):
                texts[i] = text
        return [t if t is not None else self.transcribe_one(clips[i]) for i, t in enumerate(texts)]

    def _batch(self, clips: list[np.ndarray], min_window_s: float) -> list[str | None]:
        from faster_whisper.transcribe import get_compression_ratio

        feats = [self.model.feature_extractor(a) for a in clips]
        # The encoder halves the frame count with a stride-2 conv, so keep it even.
        longest = max(max(f.shape[-1] for f in feats), int(min_window_s * FRAMES_PER_S))
        frames = min(WINDOW_FRAMES, longest + longest % 2)
        x = np.stack([_pad_frames(f, frames) for f in feats]).astype(np.float32)
        encoded = self.model.encode(x)
        results = self.model.model.generate(
            encoded,
            [list(self.prompt) for _ in clips],
            beam_size=self.beam_size,
            max_length=self.model.max_length,
            suppress_blank=True,
            suppress_tokens=self.suppress,
            return_scores=True,
        )
        out: list[str | None] = []
        for r in results:
            tokens = [t for t in r.sequences_ids[0] if t < self.tokenizer.eot]
            text = self.tokenizer.decode(tokens).strip()
            avg_logprob = r.scores[0] * len(r.sequences_ids[0]) / (len(r.sequences_ids[0]) + 1)
            failed = get_compression_ratio(text) > MAX_COMPRESSION_RATIO or avg_logprob < MIN_AVG_LOGPROB
            out.append(None if failed or not text else text)
        return out


def _pad_frames(feat: np.ndarray, frames: int) -> np.ndarray:
    if feat.shape[-1] >= frames:
        return feat[:, :frames]
    return np.pad(feat, ((0, 0), (0, frames - feat.shape[-1])))
