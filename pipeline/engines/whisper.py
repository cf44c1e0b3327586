"""The batched CTranslate2 Whisper engine (faster-whisper's model, our batching), apart from the Ray
Data stages that call it (``pipeline/stages/transcribe.py``), so it runs and is tested without Ray.

Clips up to 30 s share one encoder pass per batch; longer clips, and decodes that look failed, go
through faster-whisper's own per-clip ``transcribe`` (chunks over 30 s, beam search, never sampling).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.commonvoice.languages import decodable

log = logging.getLogger(__name__)

# Whisper hears 16 kHz mono: its feature extractor and its 30 s window are defined at this rate.
SAMPLE_RATE = 16_000
# faster-whisper's ``transcribe`` handles one clip at a time (encoder, then a decode loop).  Common
# Voice clips are 2-10 s, so batching them amortises the per-call overhead and turns the decoder's
# matrix-vector products into matrix products.  Clips over 30 s and batched outputs that look like a
# failed decode (a repetition loop, a very low log-probability) go through ``transcribe`` itself,
# which chunks long audio and searches a beam, so batching never costs a clip.
WINDOW_FRAMES = 3000  # Whisper's 30 s window in mel frames
FRAMES_PER_S = 100

# faster-whisper's own thresholds for a failed decode (compression ratio, mean log-probability).
MAX_COMPRESSION_RATIO = 2.4
MIN_AVG_LOGPROB = -1.0
# A decode that looks failed is tried again with beam search at temperature 0 (faster-whisper's default
# beam), never sampled: faster-whisper's temperature fallback samples from CTranslate2's unseeded
# generator, so such a clip read differently on every run (espeak's Cantonese: four runs, four texts).
FALLBACK_BEAM = 5


@dataclass
class Transcript:
    """One clip's text with Whisper's own confidence, as Whisper's decoding rules read it."""

    text: str
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float | None = None
    detected_language: str | None = None  # what a multilingual model hears; None for an English-only one
    detected_language_prob: float | None = None

    def looks_failed(self) -> bool:
        """faster-whisper's own signs of a failed decode: a repetition loop or a very unsure one."""
        return (
            not self.text
            or (self.compression_ratio or 0.0) > MAX_COMPRESSION_RATIO
            or (self.avg_logprob is not None and self.avg_logprob < MIN_AVG_LOGPROB)
        )


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
        from faster_whisper.tokenizer import _LANGUAGE_CODES
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = WhisperModel(model_path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        self.beam_size = beam_size
        self.multilingual = self.model.model.is_multilingual
        tok = self.model.hf_tokenizer
        self.languages = frozenset(c for c in _LANGUAGE_CODES if tok.token_to_id(f"<|{c}|>") is not None)
        self.language = self.decodable(language)
        self.suppress = list(get_suppressed_tokens(self._tokenizer(self.language), [-1]))

    def decodable(self, language: str | None) -> str | None:
        """The language this checkpoint decodes ``language`` as (``checkpoint_language``)."""
        return checkpoint_language(language, self.languages) if self.multilingual else language

    @functools.cache  # noqa: B019 (one engine per actor; a handful of languages)
    def _tokenizer(self, language: str | None):
        from faster_whisper.tokenizer import Tokenizer

        # A multilingual tokenizer needs some language; every decode passes the one detected or forced.
        lang = (language or "en") if self.multilingual else None
        return Tokenizer(self.model.hf_tokenizer, self.multilingual, task="transcribe", language=lang)

    def _prompt(self, language: str | None) -> list[int]:
        return list(self.model.get_prompt(self._tokenizer(language), [], without_timestamps=True))

    def transcribe_one(
        self, audio: np.ndarray, language: str | None = None, beam_size: int = FALLBACK_BEAM
    ) -> Transcript:
        """faster-whisper's own path: chunks audio over 30 s; a beam (the batched decode's fallback) at
        temperature 0, so the same text every run."""
        from faster_whisper.transcribe import get_compression_ratio

        language = self.decodable(language) if self.multilingual else None
        segments, info = self.model.transcribe(
            audio,
            language=language,
            beam_size=beam_size,
            temperature=0.0,
            # Independent clips: no carried context, no VAD trimming, no timestamps.
            condition_on_previous_text=False,
            vad_filter=False,
            without_timestamps=True,
        )
        segments = list(segments)
        text = " ".join(s.text.strip() for s in segments).strip()
        heard, heard_p = (info.language, info.language_probability) if self.multilingual else (None, None)
        if self.multilingual and language:
            # Told the language, faster-whisper reports it back with p=1: ask what the model hears.
            heard, heard_p, _ = self.model.detect_language(audio)
        if not segments:
            return Transcript(text="", detected_language=heard)
        weights = [max(len(s.tokens), 1) for s in segments]
        return Transcript(
            text=text,
            avg_logprob=sum(s.avg_logprob * w for s, w in zip(segments, weights, strict=True)) / sum(weights),
            no_speech_prob=max(s.no_speech_prob for s in segments),
            compression_ratio=get_compression_ratio(text) if text else None,
            detected_language=heard,
            detected_language_prob=heard_p,
        )

    def transcribe(
        self,
        clips: Sequence[np.ndarray],
        batch_size: int = 8,
        sort: bool = True,
        min_window_s: float = 30.0,
        languages: Sequence[str | None] | None = None,
    ) -> list[Transcript]:
        """Transcripts in input order.

        ``sort`` groups similar durations into a batch.  ``min_window_s`` below 30 pads the mel only
        to the batch's longest clip or this many seconds, whichever is longer, instead of to 30 s.
        ``languages`` (one per clip, for multilingual models) is what each clip is decoded as; the
        language the model hears is reported apart, so a mismatch can be gated.
        """
        langs = [self.decodable(lang) for lang in languages] if languages is not None else [None] * len(clips)
        out: list[Transcript | None] = [None] * len(clips)
        short = [i for i, a in enumerate(clips) if len(a) <= SAMPLE_RATE * 30]
        if sort:
            short.sort(key=lambda i: len(clips[i]))
        for start in range(0, len(short), batch_size):
            idx = short[start : start + batch_size]
            got = self._batch([clips[i] for i in idx], [langs[i] for i in idx], min_window_s)
            for i, t in zip(idx, got, strict=True):
                out[i] = None if t.looks_failed() else t
        return [t if t is not None else self.transcribe_one(clips[i], langs[i]) for i, t in enumerate(out)]

    def _batch(self, clips: list[np.ndarray], langs: list[str | None], min_window_s: float) -> list[Transcript]:
        from faster_whisper.transcribe import get_compression_ratio

        # Without the STFT's last frame, as faster-whisper and Whisper itself feed the encoder.
        feats = [self.model.feature_extractor(a)[:, :-1] for a in clips]
        # The encoder halves the frame count with a stride-2 conv, so keep it even.
        longest = max(max(f.shape[-1] for f in feats), int(min_window_s * FRAMES_PER_S))
        frames = min(WINDOW_FRAMES, longest + longest % 2)
        x = np.stack([_pad_frames(f, frames) for f in feats]).astype(np.float32)
        encoded = self.model.encode(x)
        detected: list[tuple[str | None, float | None]] = [(None, None)] * len(clips)
        if self.multilingual:
            # What the model hears, from the same encoder output; decoding still uses the row's language.
            detected = [(r[0][0][2:-2], r[0][1]) for r in self.model.model.detect_language(encoded)]
            langs = [lang or det for lang, (det, _) in zip(langs, detected, strict=True)]
        results = self.model.model.generate(
            encoded,
            [self._prompt(lang or self.language) for lang in langs],
            beam_size=self.beam_size,
            max_length=self.model.max_length,
            suppress_blank=True,
            suppress_tokens=self.suppress,
            return_scores=True,
            return_no_speech_prob=True,
        )
        out = []
        eot = self._tokenizer(self.language).eot
        for r, lang, (det, det_p) in zip(results, langs, detected, strict=True):
            tokens = [t for t in r.sequences_ids[0] if t < eot]
            text = self._tokenizer(lang or self.language).decode(tokens).strip()
            seq_len = len(r.sequences_ids[0])
            out.append(
                Transcript(
                    text=text,
                    # faster-whisper's own definition: cumulative log-probability over length + 1.
                    avg_logprob=r.scores[0] * seq_len / (seq_len + 1),
                    no_speech_prob=r.no_speech_prob,
                    compression_ratio=get_compression_ratio(text) if text else None,
                    detected_language=det,
                    detected_language_prob=det_p,
                )
            )
        return out


def checkpoint_language(language: str | None, known: frozenset[str] | dict[str, int]) -> str | None:
    """What a multilingual checkpoint knowing ``known`` decodes ``language`` as (``languages.decodable``),
    said once in the log when that is not ``language`` itself.  Both engines call it on every row."""
    got = decodable(language, known)
    if got != language:
        _say_fallback(language, got)
    return got


@functools.cache
def _say_fallback(language: str | None, decoded_as: str | None) -> None:
    """Once per process and language: which language a checkpoint without ``language`` decodes instead."""
    log.warning(
        "this Whisper has no <|%s|> token: decoding it as %s", language, decoded_as or "the language it detects"
    )


def _pad_frames(feat: np.ndarray, frames: int) -> np.ndarray:
    if feat.shape[-1] >= frames:
        return feat[:, :frames]
    return np.pad(feat, ((0, 0), (0, frames - feat.shape[-1])))
