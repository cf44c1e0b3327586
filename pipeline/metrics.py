"""Pure metrics: agreement with the prompt (WER/CER), score histograms.  No engines here."""

from __future__ import annotations

import functools
import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable

import numpy as np


@functools.cache
def _normalizer(english: bool, fold_diacritics: bool = False) -> Callable[[str], str]:
    # Whisper's English normalizer (shipped with transformers): "1" vs "one", "Mr." vs "mister" and
    # punctuation are not errors.  No spelling map is bundled offline, so British spellings still count.
    # Every other language gets Whisper's basic normalizer, with its marks handled as below.
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({}) if english else functools.partial(_basic, fold=fold_diacritics)


# Combining marks that are a letter's own part: the vowel signs, virama, nukta and nasal marks of the Indic
# and Southeast Asian scripts (U+0900-U+0DFF Devanagari to Sinhala; Thai, Lao, Tibetan, Myanmar, Khmer).
_LETTER_MARKS = re.compile("[\u0900-\u0dff\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff\ua8e0-\ua8ff\ua9e0-\ua9ff]")
_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")
_PARENTHESISED = re.compile(r"\(([^)]+?)\)")


@functools.cache
def _clean_char(c: str, fold: bool) -> str:
    # Cached per character: a sentence's letters repeat, so this is a dict lookup per character.
    from transformers.models.whisper.english_normalizer import ADDITIONAL_DIACRITICS

    category = unicodedata.category(c)
    if category == "Cf":
        # Invisible format characters are no letters: Persian writes "می‌جوشد" with a zero-width non-joiner
        # that a transcript may leave out ("میجوشد"); bidi marks, soft hyphens and zero-width spaces alike.
        return ""
    if category[0] == "M" and (not fold or _LETTER_MARKS.match(c)):
        return c
    if fold and c in ADDITIONAL_DIACRITICS:
        return ADDITIONAL_DIACRITICS[c]
    if fold and c == "ı":
        # Turkish and Azerbaijani's dotless i, folded as its accent: "Işık" lowers to "işık" (Python's I is
        # English's), which a transcript's "ışık" missed by one letter though the speaker said the word.
        return "i"
    if fold and category == "Mn":
        return ""
    return " " if category[0] in "MSP" else c


def _basic(text: str, fold: bool) -> str:
    """Whisper's ``BasicTextNormalizer``, except for marks.  Whisper's turns every mark into a space (or
    drops it when folding accents), which cut an Indic word at each vowel sign and lost the vowels:
    "मैं आज बाज़ार" read as "म आज ब ज र", and "कल" (tomorrow) equalled "काल" (time).  Here a mark stays with
    its letter; folding (``gates.fold_diacritics``) drops accents (é, Arabic harakat), never vowel signs."""
    text = _PARENTHESISED.sub("", _BRACKETED.sub("", text.lower()))
    text = unicodedata.normalize("NFKD" if fold else "NFKC", text)
    return " ".join("".join(_clean_char(c, fold) for c in text).lower().split())


def is_english(language: str | None) -> bool:
    # None is a language Whisper does not know (``language_check: unsupported``), not English: the English
    # normalizer's spellings, numbers and fillers would rewrite another language's words.
    return language is not None and language.lower().split("-")[0] == "en"


# Serbian Cyrillic to Latin, letter for letter (Vuk's alphabet and Gaj's are one to one; lower case only, as
# the text is lowered first).
_SERBIAN_LATIN = str.maketrans(
    dict(zip("абвгдђежзијклмнопрстћуфхцчш", "abvgdđežzijklmnoprstćufhcčš", strict=True))
    | {"љ": "lj", "њ": "nj", "џ": "dž"}
)


# Arabic's yeh, alef maksura and kaf, as Persian and Urdu write them; the tatweel (a stretch, no letter) dropped.
_PERSIAN_LETTERS = str.maketrans({"\u064a": "\u06cc", "\u0649": "\u06cc", "\u0643": "\u06a9", "\u0640": None})
# Arabic's teh marbuta as heh and alef maksura as yeh (ة/ه, ى/ي: written either way at a word's end, the usual
# normalisation of Arabic ASR scoring); the tatweel dropped.
_ARABIC_LETTERS = str.maketrans({"\u0629": "\u0647", "\u0649": "\u064a", "\u0640": None})


# Katakana ァ..ヶ to hiragana ぁ..ゖ (the same syllables, 0x60 apart); ー and the kanji stay as they are.
_HIRAGANA = {k: k - 0x60 for k in range(0x30A1, 0x30F7)}


@functools.cache
def _simplified() -> Callable[[str], str]:
    # OpenCC's Taiwan-to-Simplified chain: Taiwan's variant forms, then Traditional phrases and characters.
    from opencc import OpenCC

    return OpenCC("tw2s").convert


_GEMINATE_L = re.compile("([lL])\u00b7([lL])")


def fold_script(text: str, language: str | None) -> str:
    """``text`` in the one script agreement is measured in for ``language`` (``languages.FOLDED_SCRIPT``),
    Catalan's l·l as ll (``languages.GEMINATE_L``)."""
    from pipeline.commonvoice.languages import FOLDED_SCRIPT, GEMINATE_L

    if language in GEMINATE_L:
        return _GEMINATE_L.sub(r"\1\2", text)
    script = FOLDED_SCRIPT.get(language or "")
    if script == "Hans":
        return _simplified()(text)
    if script == "Latn":
        return text.lower().translate(_SERBIAN_LATIN)
    if script == "Arab-fa":
        return text.translate(_PERSIAN_LETTERS)
    if script == "Arab":
        return text.translate(_ARABIC_LETTERS)
    if script == "Hira":
        return text.translate(_HIRAGANA)
    return text


def normalize_text(text: str, language: str | None = "en", fold_diacritics: bool = False) -> list[str]:
    """Whisper's normalisation for ``language`` (English by default), as a list of words."""
    return list(_normalized(text or "", language, fold_diacritics))


# Whisper's English normaliser costs ~100 us a call; a sentence read by several speakers, and a transcript
# that reads it, are the same text again.
@functools.lru_cache(maxsize=1 << 16)
def _normalized(text: str, language: str | None, fold_diacritics: bool) -> tuple[str, ...]:
    # NFKC first, so that full-width brackets are dropped with what they hold, as ASCII ones are: Taiwanese
    # Hokkien's sentences give a Han word's reading there ("巧（khá）"), which nobody says twice.
    # A lone "." survives the English normalizer (it keeps decimal points); it is not a word.
    text = fold_script(unicodedata.normalize("NFKC", text), language)
    words = _normalizer(is_english(language), fold_diacritics)(text).split()
    return tuple(w for w in words if any(c.isalnum() for c in w))


_DIGIT = re.compile(r"\d")


def _compared(reference: str, hypothesis: str, language: str | None, fold_diacritics: bool) -> tuple[str, str]:
    """The sentence and the transcript as agreement compares them: normalised words, numbers spelled out in
    the language (``pipeline.numbers``), each number as the other side spells it where that is one of its
    ways (a sentence with digits, from a Parquet mirror, is spelled as the transcript says it)."""
    from pipeline.commonvoice.languages import unspaced
    from pipeline.numbers import spell_numbers, spells_numbers

    if not (spells_numbers(language) and (_DIGIT.search(reference) or _DIGIT.search(hypothesis))):
        # Nothing to spell: the common case, kept as cheap as it was (a table measures millions of rows).
        return (" ".join(normalize_text(reference, language, fold_diacritics)),
                " ".join(normalize_text(hypothesis, language, fold_diacritics)))  # fmt: skip

    def words(text: str, other: str | None = None) -> str:
        return " ".join(normalize_text(spell_numbers(text, language, held_by(other) if other else None), language,
                                       fold_diacritics))  # fmt: skip

    def held_by(other: str) -> Callable[[str], bool]:
        glued = other.replace(" ", "")

        def holds(number: str) -> bool:
            said = " ".join(normalize_text(number, language, fold_diacritics))
            if not said:
                return False
            return said.replace(" ", "") in glued if unspaced(language) else f" {said} " in f" {other} "

        return holds

    ref = words(reference, words(hypothesis) if _DIGIT.search(reference) else None)
    return ref, words(hypothesis, ref)


def agreement(
    reference: str | None, hypothesis: str, language: str | None = "en", fold_diacritics: bool = False
) -> tuple[float | None, float | None]:
    """(WER, CER) of ``hypothesis`` against the sentence the speaker was prompted with, normalised.

    For scripts without word spaces (``pipeline.commonvoice.languages.UNSPACED``) the CER is over the characters
    alone, spaces left out (Whisper puts some between phrases, the sentence none).  None for both when
    there is no reference, or nothing left of it after normalisation: an undefined rate is null, never 0.
    """
    from pipeline.commonvoice.languages import unspaced

    if not reference:
        return None, None
    ref, hyp = _compared(reference, hypothesis, language, fold_diacritics)
    if not ref:
        return None, None
    import jiwer

    if unspaced(language):
        chars = lambda t: t.replace(" ", "")  # noqa: E731
        return jiwer.wer(ref, hyp), jiwer.cer(chars(ref), chars(hyp)) if chars(hyp) else 1.0
    return jiwer.wer(ref, hyp), jiwer.cer(ref, hyp)


def corpus_wer(pairs: Iterable[tuple[str, str]], language: str | None = "en", fold_diacritics: bool = False) -> float:
    """Corpus WER over (reference, hypothesis) pairs: total edits / total reference words (jiwer)."""
    import jiwer

    refs, hyps = [], []
    for ref, hyp in pairs:
        r, h = _compared(ref, hyp, language, fold_diacritics)
        if r:
            refs.append(r)
            hyps.append(h)
    if not refs:
        raise ValueError("no reference words to compute WER against")
    return jiwer.wer(refs, hyps)


SCORE_CHOICES = (1, 2, 3, 4, 5)


def _measured(values) -> np.ndarray:
    """The non-null values of a list, numpy array or Arrow column, as float64 (counted without a loop)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.Array | pa.ChunkedArray):
        a = pc.fill_null(pc.cast(values, pa.float64()), np.nan).to_numpy() if len(values) else np.array([])
    else:
        a = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    return a[~np.isnan(a)]


def score_histogram(scores) -> dict[int, int]:
    """Counts per judge score 1..5 (all five keys present, so charts line up across runs)."""
    v = _measured(scores)
    v = v[np.isin(v, SCORE_CHOICES)].astype(int)
    counts = np.bincount(v, minlength=6)
    return {k: int(counts[k]) for k in SCORE_CHOICES}


def expected_score_bins(values, width: float = 0.5) -> list[tuple[float, float, int]]:
    """Bin ``score_expected`` (in [1, 5]) into [lo, hi) bins of ``width``; the last bin is closed."""
    n_bins = round((5 - 1) / width)
    edges = [1 + i * width for i in range(n_bins + 1)]
    idx = np.clip(np.trunc((_measured(values) - 1) / width), 0, n_bins - 1).astype(int)
    counts = np.bincount(idx, minlength=n_bins)
    return [(edges[i], edges[i + 1], int(counts[i])) for i in range(n_bins)]


# WER bins for the run's histogram: tenths up to 1, then everything above (insertions can pass 1).
WER_BINS = (*(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10)), ">1.0")


def wer_bin(wer: float) -> str:
    return WER_BINS[min(int(wer * 10), 10)] if wer <= 1.0 else WER_BINS[-1]


def wer_histogram(values) -> dict[str, int]:
    """Counts per WER bin (all bins present); null WERs (no sentence) are left out."""
    v = _measured(values)
    idx = np.where(v <= 1.0, np.minimum(np.trunc(v * 10), 10), 10).astype(int)
    counts = np.bincount(idx, minlength=len(WER_BINS))
    return {b: int(counts[i]) for i, b in enumerate(WER_BINS)}


# Bins of the acoustic signals the run's histograms show: (lower edges, the last bin open-ended), and
# the gate field whose threshold each histogram marks.
SIGNAL_EDGES: dict[str, tuple[float, ...]] = {
    "snr_db": (-100, 0, 5, 10, 15, 20, 25, 30, 40),
    "speech_ratio": tuple(i / 10 for i in range(10)),
    "dnsmos_ovrl": (1.0, 1.5, 2.0, 2.2, 2.5, 3.0, 3.5, 4.0),
}
SIGNAL_GATES = {"snr_db": "min_snr_db", "speech_ratio": "min_speech_ratio", "dnsmos_ovrl": "min_dnsmos_ovrl"}


def signal_bins(signal: str) -> list[str]:
    edges = SIGNAL_EDGES[signal]
    # snr_db's first edge (-100, the floor snr_db reports) reads as "<0".
    labels = [f"{lo:g}–{hi:g}" if lo != -100 else f"<{hi:g}" for lo, hi in itertools.pairwise(edges)]
    return [*labels, f"≥{edges[-1]:g}"]


def signal_bin_edges(signal: str, label: str) -> tuple[float, float]:
    """The [lo, hi) interval of one of ``signal``'s bins."""
    edges = SIGNAL_EDGES[signal]
    i = signal_bins(signal).index(label)
    return (edges[i] if i else float("-inf")), (edges[i + 1] if i + 1 < len(edges) else float("inf"))


def signal_histogram(signal: str, values) -> dict[str, int]:
    """Counts per bin of ``signal`` (every bin present); nulls (not measured) are left out."""
    labels = signal_bins(signal)
    edges = SIGNAL_EDGES[signal]
    idx = np.searchsorted(np.array(edges[1:], dtype=float), _measured(values), side="right")
    counts = np.bincount(idx, minlength=len(labels))
    return {label: int(counts[i]) for i, label in enumerate(labels)}
