"""The manifest contract: what a committed output root says about itself, written and read as one type.

``Tally`` holds everything that adds up (row counts, audio seconds, score histograms, reject
reasons), and ``combine`` is the one place that adds tallies, whether they come from the files of
one run or from the manifests of many shards.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.metrics import SCORE_CHOICES, expected_score_bins

FORMAT = "audio-curate/1"
OutputKind = Literal["curated", "scores", "quarantine"]
KINDS: tuple[OutputKind, ...] = ("curated", "scores", "quarantine")


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


def _empty_bins() -> list[ScoreBin]:
    return [ScoreBin(lo=lo, hi=hi) for lo, hi, _ in expected_score_bins([])]


class Histogram(_Model):
    score: dict[str, int] = Field(default_factory=lambda: {str(k): 0 for k in SCORE_CHOICES})
    score_expected: list[ScoreBin] = Field(default_factory=_empty_bins)


class Tally(_Model):
    """What adds up across files and shards."""

    counts: Counts = Field(default_factory=Counts)
    audio_seconds: float = 0.0
    histogram: Histogram = Field(default_factory=Histogram)
    # Rejected rows per gate code, and quarantined rows per stage (a row can fail several gates).
    reasons: dict[str, int] = Field(default_factory=dict)
    quarantined_by_stage: dict[str, int] = Field(default_factory=dict)
    # Judged rows' WER against the prompted sentence, binned like score_expected (0..1 in tenths, then >1).
    wer_bins: dict[str, int] = Field(default_factory=dict)


class OutputFile(_Model):
    kind: OutputKind
    path: str  # relative to the output root
    rows: int
    bytes: int


class ModelInfo(_Model):
    ref: str
    revision: str
    backend: str | None = None
    engine: str | None = None


class Manifest(Tally):
    format: str = FORMAT
    run_id: str
    created_at: str
    source: str
    form: Literal["parquet", "common-voice"]
    inputs: list[str]
    split: str | None = None
    releases: list[dict[str, Any]] | None = None
    files: list[OutputFile]
    wall_time_s: float
    throughput: dict[str, float | None]
    models: dict[str, ModelInfo]
    config: dict[str, Any]
    # What the output answers (pipeline.shards.request_key): inputs, split and content settings.
    request_key: str | None = None
    hardware: dict[str, Any] | None = None  # detected CPU features and the settings they decided
    shard: dict[str, Any] | None = None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2, exclude_none=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls.model_validate_json(text)


def combine(tallies: Iterable[Tally]) -> Tally:
    """The sum of tallies: counts, audio seconds, and histograms bin by bin."""
    out = Tally()
    for t in tallies:
        for k in ("in_", "kept", "rejected", "quarantined"):
            setattr(out.counts, k, getattr(out.counts, k) + getattr(t.counts, k))
        out.audio_seconds += t.audio_seconds
        for k, v in t.histogram.score.items():
            out.histogram.score[k] = out.histogram.score.get(k, 0) + v
        for mine, theirs in zip(out.histogram.score_expected, t.histogram.score_expected, strict=True):
            mine.count += theirs.count
        for field in ("reasons", "quarantined_by_stage", "wer_bins"):
            mine, theirs = getattr(out, field), getattr(t, field)
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
    return out
