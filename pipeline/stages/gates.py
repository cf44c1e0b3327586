"""The gates stage: decide whether each transcribed clip is kept, and say why not.

``apply_gates`` first measures agreement with the prompted sentence (WER/CER), then runs every gate
(``gate_rules.py``) on every healthy row, so a rejected row carries *all* its reasons, and marks ``kept``
when there are none.  Rows are never dropped here; ``reason_counts`` counts them per reason for the sink.
``decide_table`` decides rows the plan re-decides without the engines, by the same gates.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import (
    AGREEMENT_KEY,
    CER,
    CONFIDENCE,
    DETECTED_LANGUAGE,
    DETECTED_LANGUAGE_PROB,
    DURATION,
    ERROR,
    KEPT,
    LANGUAGE,
    LEGACY_LANGUAGE_PROB,
    LOCALE,
    REASONS,
    SCORE,
    SCORE_EXPECTED,
    SENTENCE,
    STAGE,
    TRANSCRIPT,
    WER,
)
from pipeline.commonvoice.languages import written_as
from pipeline.config import CurationConfig
from pipeline.metrics import agreement
from pipeline.runtime.cores import map_chunks
from pipeline.stage import Stage
from pipeline.stages.gate_rules import Gate, Row, build_gates, clip_language, floats_of, text_of, true_mask

NAME = "gates"


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
    lang = written_as(row.get(LOCALE)) or language
    row[WER], row[CER] = agreement(row.get(SENTENCE), row.get(TRANSCRIPT) or "", lang, fold_diacritics)


# A plan's batch is measured in worker processes from this many distinct (language, sentence, transcript)
# triples; fewer are measured here, where starting the workers (about 2 s) would cost more than it saves.
PARALLEL_MIN = 20_000
CHUNK = 2_048


def _measure(triples: list[tuple[str | None, str | None, str | None]], fold: bool) -> list[tuple]:
    """(WER, CER) of each (language, sentence, transcript); module-level, so a worker process can run it."""
    return [agreement(sentence, transcript or "", lang, fold) for lang, sentence, transcript in triples]


def agreement_columns(
    t: pa.Table,
    language: str | None,
    fold_diacritics: bool = False,
    only: np.ndarray | None = None,
    processes: bool = False,
) -> tuple[pa.Array, pa.Array]:
    """(wer, cer) of every row of ``t`` against its sentence; with ``only`` (a mask), measured for those rows
    and taken from ``t``'s stored ``wer``/``cer`` for the rest (nothing they depend on changed).

    Each distinct (language, sentence, transcript) is measured once: a sentence is read by several
    speakers, and a clip read right is often transcribed alike.  Whisper's normaliser is Python, so with
    ``processes`` (the plan's decision, in the driver, measuring a whole table again under a new agreement
    key) a large batch is spread over the machine's cores (``runtime.cores``); a Ray stage never starts a pool."""
    n = t.num_rows
    wer, cer = floats_of(t, WER).copy(), floats_of(t, CER).copy()
    todo = np.ones(n, bool) if only is None else only
    if todo.any():
        idx = np.flatnonzero(todo)
        sub = t.take(pa.array(idx))
        lang_of = functools.cache(lambda loc: written_as(loc) or language)
        langs = [lang_of(loc) for loc in text_of(sub, LOCALE).to_pylist()]
        triples = list(
            zip(langs, text_of(sub, SENTENCE).to_pylist(), text_of(sub, TRANSCRIPT).to_pylist(), strict=True)
        )
        distinct = list(dict.fromkeys(triples))
        if not processes or len(distinct) < PARALLEL_MIN:
            measured = _measure(distinct, fold_diacritics)
        else:
            measured = map_chunks(_measure, distinct, CHUNK, fold_diacritics)
        values = np.array([(np.nan if w is None else w, np.nan if c is None else c) for w, c in measured], float)
        where = {key: i for i, key in enumerate(distinct)}
        pos = np.fromiter((where[key] for key in triples), np.int64, len(triples))
        wer[idx], cer[idx] = values[pos, 0], values[pos, 1]
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
    t = _legacy_empty_transcript(_legacy_detection(t))
    quarantined = pc.is_valid(t.column(ERROR)).to_numpy(zero_copy_only=False) if ERROR in t.column_names else None
    quarantined = np.zeros(n, bool) if quarantined is None else quarantined
    # A release's own row (an unscored clip's) has no engine_key column at all: never scored.
    keyed = np.zeros(n, bool)
    if "engine_key" in t.column_names:
        keyed = pc.is_valid(t.column("engine_key")).to_numpy(zero_copy_only=False)
    scored, unscored = ~quarantined & keyed, ~quarantined & ~keyed
    remeasure = scored & ~true_mask(pc.equal(text_of(t, AGREEMENT_KEY), agreement_key))
    if "_old_sentence" in t.column_names:
        same = pc.or_(
            pc.equal(text_of(t, SENTENCE), text_of(t, "_old_sentence")),
            pc.and_(pc.is_null(text_of(t, SENTENCE)), pc.is_null(text_of(t, "_old_sentence"))),
        )
        remeasure |= scored & ~true_mask(same)
    wer, cer = agreement_columns(t, language, fold_diacritics, only=remeasure, processes=True)
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


# What an empty transcript was stored as before the no-speech gate read it: a quarantined row.
LEGACY_EMPTY = "empty transcript"


def _legacy_empty_transcript(t: pa.Table) -> pa.Table:
    """A row stored quarantined for its empty transcript (before such a row was rejected as ``no_speech``):
    healthy again, so today's gates decide it from its stored signals, its WER measured (no agreement key)."""
    if ERROR not in t.column_names or STAGE not in t.column_names:
        return t
    old = true_mask(pc.and_(pc.equal(text_of(t, ERROR), LEGACY_EMPTY), pc.equal(text_of(t, STAGE), "transcribe")))
    if not old.any():
        return t
    keep = pa.array(~old)
    for col in (ERROR, STAGE, AGREEMENT_KEY):
        if col in t.column_names:
            t = _column(t, col, pc.if_else(keep, t.column(col), pa.scalar(None, t.schema.field(col).type)))
    return t


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
