"""Gates: decide, row by row, whether a transcribed clip is kept, and say why not.

Each gate is a small object with one job, datatrove's way: called on a row, it returns
``(keep, reason)``; ``reason`` is a machine-readable code.  ``apply_gates`` first measures agreement
with the prompted sentence (WER/CER), then runs every gate on every healthy row, so a rejected row
carries *all* its reasons, and marks ``kept`` when there are none.  Rows are never dropped here; the
sink counts kept and rejected rows per reason in one place (``reason_counts``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import (
    AGREEMENT_KEY,
    AVG_LOGPROB,
    BANDWIDTH,
    CER,
    CLIPPING,
    COMPRESSION_RATIO,
    CONFIDENCE,
    DETECTED_LANGUAGE,
    DETECTED_LANGUAGE_PROB,
    DNSMOS_OVRL,
    DURATION,
    ERROR,
    KEPT,
    LANGUAGE,
    LEGACY_LANGUAGE_PROB,
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

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str | np.ndarray]:
        """Which rows of ``t`` fail (a bool array) and their reason: one code, or a code per row."""
        ...

    def __call__(self, row: Row) -> Verdict: ...


# ------------------------------------------------------------------------------- columns as arrays


def _floats(t: pa.Table, column: str) -> np.ndarray:
    """``column`` as float64, NaN where null or absent (a null value passes every bound)."""
    if column not in t.column_names or pa.types.is_null(t.column(column).type):
        return np.full(t.num_rows, np.nan)
    return pc.fill_null(pc.cast(t.column(column), pa.float64()), np.nan).to_numpy()


def _text(t: pa.Table, column: str) -> pa.Array:
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


def _mask(a: pa.Array) -> np.ndarray:
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
        v = _floats(t, self.column)
        with np.errstate(invalid="ignore"):
            return (v > self.limit if self.upper else v < self.limit), self.code


@dataclass(frozen=True)
class ForScript(_RowCall):
    """``gate`` applied only to rows whose language is written with (``spaced``) or without word spaces:
    WER means nothing where a "word" is a whole phrase, so those rows are gated on CER instead."""

    gate: Gate
    spaced: bool
    default: str | None

    @property
    def code(self) -> str:
        return self.gate.code

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str | np.ndarray]:
        rule = lambda loc: unspaced(whisper_language(loc) or self.default) != self.spaced  # noqa: E731
        mask, code = self.gate.fails(t)
        return mask & _mask(_per_value(_text(t, LOCALE), rule, pa.bool_())), code


@dataclass(frozen=True)
class NoSpeech(_RowCall):
    """Whisper's own silence rule: "no speech" is likely *and* the decode is unsure."""

    prob: float
    logprob: float
    code: str = "no_speech"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        p, lp = _floats(t, NO_SPEECH_PROB), _floats(t, AVG_LOGPROB)
        with np.errstate(invalid="ignore"):
            return (p > self.prob) & (np.isnan(lp) | (lp < self.logprob)), self.code


def clip_language(t: pa.Table, default: str | None) -> pa.Array:
    """Per row, the language the clip is curated as: its locale's (Whisper's code), else ``default``."""
    if LOCALE not in t.column_names:
        return pa.array([default] * t.num_rows, pa.string())
    return _per_value(_text(t, LOCALE), lambda loc: whisper_language(loc) or default, pa.string())


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
        heard, p = _text(t, DETECTED_LANGUAGE), _floats(t, DETECTED_LANGUAGE_PROB)
        expected = clip_language(t, self.default)
        with np.errstate(invalid="ignore"):
            unsure = p < self.min_prob
        mismatch = _mask(pc.not_equal(heard, expected)) & ~unsure  # a null on either side: no mismatch
        if self.agree_wer is None and self.agree_cer is None:
            return mismatch, self.code
        spaced = _mask(_per_value(expected, lambda lang: not unspaced(lang), pa.bool_()))
        no = np.zeros(t.num_rows, bool)
        with np.errstate(invalid="ignore"):  # an unmeasured WER/CER (NaN) is no evidence
            wer_ok = _floats(t, WER) <= self.agree_wer if self.agree_wer is not None else no
            cer_ok = _floats(t, CER) <= self.agree_cer if self.agree_cer is not None else no
        return mismatch & ~np.where(spaced, wer_ok, cer_ok), self.code


@dataclass(frozen=True)
class JudgeAtLeast(_RowCall):
    column: str
    threshold: float
    code: str = "judge_below"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        # A judged row without a value never gets here: the judge stage quarantines it.
        v = _floats(t, self.column)
        with np.errstate(invalid="ignore"):
            return np.isnan(v) | (v < self.threshold), self.code


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
        codes = _per_value(_text(t, "cv_status"), code, pa.string())
        return _mask(pc.is_valid(codes)), np.asarray(codes.to_pylist(), dtype=object)


@dataclass(frozen=True)
class NotReported(_RowCall):
    on: bool
    code: str = "sentence_reported"

    def fails(self, t: pa.Table) -> tuple[np.ndarray, str]:
        if not self.on or "sentence_reported" not in t.column_names:
            return np.zeros(t.num_rows, bool), self.code
        return _mask(pc.cast(t.column("sentence_reported"), pa.bool_())), self.code


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
        LanguageMismatch(cfg.transcriber.language, g.min_language_prob, g.language_agree_wer, g.language_agree_cer),
        *quality_gates(cfg),
        *([JudgeAtLeast(cfg.threshold_on, cfg.threshold)] if cfg.judge.enabled else []),
    ]
    return gates


def reasons_of(t: pa.Table, gates: Sequence[Gate]) -> pa.ListArray:
    """Per row of ``t``: the codes of every gate it fails, in the gates' order, each once (empty: keep it).

    Columnar: each gate marks its failing rows over the whole table; the rows' lists are cut from the
    marks in one pass, so a release of millions of rows is decided without a Python loop over rows.
    """
    n = t.num_rows
    if not gates or n == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], pa.string()))
    verdicts = [g.fails(t) for g in gates]
    masks = [m.copy() for m, _ in verdicts]
    codes = [c for _, c in verdicts]
    for j in range(len(gates)):  # a code an earlier gate gave is not given again
        for k in range(j):
            if isinstance(codes[j], str) and isinstance(codes[k], str) and codes[j] == codes[k]:
                masks[j] &= ~masks[k]
    failing = np.stack(masks, axis=1)
    rows, cols = np.nonzero(failing)  # row-major: each row's codes in the gates' order
    values = np.empty(len(rows), dtype=object)
    for j, code in enumerate(codes):
        picked = cols == j
        values[picked] = code if isinstance(code, str) else code[rows[picked]]
    offsets = np.concatenate([[0], np.cumsum(failing.sum(axis=1))]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.tolist(), pa.string()))


def failed_gates(row: Row, gates: Sequence[Gate]) -> list[str]:
    """The codes of every gate ``row`` fails (empty: keep it), each once."""
    return reasons_of(pa.Table.from_pylist([dict(row)]), gates)[0].as_py()


def measure_agreement(row: dict[str, Any], language: str | None, fold_diacritics: bool = False) -> None:
    """Set ``row``'s ``wer`` and ``cer`` against its prompted sentence, in its locale's language.  From the
    stored transcript and the newest sentence, so a re-decision measures with today's settings."""
    lang = whisper_language(row.get(LOCALE)) or language
    row[WER], row[CER] = agreement(row.get(SENTENCE), row.get(TRANSCRIPT) or "", lang, fold_diacritics)


def agreement_columns(
    t: pa.Table, language: str | None, fold_diacritics: bool = False, only: np.ndarray | None = None
) -> tuple[pa.Array, pa.Array]:
    """(wer, cer) of every row of ``t`` against its sentence; with ``only`` (a mask), measured for those rows
    and taken from ``t``'s stored ``wer``/``cer`` for the rest (nothing they depend on changed)."""
    n = t.num_rows
    wer, cer = _floats(t, WER).copy(), _floats(t, CER).copy()
    todo = np.ones(n, bool) if only is None else only
    if todo.any():
        idx = np.flatnonzero(todo)
        sub = t.take(pa.array(idx)).select([c for c in (LOCALE, SENTENCE, TRANSCRIPT) if c in t.column_names])
        for i, row in zip(idx, sub.to_pylist(), strict=True):
            lang = whisper_language(row.get(LOCALE)) or language
            w, c = agreement(row.get(SENTENCE), row.get(TRANSCRIPT) or "", lang, fold_diacritics)
            wer[i], cer[i] = (np.nan if w is None else w), (np.nan if c is None else c)
    return pa.array(wer, pa.float64(), mask=np.isnan(wer)), pa.array(cer, pa.float64(), mask=np.isnan(cer))


def decide_table(
    t: pa.Table,
    gates: Sequence[Gate],
    unscored_gates: Sequence[Gate],
    language: str | None,
    fold_diacritics: bool,
    agreement_key: str,
) -> pa.Table:
    """Table rows decided again by today's gates (the plan's re-decision; ``pipeline.table.plan``).

    A quarantined row is not kept and has no reasons.  A row the engines never scored is not kept, with
    Common Voice's own verdicts (``unscored_gates``) or ``not_scored``.  A scored row gets every gate on
    its stored scores.  Its WER/CER are measured again only where what they depend on changed: the
    sentence (``_old_sentence``, when the plan gives it) or the normaliser's settings (``agreement_key``).
    """
    n = t.num_rows
    t = _legacy_detection(t)
    quarantined = pc.is_valid(t.column(ERROR)).to_numpy(zero_copy_only=False) if ERROR in t.column_names else None
    quarantined = np.zeros(n, bool) if quarantined is None else quarantined
    # A release's own row (an unscored clip's) has no engine_key column at all: never scored.
    keyed = np.zeros(n, bool)
    if "engine_key" in t.column_names:
        keyed = pc.is_valid(t.column("engine_key")).to_numpy(zero_copy_only=False)
    scored, unscored = ~quarantined & keyed, ~quarantined & ~keyed
    remeasure = scored & ~_mask(pc.equal(_text(t, AGREEMENT_KEY), agreement_key))
    if "_old_sentence" in t.column_names:
        same = pc.or_(
            pc.equal(_text(t, SENTENCE), _text(t, "_old_sentence")),
            pc.and_(pc.is_null(_text(t, SENTENCE)), pc.is_null(_text(t, "_old_sentence"))),
        )
        remeasure |= scored & ~_mask(same)
    wer, cer = agreement_columns(t, language, fold_diacritics, only=remeasure)
    t = _column(_column(t, WER, wer), CER, cer)
    on = pa.array(scored)
    empty = pa.array([[]] * n, pa.list_(pa.string()))
    never = pa.array([["not_scored"]] * n, pa.list_(pa.string()))
    cv = reasons_of(t, unscored_gates)
    cv = pc.if_else(pc.equal(pc.list_value_length(cv), 0), never, cv)
    reasons = pc.if_else(on, reasons_of(t, gates), pc.if_else(pa.array(unscored), cv, empty))
    t = _column(t, REASONS, reasons)
    t = _column(t, KEPT, pc.and_(on, pc.equal(pc.list_value_length(reasons), 0)))
    stored = t.column(AGREEMENT_KEY) if AGREEMENT_KEY in t.column_names else pa.nulls(n, pa.string())
    t = _column(t, LANGUAGE, clip_language(t, language))
    return _column(t, AGREEMENT_KEY, pc.if_else(on, pa.scalar(agreement_key), stored))


def _legacy_detection(t: pa.Table) -> pa.Table:
    """A row of a table written before ``detected_language`` held the detection in ``language`` (with
    ``language_prob``): moved to where it belongs, so the language gate still reads it."""
    if LEGACY_LANGUAGE_PROB not in t.column_names or LANGUAGE not in t.column_names:
        return t
    n = t.num_rows
    detected = t.column(DETECTED_LANGUAGE) if DETECTED_LANGUAGE in t.column_names else pa.nulls(n, pa.string())
    prob = t.column(DETECTED_LANGUAGE_PROB) if DETECTED_LANGUAGE_PROB in t.column_names else pa.nulls(n, pa.float64())
    old = pc.and_(pc.is_valid(t.column(LEGACY_LANGUAGE_PROB)), pc.is_null(detected))
    t = _column(t, DETECTED_LANGUAGE, pc.if_else(old, pc.cast(t.column(LANGUAGE), pa.string()), detected))
    t = _column(t, DETECTED_LANGUAGE_PROB, pc.if_else(old, pc.cast(t.column(LEGACY_LANGUAGE_PROB), pa.float64()), prob))
    return _column(t, LEGACY_LANGUAGE_PROB, pa.nulls(n, t.schema.field(LEGACY_LANGUAGE_PROB).type))


def _column(t: pa.Table, name: str, values) -> pa.Table:
    if name in t.column_names:
        return t.set_column(t.schema.get_field_index(name), name, values)
    return t.append_column(name, values)


def decide_row(
    row: dict[str, Any], gates: Sequence[Gate], language: str | None, fold_diacritics: bool = False
) -> list[str]:
    """A scored row's agreement measured again, then every gate it fails."""
    measure_agreement(row, language, fold_diacritics)
    return failed_gates(row, gates)


def apply_gates(
    batch: pa.Table, gates: Sequence[Gate], language: str | None = "en", fold_diacritics: bool = False
) -> pa.Table:
    """Stage: add ``wer``, ``cer``, ``reasons`` and ``kept``.  Quarantined rows get no verdict."""
    healthy = pc.is_null(batch.column(ERROR)).to_numpy(zero_copy_only=False) if ERROR in batch.column_names else None
    if healthy is None:
        healthy = np.ones(batch.num_rows, bool)
    wer, cer = agreement_columns(batch, language, fold_diacritics, only=healthy)
    measured = batch.drop_columns([c for c in (WER, CER) if c in batch.column_names])
    measured = measured.append_column(WER, wer).append_column(CER, cer)
    ok = pa.array(healthy)
    reasons = pc.if_else(ok, reasons_of(measured, gates), pa.array([[]] * batch.num_rows, pa.list_(pa.string())))
    null = pa.nulls(batch.num_rows, pa.float64())
    out = (
        batch.append_column(WER, pc.if_else(ok, wer, null))
        .append_column(CER, pc.if_else(ok, cer, null))
        .append_column(REASONS, reasons)
        .append_column(KEPT, pc.and_(ok, pc.equal(pc.list_value_length(reasons), 0)))
    )
    return _column(out, LANGUAGE, clip_language(batch, language))


def reason_counts(reasons: pa.Array | pa.ChunkedArray) -> dict[str, int]:
    """Rejected rows per reason code, counted by Arrow (a row with two reasons counts under both)."""
    codes = pc.list_flatten(pc.cast(reasons, pa.list_(pa.string())))
    if len(codes) == 0:
        return {}
    return {c["values"]: c["counts"] for c in pc.value_counts(codes).to_pylist()}


def stage(cfg: CurationConfig, split: str | None = None) -> Stage:
    """Plain tasks: every gate ``build_gates`` makes of the config, on every row."""
    return Stage(
        NAME,
        reads=(ERROR, TRANSCRIPT, DURATION, SCORE, SCORE_EXPECTED, *CONFIDENCE),
        writes=(WER, CER, KEPT, REASONS, LANGUAGE),
        call=functools.partial(
            apply_gates,
            gates=build_gates(cfg, split),
            language=cfg.transcriber.language,
            fold_diacritics=cfg.gates.fold_diacritics,
        ),
        counted=True,
    )
