"""Pure metrics: word error rate and score histograms. No engines here, so they unit-test fast."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

_PUNCT = re.compile(r"[^\w\s']")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> list[str]:
    """Lower-case, strip punctuation and accents, split hyphens: the usual WER normalisation."""
    text = unicodedata.normalize("NFKD", text or "")
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    text = text.replace("-", " ").replace("'", "")
    text = _PUNCT.sub(" ", text)
    return [w for w in _SPACES.split(text) if w]


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs: total edits / total reference words."""
    edits = words = 0
    for ref, hyp in pairs:
        r, h = normalize_text(ref), normalize_text(hyp)
        edits += edit_distance(r, h)
        words += len(r)
    if words == 0:
        raise ValueError("no reference words to compute WER against")
    return edits / words


SCORE_CHOICES = (1, 2, 3, 4, 5)


def score_histogram(scores: Iterable[int | None]) -> dict[int, int]:
    """Counts per judge score 1..5 (all five keys present, so charts line up across runs)."""
    counts = dict.fromkeys(SCORE_CHOICES, 0)
    for s in scores:
        if s is not None and int(s) in counts:
            counts[int(s)] += 1
    return counts


def expected_score_bins(values: Iterable[float | None], width: float = 0.5) -> list[tuple[float, float, int]]:
    """Bin ``score_expected`` (in [1, 5]) into [lo, hi) bins of ``width``; the last bin is closed."""
    n_bins = round((5 - 1) / width)
    edges = [1 + i * width for i in range(n_bins + 1)]
    counts = [0] * n_bins
    for v in values:
        if v is None:
            continue
        idx = min(int((float(v) - 1) / width), n_bins - 1)
        counts[max(idx, 0)] += 1
    return [(edges[i], edges[i + 1], counts[i]) for i in range(n_bins)]
