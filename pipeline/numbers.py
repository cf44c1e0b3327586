"""Numbers as words, for agreement outside English.

Common Voice's sentences spell numbers out (its sentence rules refuse digits), and Whisper writes them as
digits: the bundled base heard German "um zehn Uhr" as "um 10 Uhr", one error in seven words that nobody
said wrong, and a short sentence of numbers ("drei, zwei, eins") failed outright.  Whisper's English
normalizer already reads both forms as one; other languages get this, with num2words: each run of digits
becomes the words of that number in the sentence's language.

A number has more than one right spelling (a year, a regional form: Brazil's "dezesseis" for Portugal's
"dezasseis", Belgian French's "septante", Chinese read digit by digit), so of the spellings num2words and
the rules below give, the one the sentence holds is taken; the cardinal otherwise.  Pure: no engine.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

# Digits grouped in thousands (1.000, 10 000, 1,000,000) as one number, else a plain run of digits; ``\d``
# holds every script's decimal digits (Persian ۱۸, Thai ๑๘), which int() reads too.
_NUMBER = re.compile(r"\d{1,3}(?:[.,\u00a0\u202f ]\d{3})+(?!\d)|\d+")

# Whisper's language code -> num2words' converters for it, the main one first.  English is not here: its
# normalizer has its own number rules.  Chinese and Cantonese use the Japanese converter (the same
# characters: 十八, 二十一) and the readings added in ``_spellings``.
_ONE_SPELLER = (
    "am", "ar", "az", "be", "bn", "ca", "cs", "cy", "da", "de", "es", "fa", "fi", "he", "hu", "id", "is", "it",
    "ja", "kn", "ko", "lt", "lv", "nl", "no", "pl", "ro", "ru", "sk", "sl", "sr", "sv", "te", "tg", "th", "tr",
    "uk", "vi",
)  # fmt: skip
SPELLERS: dict[str, tuple[str, ...]] = {
    **{lang: (lang,) for lang in _ONE_SPELLER},
    "fr": ("fr", "fr_BE", "fr_CH"),
    "pt": ("pt", "pt_BR"),
    "kk": ("kz",),
    "zh": ("ja",),
    "yue": ("ja",),
}
_CJK_DIGITS = ("零一二三四五六七八九", "〇一二三四五六七八九")


def spells_numbers(language: str | None) -> bool:
    return language in SPELLERS


@functools.lru_cache(maxsize=65536)
def _spellings(digits: str, language: str) -> tuple[str, ...]:
    """The ways of writing the number ``digits`` in ``language``, the cardinal first; () if none."""
    from num2words import num2words

    plain = re.sub(r"\D", "", digits)
    if len(plain) > 15:
        return ()  # nobody says such a run as one number (a code, a loop), and a huge one costs time
    value = int(plain)
    out: list[str] = []
    for lang in SPELLERS[language]:
        for to in ("cardinal", "year") if 1000 <= value < 3000 else ("cardinal",):
            try:
                out.append(num2words(value, lang=lang, to=to))
            except (NotImplementedError, OverflowError, ValueError, TypeError, KeyError, IndexError):
                continue
    if language in ("zh", "yue", "ja"):
        # Read digit by digit (years, numbers of things), and 一百/一千 where Japanese says 百/千.
        out += ["".join(table[int(d)] for d in plain) for table in _CJK_DIGITS]
        out += ["一" + s for s in out[:1] if s[:1] in "百千"]
    # Compounds written together or apart ("negentien honderd negentig", "negentienhonderdnegentig").
    out += [s.replace(" ", "") for s in out if " " in s]
    return tuple(dict.fromkeys(out))


def spell_numbers(text: str, language: str | None, like: Callable[[str], bool] | None = None) -> str:
    """``text`` with each number written as words of ``language``; unchanged where num2words has none.

    ``like(words)`` says whether the sentence holds that spelling: the longest that it holds is taken, the
    cardinal otherwise."""
    if language not in SPELLERS or not any(c.isdigit() for c in text):
        return text

    def words(m: re.Match) -> str:
        found = _spellings(m.group(), language)
        if not found:
            return m.group()
        held = [s for s in found if like is not None and like(s)]
        return max(held, key=len) if held else found[0]  # the longest: 一百 over the 百 inside it

    return _NUMBER.sub(words, text)
