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
from pipeline.config import CurationConfig, TranscriberConfig
from pipeline.engines.whisper import SAMPLE_RATE, BatchedWhisper, Transcript
from pipeline.languages import whisper_language
from pipeline.stage import Stage

log = logging.getLogger(__name__)

# The stage that hands out the transcript (on the transformers backend, the last of three).
NAME = "transcribe"
FEATURES_STAGE = "features"
GENERATE_STAGE = "generate"

WHISPER_WINDOW_S = 30.0


# What the transformers decoder measures on the GPU; the token decoder adds the compression ratio.
DECODER_CONFIDENCE = (AVG_LOGPROB, NO_SPEECH_PROB, DETECTED_LANGUAGE, DETECTED_LANGUAGE_PROB)


def _set_errors(batch: pa.Table, errors: list[str | None], stages: list[str | None]) -> pa.Table:
    batch = batch.set_column(batch.schema.get_field_index(ERROR), ERROR, pa.array(errors, pa.string()))
    return batch.set_column(batch.schema.get_field_index(STAGE), STAGE, pa.array(stages, pa.string()))


def _finish(
    batch: pa.Table, transcripts: list[Transcript], errors: list[str | None], stages: list[str | None]
) -> pa.Table:
    """Attach transcripts and Whisper's confidence; an empty transcript is quarantined (nothing to judge)."""
    for i, t in enumerate(transcripts):
        if not errors[i] and not t.text.strip():
            errors[i], stages[i] = "empty transcript", NAME
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
            if not errors[i] and durations[i] > WHISPER_WINDOW_S:
                errors[i] = (
                    f"clip is {durations[i]:.1f} s, over Whisper's {WHISPER_WINDOW_S:.0f} s window; "
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
    """Stage (GPU or CPU actor): ``AutoModelForSpeechSeq2Seq.generate`` on the features.

    Also Whisper's own confidence: the mean token log-probability from ``generate``'s scores, and,
    from one decoder step at the start-of-transcript token (as Whisper itself does), the probability
    of "no speech" and, for multilingual models, of each language.
    """

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
        self.multilingual = bool(getattr(gen, "is_multilingual", False))
        self.sot = self.model.config.decoder_start_token_id
        # Whisper's "no speech" token sits just before <|notimestamps|> in every checkpoint's vocabulary.
        self.no_speech = gen.no_timestamps_token_id - 1 if getattr(gen, "no_timestamps_token_id", None) else None
        lang_ids = getattr(gen, "lang_to_id", None) or {}
        self.lang_tokens = {tok[2:-2]: i for tok, i in lang_ids.items()} if self.multilingual else {}

    def _prompt(self, lang: str | None) -> list[int]:
        """The decoder prompt ``generate`` forces: <|startoftranscript|> [language, task] <|notimestamps|>."""
        gen = self.model.generation_config
        ids = [self.sot]
        if self.multilingual:
            ids += [gen.lang_to_id[f"<|{lang or self.cfg.language or 'en'}|>"], gen.task_to_id["transcribe"]]
        if getattr(gen, "no_timestamps_token_id", None) is not None:
            ids.append(gen.no_timestamps_token_id)
        return ids

    def _detect(self, encoded) -> list[str]:
        """The most likely language of each row, from the first decoder step after <|startoftranscript|>."""
        n = encoded.last_hidden_state.shape[0]
        ids = self.torch.full((n, 1), self.sot, dtype=self.torch.long, device=self.device)
        logits = self.model(encoder_outputs=encoded, decoder_input_ids=ids).logits[:, 0].float()
        names, token_ids = list(self.lang_tokens), list(self.lang_tokens.values())
        return [names[int(k)] for k in logits[:, token_ids].argmax(dim=-1).tolist()]

    def _generate(self, encoded, langs: list[str | None]):
        """Token ids of each row's text, neither prompt nor end of text (``generate``'s plain output)."""
        kwargs: dict = {"max_new_tokens": self.cfg.max_new_tokens}
        if self.multilingual:
            default = self.cfg.language or "en"
            kwargs.update(language=[lang or default for lang in langs], task="transcribe")
        # No return_dict_in_generate/output_scores: on an H200 they tripled generate's time at batch 16
        # and made it 9x at batch 64 (bench/gpu_check.py); one teacher-forced pass gives the same numbers.
        return self.model.generate(encoder_outputs=encoded, **kwargs)

    def _text_ids(self, row: list[int], prompt: list[int]) -> list[int]:
        """``row`` as ``generate`` returned it, without the prompt (some versions keep it) or padding."""
        gen = self.model.generation_config
        if row[: len(prompt)] == prompt:
            row = row[len(prompt) :]
        end = len(row)
        while end > 0 and row[end - 1] in (gen.eos_token_id, gen.pad_token_id):
            end -= 1
        return row[:end]

    def _score(self, encoded, sequences: list[list[int]], prompt_len: list[int]):
        """One decoder pass over prompt + text + end of text: each generated token's log-probability
        under Whisper's own token filters (as generate's normalised scores), and the raw odds of the
        first step after <|startoftranscript|> (no speech, language), as Whisper computes them."""
        torch = self.torch
        gen = self.model.generation_config
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), gen.pad_token_id, dtype=torch.long)
        for j, seq in enumerate(sequences):
            ids[j, : len(seq)] = torch.tensor(seq)
        ids = ids.to(self.device)
        logits = self.model(encoder_outputs=encoded, decoder_input_ids=ids[:, :-1]).logits.float()
        first = logits[:, 0].softmax(dim=-1)
        if gen.suppress_tokens:
            logits[..., list(gen.suppress_tokens)] = -float("inf")
        logprobs = []
        for j, seq in enumerate(sequences):
            p = prompt_len[j]
            step = logits[j, p - 1 : len(seq) - 1]
            if gen.begin_suppress_tokens:
                step[0, list(gen.begin_suppress_tokens)] = -float("inf")
            lp = step.log_softmax(dim=-1).gather(1, ids[j, p : len(seq)].unsqueeze(1)).squeeze(1)
            logprobs.append(lp[torch.isfinite(lp)])
        return logprobs, first

    def __call__(self, batch: pa.Table) -> pa.Table:
        errors = batch.column(ERROR).to_pylist()
        langs = row_languages(batch, self.cfg)
        todo = [i for i, e in enumerate(errors) if not e]
        tokens: list[list[int]] = [[] for _ in errors]
        conf = {c: [None] * len(errors) for c in DECODER_CONFIDENCE}
        if todo:
            feats = batch.column(FEATURES).take(pa.array(todo))
            flat = np.stack([f.values.to_numpy(zero_copy_only=False) for f in feats])
            x = self.torch.from_numpy(flat.reshape(len(todo), self.n_mels, -1)).to(self.device, self.dtype)
            eot = self.model.generation_config.eos_token_id
            row_langs = [langs[i] for i in todo]
            with self.torch.inference_mode():
                # The encoder is a large share of the cost on a GPU: run it once for both passes.
                encoded = self.model.get_encoder()(x)
                if self.lang_tokens and not all(row_langs):
                    # Not forced: decode the language the model hears (one decoder step, as Whisper does).
                    heard = self._detect(encoded)
                    row_langs = [lang or h for lang, h in zip(row_langs, heard, strict=True)]
                generated = self._generate(encoded, row_langs).cpu().tolist()
                prompts = [self._prompt(lang) for lang in row_langs]
                sequences, n_text = [], []
                for j, row in enumerate(generated):
                    text = self._text_ids(row, prompts[j])
                    # Stopped before the cap means it produced <|endoftext|>, which Whisper counts.
                    stop = [eot] if len(text) < self.cfg.max_new_tokens else []
                    sequences.append(prompts[j] + text + stop)
                    n_text.append(len(text))
                logprobs, probs = self._score(encoded, sequences, [len(p) for p in prompts])
            for j, i in enumerate(todo):
                tokens[i] = sequences[j]
                lp = logprobs[j]
                # Whisper's avg_logprob: summed over the text and <|endoftext|>, over len(text) + 1.
                conf[AVG_LOGPROB][i] = float(lp.sum()) / (n_text[j] + 1)
                if self.no_speech is not None:
                    conf[NO_SPEECH_PROB][i] = float(probs[j, self.no_speech])
                if self.lang_tokens:
                    ids = list(self.lang_tokens.values())
                    p = probs[j, ids]
                    best = int(p.argmax())
                    conf[DETECTED_LANGUAGE][i] = list(self.lang_tokens)[best]
                    conf[DETECTED_LANGUAGE_PROB][i] = float(p[best] / p.sum())
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
            reads=(FEATURES, ERROR),
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
