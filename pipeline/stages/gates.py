"""Gates: decide, row by row, whether a transcribed clip is kept, and say why not.

Each gate is a small object with one job, datatrove's way: called on a row, it returns
``(keep, reason)``; ``reason`` is a machine-readable code.  ``apply_gates`` first measures agreement
with the prompted sentence (WER/CER), then runs every gate on every healthy row, so a rejected row
carries *all* its reasons, and marks ``kept`` when there are none.  Rows are never dropped here; the
sink counts kept and rejected rows per reason in one place (``reason_counts``).
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from pipeline.columns import (
    AVG_LOGPROB,
    BANDWIDTH,
    CER,
    CLIPPING,
    COMPRESSION_RATIO,
    CONFIDENCE,
    DNSMOS_OVRL,
    DURATION,
    ERROR,
    KEPT,
    LANGUAGE,
    LANGUAGE_PROB,
    LOCALE,
    LOUDNESS,
    NO_SPEECH_PROB,
    REASONS,
    SCORE,
    SCORE_EXPECTED,
    SENTENCE,
    SNR,
    SPEECH_RATIO,
    TRANSCRIPT,
    WER,
)
from pipeline.config import CurationConfig
from pipeline.languages import unspaced, whisper_language
from pipeline.metrics import agreement
from pipeline.stage import Stage

NAME = "gates"

Row = Mapping[str, Any]
Verdict = tuple[bool, str | None]


class Gate(Protocol):
    code: str

    def __call__(self, row: Row) -> Verdict: ...


@dataclass(frozen=True)
class Bound:
    """Rejects a row whose ``column`` is above ``limit`` (``upper``) or below it (a null value or a
    null limit passes: nothing to judge by, or the gate is off)."""

    column: str
    limit: float | None
    code: str
    upper: bool = True

    def __call__(self, row: Row) -> Verdict:
        value = row.get(self.column)
        if value is None or self.limit is None:
            return True, None
        outside = value > self.limit if self.upper else value < self.limit
        return (False, self.code) if outside else (True, None)


@dataclass(frozen=True)
class ForScript:
    """``gate`` applied only to rows whose language is written with (``spaced``) or without word spaces:
    WER means nothing where a "word" is a whole phrase, so those rows are gated on CER instead."""

    gate: Gate
    spaced: bool
    default: str | None

    @property
    def code(self) -> str:
        return self.gate.code

    def __call__(self, row: Row) -> Verdict:
        lang = whisper_language(row.get(LOCALE)) or self.default
        return self.gate(row) if unspaced(lang) != self.spaced else (True, None)


@dataclass(frozen=True)
class NoSpeech:
    """Whisper's own silence rule: "no speech" is likely *and* the decode is unsure."""

    prob: float
    logprob: float
    code: str = "no_speech"

    def __call__(self, row: Row) -> Verdict:
        p, lp = row.get(NO_SPEECH_PROB), row.get(AVG_LOGPROB)
        silent = p is not None and p > self.prob and (lp is None or lp < self.logprob)
        return (False, self.code) if silent else (True, None)


@dataclass(frozen=True)
class LanguageMismatch:
    """A multilingual model heard, with confidence, another language than the row's locale says."""

    default: str | None
    min_prob: float
    code: str = "language_mismatch"

    def __call__(self, row: Row) -> Verdict:
        heard, p = row.get(LANGUAGE), row.get(LANGUAGE_PROB)
        expected = whisper_language(row.get(LOCALE)) or self.default
        if heard is None or expected is None or heard == expected or (p is not None and p < self.min_prob):
            return True, None
        return False, self.code


@dataclass(frozen=True)
class JudgeAtLeast:
    column: str
    threshold: float
    code: str = "judge_below"

    def __call__(self, row: Row) -> Verdict:
        value = row.get(self.column)
        # A judged row without a value never gets here: the judge stage quarantines it.
        return (True, None) if value is not None and float(value) >= self.threshold else (False, self.code)


# Common Voice's statuses, and the code a row gets when its status is not one the run keeps.
CV_STATUS_CODES = {"invalidated": "cv_invalidated", "other": "cv_not_validated", "deleted": "cv_deleted"}


def kept_statuses(split: str | None, configured: list[str] | None) -> frozenset[str]:
    """The statuses a kept clip may have: configured, else what the curated split implies."""
    if configured is not None:
        return frozenset(configured)
    implied = {"other": ("validated", "other"), "invalidated": ("validated", "other", "invalidated")}
    return frozenset(implied.get(split or "validated", ("validated",)))


@dataclass(frozen=True)
class CvStatus:
    """Common Voice's own verdict, as of the latest release listing the clip (null: not from a release)."""

    allowed: frozenset[str]

    @property
    def code(self) -> str:
        return "cv_status"

    def __call__(self, row: Row) -> Verdict:
        status = row.get("cv_status")
        if status is None or status in self.allowed:
            return True, None
        return False, CV_STATUS_CODES.get(status, f"cv_{status}")


@dataclass(frozen=True)
class NotReported:
    on: bool
    code: str = "sentence_reported"

    def __call__(self, row: Row) -> Verdict:
        return (False, self.code) if self.on and row.get("sentence_reported") else (True, None)


def metadata_gates(cfg: CurationConfig, split: str | None = None) -> list[Gate]:
    """The gates that need no engine: Common Voice's status and reported sentences.  They decide a row
    the engines never scored (a clip invalidated before anyone curated it)."""
    return [CvStatus(kept_statuses(split, cfg.gates.keep_cv_status)), NotReported(cfg.gates.exclude_reported)]


# Human names of the gates' reason codes, in the order the gates run: a new gate adds its line here,
# beside its place in build_gates (the summary, the artifacts and the console read this).
REASON_NAMES = {
    "wer_above": "transcript disagrees with the prompted sentence (WER)",
    "cer_above": "transcript disagrees with the prompted sentence (CER)",
    "no_speech": "no speech (Whisper's no-speech rule)",
    "hallucination": "repetition loop (compression ratio)",
    "low_logprob": "Whisper unsure (avg log-prob)",
    "too_short": "shorter than the minimum duration",
    "too_long": "longer than the maximum duration",
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
    ]


def build_gates(cfg: CurationConfig, split: str | None = None) -> list[Gate]:
    """Every gate the config turns on, in the order their reasons are listed."""
    g = cfg.gates
    gates: list[Gate] = [
        *metadata_gates(cfg, split),
        ForScript(Bound(WER, g.max_wer, "wer_above"), spaced=True, default=cfg.transcriber.language),
        ForScript(Bound(CER, g.max_cer, "cer_above"), spaced=True, default=cfg.transcriber.language),
        ForScript(Bound(CER, g.max_cer_unspaced, "cer_above"), spaced=False, default=cfg.transcriber.language),
        NoSpeech(g.no_speech_prob, g.no_speech_logprob),
        Bound(COMPRESSION_RATIO, g.max_compression_ratio, "hallucination"),
        Bound(AVG_LOGPROB, g.min_avg_logprob, "low_logprob", upper=False),
        Bound(DURATION, g.min_duration_s, "too_short", upper=False),
        Bound(DURATION, g.max_duration_s, "too_long"),
        LanguageMismatch(cfg.transcriber.language, g.min_language_prob),
        *quality_gates(cfg),
        *([JudgeAtLeast(cfg.threshold_on, cfg.threshold)] if cfg.judge.enabled else []),
    ]
    return gates


def judge_gates(row: Row, gates: Sequence[Gate]) -> list[str]:
    """The codes of every gate ``row`` fails (empty: keep it), each once."""
    return list(dict.fromkeys(reason for keep, reason in (gate(row) for gate in gates) if not keep and reason))


def measure_agreement(row: dict[str, Any], language: str | None, fold_diacritics: bool = False) -> None:
    """Set ``row``'s ``wer`` and ``cer`` against its prompted sentence, in its locale's language.  From the
    stored transcript and the newest sentence, so a re-decision measures with today's settings."""
    lang = whisper_language(row.get(LOCALE)) or language
    row[WER], row[CER] = agreement(row.get(SENTENCE), row.get(TRANSCRIPT) or "", lang, fold_diacritics)


def decide_row(
    row: dict[str, Any], gates: Sequence[Gate], language: str | None, fold_diacritics: bool = False
) -> list[str]:
    """A scored row's agreement measured again, then every gate it fails (the plan's re-decision)."""
    measure_agreement(row, language, fold_diacritics)
    return judge_gates(row, gates)


def apply_gates(
    batch: pa.Table, gates: Sequence[Gate], language: str | None = "en", fold_diacritics: bool = False
) -> pa.Table:
    """Stage: add ``wer``, ``cer``, ``reasons`` and ``kept``.  Quarantined rows get no verdict."""
    rows = batch.to_pylist()
    wers, cers, reasons, kept = [], [], [], []
    for row in rows:
        if row.get(ERROR) is not None:
            wers.append(None)
            cers.append(None)
            reasons.append([])
            kept.append(False)
            continue
        failed = decide_row(row, gates, language, fold_diacritics)
        wers.append(row[WER])
        cers.append(row[CER])
        reasons.append(failed)
        kept.append(not failed)
    return (
        batch.append_column(WER, pa.array(wers, pa.float64()))
        .append_column(CER, pa.array(cers, pa.float64()))
        .append_column(REASONS, pa.array(reasons, pa.list_(pa.string())))
        .append_column(KEPT, pa.array(kept, pa.bool_()))
    )


def reason_counts(reasons: Iterable[list[str] | None]) -> dict[str, int]:
    """Rejected rows per reason code (a row with two reasons counts under both)."""
    return dict(Counter(code for codes in reasons for code in (codes or [])))


def stage(cfg: CurationConfig, split: str | None = None) -> Stage:
    """Plain tasks: every gate ``build_gates`` makes of the config, on every row."""
    return Stage(
        NAME,
        reads=(ERROR, TRANSCRIPT, DURATION, SCORE, SCORE_EXPECTED, *CONFIDENCE),
        writes=(WER, CER, KEPT, REASONS),
        call=functools.partial(
            apply_gates,
            gates=build_gates(cfg, split),
            language=cfg.transcriber.language,
            fold_diacritics=cfg.gates.fold_diacritics,
        ),
        counted=True,
    )
