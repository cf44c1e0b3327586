"""Common Voice locales to Whisper's language codes, and which models can hear which languages.

Common Voice names ~290 locales as BCP-47-like tags (``en``, ``pt``, ``zh-CN``, ``sv-SE``, ``nan-tw``);
Whisper knows 100 languages by ISO 639-1 code (plus ``haw``, ``yue``).  A locale maps to its primary
language subtag when Whisper knows it, with the few exceptions below; otherwise it has no Whisper
language and a multilingual model cannot be told what to expect.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

# Locales whose primary subtag is not the code Whisper uses for them.
_SPECIAL = {
    "zh-HK": "yue",  # Common Voice's zh-HK is Cantonese
    "yue": "yue",
    "nb-NO": "no",  # Whisper has "no" (Norwegian), not "nb"/"nn"
    "nn-NO": "nn",
    "fil": "tl",
    "jv": "jw",  # Whisper's code for Javanese
}
# Whisper's English-only checkpoints have 51864 tokens; every multilingual one has more.
ENGLISH_ONLY_VOCAB = 51864


@functools.cache
def whisper_languages() -> frozenset[str]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


def whisper_language(locale: str | None) -> str | None:
    """The Whisper language code for a Common Voice locale, or None when Whisper does not know it."""
    if not locale:
        return None
    if locale in _SPECIAL:
        return _SPECIAL[locale]
    primary = locale.split("-")[0].lower()
    return primary if primary in whisper_languages() else None


def is_multilingual(model_path: str) -> bool:
    """Whether a local Whisper checkpoint (CTranslate2 or transformers) is multilingual, from its vocabulary
    size alone, so the check costs no model load."""
    root = Path(model_path)
    cfg = root / "config.json"
    if cfg.exists():
        size = json.loads(cfg.read_text()).get("vocab_size")
        if size:
            return int(size) > ENGLISH_ONLY_VOCAB
    vocab = root / "vocabulary.txt"
    if vocab.exists():
        with vocab.open(encoding="utf-8") as f:
            return sum(1 for _ in f) > ENGLISH_ONLY_VOCAB
    tok = root / "tokenizer.json"
    if tok.exists():
        data = json.loads(tok.read_text())
        return len(data["model"]["vocab"]) + len(data.get("added_tokens", [])) > ENGLISH_ONLY_VOCAB
    raise ValueError(f"{model_path}: cannot tell whether this Whisper model is multilingual (no config/vocabulary)")


class LanguageNotSupportedError(ValueError):
    """The rows' locales need a Whisper the configured model is not; raised before any work."""


def check_model_hears(locales: set[str], model_ref: str, model_path: str, default: str | None) -> None:
    """Stop before any work when the model cannot be told the rows' languages.

    An English-only model and a non-English locale, or a locale Whisper has no language for, would
    otherwise be transcribed as a guess and gated on nonsense.
    """
    wanted = {loc: whisper_language(loc) for loc in sorted(locales) if loc}
    unknown = [loc for loc, lang in wanted.items() if lang is None]
    if unknown:
        raise LanguageNotSupportedError(
            f"locale(s) {', '.join(unknown)} have no Whisper language; Whisper knows: "
            f"{', '.join(sorted(whisper_languages()))}"
        )
    foreign = sorted(loc for loc, lang in wanted.items() if lang != "en")
    if not wanted and default and default != "en":
        foreign = [default]
    if foreign and not is_multilingual(model_path):
        raise LanguageNotSupportedError(
            f"locale(s) {', '.join(foreign)} need a multilingual Whisper, but transcriber.model={model_ref} is "
            "English-only; set --set transcriber.model=<a multilingual Whisper, e.g. openai/whisper-large-v3-turbo "
            "or a local CTranslate2/transformers checkpoint>"
        )
