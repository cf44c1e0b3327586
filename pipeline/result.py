"""What a run reports, written and read as types: the tally of its rows, and per locale the snapshot it
committed to the dataset's table.

``Tally`` holds everything that adds up (row counts, audio seconds, score histograms, reject
reasons), and ``combine`` is the one place that adds tallies, whether they come from the write tasks
of one run or from the snapshots of many shards.  A ``LocaleResult`` is also stored, as properties,
in the snapshot it describes, so a launcher that only sees the catalog (a Ray Job) can read it back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.metrics import SCORE_CHOICES, expected_score_bins

FORMAT = "audio-curate/2"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Counts(_Model):
    in_: int = Field(0, alias="in")
    kept: int = 0
    rejected: int = 0
    quarantined: int = 0


class ScoreBin(_Model):
    lo: float
    hi: float
    count: int = 0
    kept: int = 0  # of ``count``, the rows kept


def _empty_bins() -> list[ScoreBin]:
    return [ScoreBin(lo=lo, hi=hi) for lo, hi, _ in expected_score_bins([])]


class Histogram(_Model):
    score: dict[str, int] = Field(default_factory=lambda: {str(k): 0 for k in SCORE_CHOICES})
    score_kept: dict[str, int] = Field(default_factory=lambda: {str(k): 0 for k in SCORE_CHOICES})
    score_expected: list[ScoreBin] = Field(default_factory=_empty_bins)


class Tally(_Model):
    """What adds up across files and shards."""

    counts: Counts = Field(default_factory=Counts)
    audio_seconds: float = 0.0
    histogram: Histogram = Field(default_factory=Histogram)
    # Rejected rows per gate code, and quarantined rows per stage (a row can fail several gates).
    reasons: dict[str, int] = Field(default_factory=dict)
    quarantined_by_stage: dict[str, int] = Field(default_factory=dict)
    # Quarantined rows per stage and reason (its numbers as N: ``quarantine_kind``), the commonest
    # ``KINDS_PER_STAGE`` of each stage; the rest under ``OTHER_KINDS``.
    quarantined_why: dict[str, dict[str, int]] = Field(default_factory=dict)
    # Judged rows' WER against the prompted sentence, binned (0..1 in tenths, then >1), and of them the
    # kept; the sum and count give the mean a night's trend compares.
    wer_bins: dict[str, int] = Field(default_factory=dict)
    wer_bins_kept: dict[str, int] = Field(default_factory=dict)
    wer_sum: float = 0.0
    wer_count: int = 0
    # Judged rows per bin of each acoustic signal (snr_db, speech_ratio, dnsmos_ovrl), and of them the
    # kept: signal -> bin -> rows.
    signal_bins: dict[str, dict[str, int]] = Field(default_factory=dict)
    signal_bins_kept: dict[str, dict[str, int]] = Field(default_factory=dict)

    @property
    def mean_wer(self) -> float | None:
        return self.wer_sum / self.wer_count if self.wer_count else None

    @property
    def kept_pct(self) -> float | None:
        return 100 * self.counts.kept / self.counts.in_ if self.counts.in_ else None


class DataFileInfo(_Model):
    """One data file a run added to a table: the card's "output file list"."""

    table: str
    path: str
    rows: int
    bytes: int


class ModelInfo(_Model):
    ref: str
    revision: str
    backend: str | None = None
    engine: str | None = None


class LocaleResult(_Model):
    """What one run did to one locale's dataset."""

    locale: str
    table: str
    audio_table: str
    # The Whisper the locale ran with (ref@revision), the language it was told, and whether Whisper
    # knows the locale's language ("whisper") or the agreement gates decided alone ("unsupported").
    transcriber: str | None = None
    language: str | None = None
    decoded_as: str | None = None  # the language it is decoded as when the Whisper lacks it (yue on base)
    language_check: str | None = None
    judge: str | None = None  # the judge's ref, or "off (judge.locales)" / "off (judge.enabled)": gates alone
    nothing_to_do: bool = False
    snapshot_id: int | None = None
    tag: str | None = None
    units: list[str] = Field(default_factory=list)  # the sources applied
    # added, rescored, updated, redecided, withdrawn, unchanged, held, not_selected, engine_rows, absent (of
    # engine_rows: not in their release, stored quarantined without the engines)
    changes: dict[str, int] = Field(default_factory=dict)
    tally: Tally = Field(default_factory=Tally)  # of the rows this run wrote
    files: list[DataFileInfo] = Field(default_factory=list)
    table_rows: int | None = None  # the table after the commit
    table_kept: int | None = None
    # Up to 50 rows this run did not keep, with what explains them (the artifact lists them).
    rejected: list[dict[str, Any]] = Field(default_factory=list)
    # Seconds per step: view (the release's TSVs), plan, engines, updates, commit, upkeep, count.
    timings: dict[str, float] = Field(default_factory=dict)
    # Per DAG stage, as the stage counted itself: rows in, rows out, rows it quarantined, and its busy
    # seconds summed over its workers (none for the judge, whose time is its engine's).
    stages: dict[str, dict[str, float]] = Field(default_factory=dict)


class RunResult(_Model):
    format: str = FORMAT
    run_id: str
    created_at: str
    output: str
    catalog: str  # its URI, without a password
    form: Literal["parquet", "common-voice"]
    split: str | None = None
    sources: list[str]
    notes: list[str] = Field(default_factory=list)
    locales: list[LocaleResult]
    wall_time_s: float
    models: dict[str, ModelInfo]
    config: dict[str, Any]
    hardware: dict[str, Any] | None = None
    shard: dict[str, Any] | None = None
    log: str | None = None  # the engines' log of the run, when it kept one

    @property
    def tally(self) -> Tally:
        return combine(r.tally for r in self.locales)

    @property
    def nothing_to_do(self) -> bool:
        return all(r.nothing_to_do for r in self.locales)


STAT_KEYS = ("in", "out", "quarantined", "seconds")


def add_stats(into: dict[str, dict[str, float]], stage: str, **values: float) -> None:
    """Add one batch's ``values`` (of ``STAT_KEYS``) to ``stage``'s totals in ``into``."""
    totals = into.setdefault(stage, dict.fromkeys(STAT_KEYS, 0))
    for key, value in values.items():
        totals[key] += value


def combine(tallies: Iterable[Tally]) -> Tally:
    """The sum of tallies: counts, audio seconds, and histograms bin by bin."""
    out = Tally()
    for t in tallies:
        for k in ("in_", "kept", "rejected", "quarantined"):
            setattr(out.counts, k, getattr(out.counts, k) + getattr(t.counts, k))
        out.audio_seconds += t.audio_seconds
        for field in ("score", "score_kept"):
            mine, theirs = getattr(out.histogram, field), getattr(t.histogram, field)
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for mine, theirs in zip(out.histogram.score_expected, t.histogram.score_expected, strict=True):
            mine.count += theirs.count
            mine.kept += theirs.kept
        out.wer_sum += t.wer_sum
        out.wer_count += t.wer_count
        for field in ("reasons", "quarantined_by_stage", "wer_bins", "wer_bins_kept"):
            mine, theirs = getattr(out, field), getattr(t, field)
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        for field in ("signal_bins", "signal_bins_kept", "quarantined_why"):
            for signal, bins in getattr(t, field).items():
                mine = getattr(out, field).setdefault(signal, {})
                for k, v in bins.items():
                    mine[k] = mine.get(k, 0) + v
    out.quarantined_why = {stage: commonest(kinds) for stage, kinds in out.quarantined_why.items()}
    return out


KINDS_PER_STAGE = 8
OTHER_KINDS = "other reasons"


def commonest(kinds: dict[str, int], keep: int = KINDS_PER_STAGE) -> dict[str, int]:
    """``kinds`` (reason -> rows), the ``keep`` commonest first, the rest summed under ``OTHER_KINDS``: a
    run's tally stays small however many kinds of damage its rows had."""
    ranked = sorted(kinds.items(), key=lambda kv: (kv[0] == OTHER_KINDS, -kv[1], kv[0]))
    out = dict(ranked[:keep])
    rest = sum(n for _, n in ranked[keep:])
    if rest:
        out[OTHER_KINDS] = out.get(OTHER_KINDS, 0) + rest
    return out
