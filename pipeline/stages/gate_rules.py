"""The gates themselves: each a small object with one job, datatrove's way.  Called on a table of rows, a
gate says which rows it keeps; ``code`` is the machine-readable reason of those it does not.  Which gates a
config makes (``build_gates``), and a reason code's words for people (``REASON_NAMES``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import (
    AVG_LOGPROB,
    BANDWIDTH,
    CER,
    CLIPPING,
    COMPRESSION_RATIO,
    DETECTED_LANGUAGE,
    DETECTED_LANGUAGE_PROB,
    DNSMOS_OVRL,
    DROPOUTS,
    DURATION,
    LOCALE,
    LOUDNESS,
    NO_SPEECH_PROB,
    SENTENCE,
    SNR,
    SPEECH_RATIO,
    TRANSCRIPT,
    WER,
)
from pipeline.commonvoice.languages import by_characters, same_language, whisper_language, written_as
from pipeline.config import CurationConfig

Row = Mapping[str, Any]
Verdict = tuple[bool, str | None]


class Gate(Protocol):
    code: str

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str | np.ndarray]:
        """Which rows of ``t`` fail (a bool array) and their reason: one code, or a code per row."""
        ...

    def __call__(self, row: Row) -> Verdict: ...


# ------------------------------------------------------------------------------- columns as arrays


def floats_of(t: pa.Table, column: str) -> np.ndarray:
    """``column`` as float64, NaN where null or absent (a null value passes every bound)."""
    if column not in t.column_names or pa.types.is_null(t.column(column).type):
        return np.full(t.num_rows, np.nan)
    return pc.fill_null(pc.cast(t.column(column), pa.float64()), np.nan).to_numpy()


def text_of(t: pa.Table, column: str) -> pa.Array:
    """``column`` as a string array (all null where absent)."""
    if column not in t.column_names:
        return pa.nulls(t.num_rows, pa.string())
    return pc.cast(t.column(column), pa.string()).combine_chunks() if t.num_rows else pa.array([], pa.string())


def _per_value(col: pa.Array, value: Callable[[Any], Any], typ: pa.DataType) -> pa.Array:
    """``value(v)`` for each row's ``v`` in ``col``, computed once per distinct value (nulls too)."""
    enc = pc.dictionary_encode(col)
    mapped = pa.array([value(v) for v in enc.dictionary.to_pylist()], typ)
    out = pc.take(mapped, enc.indices)
    if enc.null_count:
        out = pc.if_else(pc.is_null(enc.indices), pa.scalar(value(None), typ), out)
    return out


def true_mask(a: pa.Array) -> np.ndarray:
    """A boolean Arrow array as numpy, null as False."""
    return pc.fill_null(a, False).to_numpy(zero_copy_only=False).astype(bool)


class _RowCall:
    """A gate called on one row: the same rule as on a table, on a table of that row."""

    def __call__(self, row: Row) -> Verdict:
        mask, code = self.fails(pa.Table.from_pylist([dict(row)]))  # type: ignore[attr-defined]
        if not mask[0]:
            return True, None
        return False, code if isinstance(code, str) else code[0]


# ----------------------------------------------------------------------------------------- gates


@dataclass(frozen=True)
class Bound(_RowCall):
    """Rejects a row whose ``column`` is above ``limit`` (``upper``) or below it (a null value or a
    null limit passes: nothing to judge by, or the gate is off)."""

    column: str
    limit: float | None
    code: str
    upper: bool = True

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        if self.limit is None:
            return np.zeros(t.num_rows, bool), self.code
        v = floats_of(t, self.column)
        with np.errstate(invalid="ignore"):
            return (v > self.limit if self.upper else v < self.limit), self.code


@dataclass(frozen=True)
class ForScript(_RowCall):
    """``gate`` applied only to rows whose agreement is gated on words (``in_words``), or only to those gated
    on characters (``languages.by_characters``): WER means nothing where a "word" is a whole phrase, and
    little where a Whisper's vowel signs vary, so those rows are gated on CER instead."""

    gate: Gate
    in_words: bool
    default: str | None

    @property
    def code(self) -> str:
        return self.gate.code

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str | np.ndarray]:
        rule = lambda loc: by_characters(written_as(loc) or self.default) != self.in_words  # noqa: E731
        mask, code = self.gate.fails(t)
        return mask & true_mask(_per_value(text_of(t, LOCALE), rule, pa.bool_())), code


@dataclass(frozen=True)
class BlankSentence(_RowCall):
    """A row whose prompted sentence is there but blank (no letter or digit in any script): agreement cannot
    be checked, and a trainer reading the sentence as the label would learn silence.  A null sentence (an
    input without sentences, such as a Parquet file with no ``sentence`` column) passes, as its null WER."""

    code: str = "no_sentence"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        sentence = text_of(t, SENTENCE)
        blank = pc.invert(pc.match_substring_regex(sentence, r"[\pL\pN]"))
        return true_mask(blank), self.code


@dataclass(frozen=True)
class Truncated(_RowCall):
    """The decoded audio is more than ``limit_s`` shorter than the release lists it (``duration_ms``, from
    clip_durations.tsv): a truncated or damaged file.  Rows without a listed duration pass."""

    limit_s: float | None
    code: str = "truncated"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        if self.limit_s is None:
            return np.zeros(t.num_rows, bool), self.code
        with np.errstate(invalid="ignore"):
            return floats_of(t, "duration_ms") / 1000 - floats_of(t, DURATION) > self.limit_s, self.code


@dataclass(frozen=True)
class NoSpeech(_RowCall):
    """Whisper's own silence rule: "no speech" is likely *and* the decode is unsure; or Whisper wrote nothing
    at all (that rule dropped every window: noise, music, a hiss)."""

    prob: float
    logprob: float
    code: str = "no_speech"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        p, lp = floats_of(t, NO_SPEECH_PROB), floats_of(t, AVG_LOGPROB)
        with np.errstate(invalid="ignore"):
            return blank_transcript(t) | ((p > self.prob) & (np.isnan(lp) | (lp < self.logprob))), self.code


def blank_transcript(t: pa.Table) -> np.ndarray:
    """Rows whose transcript is there and holds nothing but whitespace: Whisper heard no speech."""
    return true_mask(pc.equal(pc.utf8_trim_whitespace(text_of(t, TRANSCRIPT)), ""))


def clip_language(t: pa.Table, default: str | None) -> pa.Array:
    """Per row, the language the clip is curated as: its locale's (Whisper's code), else ``default``."""
    if LOCALE not in t.column_names:
        return pa.array([default] * t.num_rows, pa.string())
    return _per_value(text_of(t, LOCALE), lambda loc: whisper_language(loc) or default, pa.string())


@dataclass(frozen=True)
class LanguageMismatch(_RowCall):
    """A multilingual model heard, with confidence, another language than the row's locale says, and the
    transcript decoded in the locale's language does not agree with the prompted sentence.

    Agreement is evidence of the language: a telephone-band Spanish clip read word for word may still be
    heard as Hebrew, and detection alone would reject it.  Speech in another language forced through the
    locale's decoder does not come out as the prompted sentence, so it is still rejected.  The bound is
    ``agree_wer`` for languages written with spaces and ``agree_cer`` for the others (None: detection
    alone decides)."""

    default: str | None
    min_prob: float
    agree_wer: float | None = None
    agree_cer: float | None = None
    code: str = "language_mismatch"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        heard, p = text_of(t, DETECTED_LANGUAGE), floats_of(t, DETECTED_LANGUAGE_PROB)
        expected = clip_language(t, self.default)
        with np.errstate(invalid="ignore"):
            unsure = p < self.min_prob
        # Cantonese heard as Chinese, Urdu as Hindi, is no mismatch (``same_language``); nor is a null, nor a
        # clip in which Whisper heard no speech (its detection of noise is no language; ``no_speech`` says it).
        folded = [_per_value(a, same_language, pa.string()) for a in (heard, expected)]
        mismatch = true_mask(pc.not_equal(*folded)) & ~unsure & ~blank_transcript(t)
        if self.agree_wer is None and self.agree_cer is None:
            return mismatch, self.code
        in_words = true_mask(_per_value(expected, lambda lang: not by_characters(lang), pa.bool_()))
        no = np.zeros(t.num_rows, bool)
        with np.errstate(invalid="ignore"):  # an unmeasured WER/CER (NaN) is no evidence
            wer_ok = floats_of(t, WER) <= self.agree_wer if self.agree_wer is not None else no
            cer_ok = floats_of(t, CER) <= self.agree_cer if self.agree_cer is not None else no
        return mismatch & ~np.where(in_words, wer_ok, cer_ok), self.code


@dataclass(frozen=True)
class JudgeAtLeast(_RowCall):
    column: str
    threshold: float
    code: str = "judge_below"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        # A row of a judged locale without a value fails, but for a blank transcript, which the judge leaves
        # unscored (nothing was said; ``no_speech`` rejects it): a judge's failure is quarantined upstream.
        v = floats_of(t, self.column)
        with np.errstate(invalid="ignore"):
            return (np.isnan(v) & ~blank_transcript(t)) | (v < self.threshold), self.code


# Common Voice's statuses, and the code a row gets when its status is not one the run keeps.
CV_STATUS_CODES = {"invalidated": "cv_invalidated", "other": "cv_not_validated", "deleted": "cv_deleted"}


def kept_statuses(split: str | None, configured: list[str] | None) -> frozenset[str]:
    """The statuses a kept clip may have: configured, else what the curated split implies."""
    if configured is not None:
        return frozenset(configured)
    implied = {"other": ("validated", "other"), "invalidated": ("validated", "other", "invalidated")}
    return frozenset(implied.get(split or "validated", ("validated",)))


@dataclass(frozen=True)
class CvStatus(_RowCall):
    """Common Voice's own verdict, as of the latest release listing the clip (null: not from a release)."""

    allowed: frozenset[str]

    @property
    def code(self) -> str:
        return "cv_status"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        code = lambda v: None if v is None or v in self.allowed else CV_STATUS_CODES.get(v, f"cv_{v}")  # noqa: E731
        codes = _per_value(text_of(t, "cv_status"), code, pa.string())
        return true_mask(pc.is_valid(codes)), np.asarray(codes.to_pylist(), dtype=object)


@dataclass(frozen=True)
class NotReported(_RowCall):
    on: bool
    code: str = "sentence_reported"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        if not self.on or "sentence_reported" not in t.column_names:
            return np.zeros(t.num_rows, bool), self.code
        return true_mask(pc.cast(t.column("sentence_reported"), pa.bool_())), self.code


def metadata_gates(cfg: CurationConfig, split: str | None = None) -> list[Gate]:
    """The gates that need no engine: Common Voice's status and reported sentences.  They decide a row
    the engines never scored (a clip invalidated before anyone curated it)."""
    return [CvStatus(kept_statuses(split, cfg.gates.keep_cv_status)), NotReported(cfg.gates.exclude_reported)]


# Human names of the gates' reason codes, in the order the gates run: a new gate adds its line here,
# beside its place in build_gates (the summary, the artifacts and the console read this).
REASON_NAMES = {
    "wer_above": "transcript disagrees with the prompted sentence (WER)",
    "cer_above": "transcript disagrees with the prompted sentence (CER)",
    "no_sentence": "its prompted sentence is blank (nothing to check the transcript against)",
    "no_speech": "no speech (Whisper's no-speech rule)",
    "hallucination": "repetition loop (compression ratio)",
    "low_logprob": "Whisper unsure (avg log-prob)",
    "too_short": "shorter than the minimum duration",
    "too_long": "longer than the maximum duration",
    "truncated": "shorter than the release lists it (a truncated or damaged file)",
    "language_mismatch": "another language than the locale's",
    "judge_below": "judge score below the threshold",
    "cv_invalidated": "Common Voice moved it to invalidated",
    "cv_not_validated": "not validated by Common Voice's votes (other)",
    "cv_deleted": "gone from the newest full release (deleted)",
    "sentence_reported": "its sentence is in reported.tsv",
    "not_scored": "never through the engines (not in the curated split)",
    "noisy": "noisy (SNR below the minimum)",
    "clipped": "clipped at full scale",
    "mostly_silence": "mostly silence (speech ratio below the minimum)",
    "too_quiet": "too quiet (loudness below the minimum)",
    "low_mos": "poor overall quality (DNSMOS OVRL)",
    "narrow_band": "narrow band (telephone-like bandwidth)",
    "dropouts": "drops out mid-speech (digital silence inside a recording with a noise floor)",
}


def quality_gates(cfg: CurationConfig) -> list[Gate]:
    """How the clip sounds (docs/curation.md "Acoustic quality"); a signal that was not measured passes."""
    g = cfg.gates
    return [
        Bound(SNR, g.min_snr_db, "noisy", upper=False),
        Bound(CLIPPING, g.max_clipping_ratio, "clipped"),
        Bound(SPEECH_RATIO, g.min_speech_ratio, "mostly_silence", upper=False),
        Bound(LOUDNESS, g.min_loudness_lufs, "too_quiet", upper=False),
        Bound(DNSMOS_OVRL, g.min_dnsmos_ovrl, "low_mos", upper=False),
        Bound(BANDWIDTH, g.min_bandwidth_hz, "narrow_band", upper=False),
        Bound(DROPOUTS, g.max_dropouts, "dropouts"),
    ]


def build_gates(cfg: CurationConfig, split: str | None = None) -> list[Gate]:
    """Every gate the config turns on, in the order their reasons are listed."""
    g = cfg.gates
    gates: list[Gate] = [
        *metadata_gates(cfg, split),
        ForScript(Bound(WER, g.max_wer, "wer_above"), in_words=True, default=cfg.transcriber.language),
        ForScript(Bound(CER, g.max_cer, "cer_above"), in_words=True, default=cfg.transcriber.language),
        ForScript(Bound(CER, g.max_cer_unspaced, "cer_above"), in_words=False, default=cfg.transcriber.language),
        BlankSentence(),
        NoSpeech(g.no_speech_prob, g.no_speech_logprob),
        Bound(COMPRESSION_RATIO, g.max_compression_ratio, "hallucination"),
        Bound(AVG_LOGPROB, g.min_avg_logprob, "low_logprob", upper=False),
        Bound(DURATION, g.min_duration_s, "too_short", upper=False),
        Bound(DURATION, g.max_duration_s, "too_long"),
        Truncated(g.max_truncation_s),
        LanguageMismatch(cfg.transcriber.language, g.min_language_prob, g.language_agree_wer, g.language_agree_cer),
        *quality_gates(cfg),
        *([JudgeAtLeast(cfg.threshold_on, cfg.threshold)] if cfg.judge.enabled else []),
    ]
    return gates
