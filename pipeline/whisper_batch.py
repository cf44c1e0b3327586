"""Batched Whisper on CTranslate2: one encoder call and one greedy decode per batch of clips.

faster-whisper's ``transcribe`` handles one clip at a time (encoder, then a decode loop).  Common
Voice clips are 2-10 s, so batching them amortises the per-call overhead and turns the decoder's
matrix-vector products into matrix products.  Clips over 30 s and batched outputs that look like a
failed decode (a repetition loop, a very low log-probability) go through ``transcribe`` itself,
which chunks long audio and retries with temperature fallback, so batching never costs a clip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAMPLE_RATE = 16_000
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

    def transcribe_sequential(self, clips: Sequence[np.ndarray]) -> list[str]:
        return [self.transcribe_one(a) for a in clips]

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
