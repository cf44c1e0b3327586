"""Pure metrics: agreement with the prompt (WER/CER), score histograms.  No engines here."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable


@functools.cache
def _normalizer(english: bool) -> Callable[[str], str]:
    # Whisper's own normalizers (shipped with transformers): "1" vs "one", "Mr." vs "mister" and
    # punctuation are not errors.  No spelling map is bundled offline, so British spellings still count.
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer, EnglishTextNormalizer

    return EnglishTextNormalizer({}) if english else BasicTextNormalizer()


def is_english(language: str | None) -> bool:
    return language is None or language.lower().split("-")[0] == "en"


def normalize_text(text: str, language: str | None = "en") -> list[str]:
    """Whisper's normalisation for ``language`` (English by default), as a list of words."""
    # A lone "." survives the English normalizer (it keeps decimal points); it is not a word.
    return [w for w in _normalizer(is_english(language))(text or "").split() if any(c.isalnum() for c in w)]


def agreement(reference: str | None, hypothesis: str, language: str | None = "en") -> tuple[float | None, float | None]:
    """(WER, CER) of ``hypothesis`` against the sentence the speaker was prompted with, normalised.

    None for both when there is no reference, or nothing left of it after normalisation: an
    undefined rate is null, never 0.
    """
    if not reference:
        return None, None
    ref = " ".join(normalize_text(reference, language))
    if not ref:
        return None, None
    hyp = " ".join(normalize_text(hypothesis, language))
    import jiwer

    return jiwer.wer(ref, hyp), jiwer.cer(ref, hyp)


def corpus_wer(pairs: Iterable[tuple[str, str]], language: str | None = "en") -> float:
    """Corpus WER over (reference, hypothesis) pairs: total edits / total reference words (jiwer)."""
    import jiwer

    refs, hyps = [], []
    for ref, hyp in pairs:
        r = " ".join(normalize_text(ref, language))
        if r:
            refs.append(r)
            hyps.append(" ".join(normalize_text(hyp, language)))
    if not refs:
        raise ValueError("no reference words to compute WER against")
    return jiwer.wer(refs, hyps)


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


# WER bins for the run's histogram: tenths up to 1, then everything above (insertions can pass 1).
WER_BINS = (*(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)), ">1.0")


def wer_bin(wer: float) -> str:
    return WER_BINS[min(int(wer * 10), 10)] if wer <= 1.0 else WER_BINS[-1]


def wer_histogram(values: Iterable[float | None]) -> dict[str, int]:
    """Counts per WER bin (all bins present); null WERs (no sentence) are left out."""
    counts = dict.fromkeys(WER_BINS, 0)
    for v in values:
        if v is not None:
            counts[wer_bin(float(v))] += 1
    return counts
