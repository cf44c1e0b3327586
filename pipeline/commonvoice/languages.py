"""Common Voice locales to Whisper's language codes, and which models can hear which languages.

Common Voice names its locales as BCP-47-like tags (``en``, ``pt``, ``zh-CN``, ``sv-SE``, ``nan-tw``);
the full list is ``COMMON_VOICE_LOCALES`` below, the one place it is kept.  Whisper knows 100 languages by
ISO 639-1 code (plus ``haw``, ``yue``).  A locale maps to its primary language subtag when Whisper knows
it, with the few exceptions in ``_SPECIAL``; otherwise Whisper has no language for it, and the locale is
curated with the agreement gates only (``language_check: unsupported``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Collection
from pathlib import Path
from typing import Literal

# Every locale Common Voice has published or opened for contribution (its languages list), with the
# name the summary shows.
# fmt: off
COMMON_VOICE_LOCALES: dict[str, str] = {
    "ab": "Abkhaz", "ace": "Acehnese", "ady": "Adyghe", "af": "Afrikaans", "am": "Amharic", "an": "Aragonese",
    "ar": "Arabic", "arn": "Mapudungun", "as": "Assamese", "ast": "Asturian", "az": "Azerbaijani", "ba": "Bashkir",
    "bas": "Basaa", "be": "Belarusian", "bg": "Bulgarian", "bm": "Bambara", "bn": "Bengali", "bo": "Tibetan",
    "br": "Breton", "bs": "Bosnian", "bxr": "Buryat", "byv": "Medumba", "ca": "Catalan", "cak": "Kaqchikel",
    "ckb": "Central Kurdish", "cnh": "Hakha Chin", "co": "Corsican", "crh": "Crimean Tatar", "cs": "Czech",
    "cv": "Chuvash", "cy": "Welsh", "da": "Danish", "dag": "Dagbani", "de": "German", "dsb": "Lower Sorbian",
    "dv": "Dhivehi", "dyu": "Dioula", "el": "Greek", "en": "English", "eo": "Esperanto", "es": "Spanish",
    "et": "Estonian", "eu": "Basque", "ewo": "Ewondo", "fa": "Persian", "ff": "Fulah", "fi": "Finnish",
    "fo": "Faroese", "fr": "French", "fuf": "Pular Guinea", "fy-NL": "Frisian", "ga-IE": "Irish", "gl": "Galician",
    "gn": "Guarani", "gom": "Goan Konkani", "gu-IN": "Gujarati", "guc": "Wayuunaiki", "ha": "Hausa", "he": "Hebrew",
    "hi": "Hindi", "hil": "Hiligaynon", "hr": "Croatian", "hsb": "Upper Sorbian", "ht": "Haitian", "hu": "Hungarian",
    "hy-AM": "Armenian", "hyw": "Western Armenian", "ia": "Interlingua", "id": "Indonesian", "ie": "Interlingue",
    "ig": "Igbo", "is": "Icelandic", "it": "Italian", "izh": "Izhorian", "ja": "Japanese", "jbo": "Lojban",
    "jv": "Javanese", "ka": "Georgian", "kaa": "Karakalpak", "kab": "Kabyle", "kbd": "Kabardian", "ki": "Kikuyu",
    "kk": "Kazakh", "km": "Khmer", "kmr": "Kurmanji Kurdish", "kn": "Kannada", "knn": "Konkani (Devanagari)",
    "ko": "Korean", "kpv": "Komi-Zyrian", "kw": "Cornish", "ky": "Kyrgyz", "lb": "Luxembourgish", "lg": "Luganda",
    "lij": "Ligurian", "ln": "Lingala", "lo": "Lao", "lt": "Lithuanian", "ltg": "Latgalian", "lv": "Latvian",
    "lzz": "Laz", "mai": "Maithili", "mdf": "Moksha", "mg": "Malagasy", "mhr": "Meadow Mari", "mk": "Macedonian",
    "ml": "Malayalam", "mn": "Mongolian", "mni": "Meetei Lon", "mos": "Mossi", "mr": "Marathi", "mrj": "Hill Mari",
    "ms": "Malay", "mt": "Maltese", "my": "Burmese", "myv": "Erzya", "nan-tw": "Taiwanese (Minnan)",
    "nb-NO": "Norwegian Bokmål", "nd": "IsiNdebele (North)", "ne-NP": "Nepali", "nhe": "Eastern Huasteca Nahuatl",
    "nhi": "Western Sierra Puebla Nahuatl", "nia": "Nias", "nl": "Dutch", "nn-NO": "Norwegian Nynorsk",
    "nr": "IsiNdebele (South)", "nso": "Northern Sotho", "ny": "Chinyanja", "nyn": "Runyankole", "oc": "Occitan",
    "om": "Afaan Oromo", "or": "Odia", "os": "Ossetian", "pa-IN": "Punjabi", "pap-AW": "Papiamento (Aruba)",
    "pl": "Polish", "ps": "Pashto", "pt": "Portuguese", "quc": "K'iche'", "quy": "Quechua Chanka", "qvi": "Kichwa",
    "rm-sursilv": "Romansh Sursilvan", "rm-vallader": "Romansh Vallader", "ro": "Romanian", "ru": "Russian",
    "rw": "Kinyarwanda", "sah": "Sakha", "sat": "Santali (Ol Chiki)", "sc": "Sardinian", "scn": "Sicilian",
    "sco": "Scots", "sd": "Sindhi", "sdh": "Southern Kurdish", "shi": "Shilha", "si": "Sinhala", "sk": "Slovak",
    "skr": "Saraiki", "sl": "Slovenian", "snk": "Soninke", "so": "Somali", "sq": "Albanian", "sr": "Serbian",
    "ss": "Siswati", "st": "Southern Sotho", "sv-SE": "Swedish", "sw": "Swahili", "syr": "Syriac", "ta": "Tamil",
    "te": "Telugu", "tg": "Tajik", "th": "Thai", "ti": "Tigrinya", "tig": "Tigre", "tk": "Turkmen", "tl": "Tagalog",
    "tn": "Setswana", "tok": "Toki Pona", "tr": "Turkish", "ts": "Xitsonga", "tt": "Tatar", "tw": "Twi",
    "ty": "Tahitian", "tyv": "Tuvan", "uby": "Ubykh", "udm": "Udmurt", "ug": "Uyghur", "uk": "Ukrainian",
    "ur": "Urdu", "uz": "Uzbek", "ve": "Tshivenda", "vec": "Venetian", "vi": "Vietnamese", "vmw": "Emakhuwa",
    "vot": "Votic", "wep": "Westphalian", "wo": "Wolof", "xh": "Xhosa", "yi": "Yiddish", "yo": "Yoruba",
    "yue": "Cantonese", "zgh": "Tamazight", "zh-CN": "Chinese (China)", "zh-HK": "Chinese (Hong Kong)",
    "zh-TW": "Chinese (Taiwan)", "zu": "Zulu", "zza": "Zaza",
}
# fmt: on

# Locales whose primary subtag is not the code Whisper uses for them.
_SPECIAL = {
    "zh-HK": "yue",  # Common Voice's zh-HK is Cantonese
    "yue": "yue",
    "nb-NO": "no",  # Whisper has "no" (Norwegian), not "nb"/"nn"
    "nn-NO": "nn",
    "fil": "tl",
    "jv": "jw",  # Whisper's code for Javanese
}
# Languages that older Whisper checkpoints lack, and the language those checkpoints write them as:
# Cantonese has its own token only since large-v3; tiny..large-v2 were trained on it as Chinese.
FALLBACK = {"yue": "zh"}
# Whisper languages written without spaces between words: agreement is measured in characters (CER).
UNSPACED = frozenset({"zh", "yue", "ja", "th", "lo", "my", "km", "bo"})
# Korean: a word (eojeol) is a stem with its particles and endings, and where the spaces fall varies between
# writers and Whisper ("먹어 봤어요" or "먹어봤어요"), so one wrong syllable made a three-word sentence WER 0.33
# at CER 0.1 (base on espeak-ng's "태양은 동쪽에서 뜹니다"): gated on characters, spaces left out, as unspaced
# scripts are.
SPACING_VARIES = frozenset({"ko"})
# Catalan writes its geminate l as l·l ("col·legi"), which Whisper writes so or as ll ("parallèles" for
# "paral·leles"): the middle dot is no word break there, and both sides read it as ll.
GEMINATE_L = frozenset({"ca"})
# Whisper languages written with a dotless ı whose capital is I (Turkish, Azerbaijani): with accents folded,
# ı is read as i, so a sentence's capital I ("Işık", lowered as English lowers it) meets the transcript's ı.
DOTLESS_I = frozenset({"tr", "az"})
# Languages written in two scripts, either of which a Whisper writes whatever the sentence's, and the one both
# sides are folded to before agreement is measured: Chinese in Traditional or Simplified characters (base
# wrote zh-CN's "我们喜欢喝茶" as "我們喜歡喝茶", two errors in six), Serbian in Cyrillic or Latin letters (base
# wrote "Добар дан, како сте?" as "doma dan kako ste", every word an error); and Persian and Urdu, whose yeh
# and kaf are typed as Arabic's (ي ك) as often as as their own (ی ک), the same letters; and Japanese's two
# kana, one syllabary in two forms (base wrote "こんにちは" as "コンニチハ"), read as hiragana; and Arabic's
# teh marbuta and alef maksura, typed as heh and yeh as often as not at a word's end (ة/ه, ى/ي).
FOLDED_SCRIPT = {
    "zh": "Hans", "yue": "Hans", "sr": "Latn", "fa": "Arab-fa", "ur": "Arab-fa", "ja": "Hira", "ar": "Arab",
}  # fmt: skip
# Whisper languages in an Indic script, whose vowels are marks on a consonant (abugidas; Thai, Lao, Burmese,
# Khmer and Tibetan are ones too, and unspaced): gated on characters as well.  A Whisper's vowel signs,
# nukta and nasal marks vary where the speaker said the sentence, and a Dravidian word is often a phrase
# ("கடைக்குப்", to the shop): base's Tamil readings of the right sentence scored WER 1.0 at CER 0.27.
INDIC = frozenset({"hi", "mr", "ne", "sa", "bn", "as", "pa", "gu", "ta", "te", "kn", "ml", "si"})
# Whisper languages whose writing holds invisible format characters (zero-width non-joiners, bidi marks):
# Persian's "می‌جوشد", Urdu's, Pashto's, Arabic and Hebrew text with direction marks.
FORMAT_MARKED = frozenset({"fa", "ur", "ps", "ar", "he", "yi", "sd"})
# Locales Whisper has no language for, written like one it has: Taiwanese Hokkien's sentences are mainly
# Han characters (Tâi-lô only in brackets), so a word-level WER would count each sentence as one word.
WRITTEN_LIKE = {"nan-tw": "zh"}
# Whisper's English-only checkpoints have 51864 tokens; every multilingual one has more.
ENGLISH_ONLY_VOCAB = 51864

LanguageCheck = Literal["whisper", "unsupported"]


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


def written_as(locale: str | None) -> str | None:
    """The language whose writing a locale's sentences follow, for normalising them and for measuring
    agreement in words or characters: Whisper's language for it, else ``WRITTEN_LIKE``'s, else None."""
    if not locale:
        return None
    return whisper_language(locale) or WRITTEN_LIKE.get(locale.lower())


def decodable(language: str | None, known: Collection[str]) -> str | None:
    """What a Whisper knowing the languages ``known`` decodes ``language`` as: the language itself, else its
    ``FALLBACK`` when the model knows that, else None (the model detects it).  Forcing a language a
    checkpoint has no token for would drop the token from its prompt and decode garbage."""
    if language is None or language in known:
        return language
    fallback = FALLBACK.get(language)
    return fallback if fallback in known else None


def model_languages(model_path: str) -> frozenset[str] | None:
    """The languages a local Whisper checkpoint has a token for, read from its files without loading it:
    a transformers checkpoint's ``generation_config.json``, else a tokenizer's ``<|xx|>`` special tokens.
    None when the files do not say (a hub id, an English-only model)."""
    root = Path(model_path)
    gen = root / "generation_config.json"
    if gen.is_file():
        ids = json.loads(gen.read_text()).get("lang_to_id") or {}
        return frozenset(t[2:-2] for t in ids) or None
    tok = root / "tokenizer.json"
    if tok.is_file():
        added = {a["content"] for a in json.loads(tok.read_text()).get("added_tokens", [])}
        return frozenset(c for c in whisper_languages() if f"<|{c}|>" in added) or None
    return None


def decoded_as(language: str | None, model_path: str) -> str | None:
    """What a local checkpoint decodes ``language`` as when it has no token for it: the fallback, or
    "the language it detects"; None when it decodes the language itself (or its files do not say)."""
    known = model_languages(model_path)
    if language is None or known is None or language in known:
        return None
    return decodable(language, known) or "the language it detects"


# Whisper languages that are one spoken language under two or three names, told apart by script or
# standard rather than by sound: Hindustani (Hindi, Urdu), Serbo-Croatian (Serbian, Croatian, Bosnian),
# Norwegian (Bokmål as "no", Nynorsk).  A detector hearing one as the other says nothing about the speech.
SPOKEN_ALIKE = {"ur": "hi", "hr": "sr", "bs": "sr", "nn": "no"}


def same_language(language: str | None) -> str | None:
    """``language`` with its ``FALLBACK`` and ``SPOKEN_ALIKE`` folded in, for comparing what a model heard
    with a locale's language: large-v3 often hears Cantonese as Chinese (older checkpoints can hear
    nothing else), and Urdu as Hindi."""
    if not language:
        return language
    language = FALLBACK.get(language, language)
    return SPOKEN_ALIKE.get(language, language)


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


def language_check(locale: str | None) -> LanguageCheck:
    """``whisper`` when Whisper knows the locale's language (it is told it, and a mismatch is gated);
    ``unsupported`` when it does not (the agreement gates decide alone)."""
    return "whisper" if whisper_language(locale) else "unsupported"


def unspaced(language: str | None) -> bool:
    """Whether agreement leaves spaces out of ``language`` (a Whisper code): written without them between words,
    or with spaces that vary (Korean)."""
    return language in UNSPACED or language in SPACING_VARIES


def by_characters(language: str | None) -> bool:
    """Whether agreement with the sentence is gated on CER (``gates.max_cer_unspaced``) rather than WER:
    scripts without word spaces, Korean, and the Indic scripts."""
    return unspaced(language) or language in INDIC


class LanguageNotSupportedError(ValueError):
    """The rows' locales need a Whisper the configured model is not; raised before any work."""


def hears_every_language(model_ref: str, model_path: str) -> bool:
    """Whether a Whisper is multilingual: from its files when they are local, else from its name (a hub
    id resolves inside the engine; OpenAI's English-only checkpoints all end in ``.en``)."""
    if Path(model_path).is_dir():
        return is_multilingual(model_path)
    return not model_ref.lower().removesuffix("-hf").endswith(".en")


def transcriber_for(locale: str, model_ref: str, main_hears_all: bool, multilingual_ref: str | None) -> str:
    """The Whisper a locale is transcribed with: the configured one when it can hear the locale (any
    model hears English), else the multilingual one; ``LanguageNotSupportedError`` when there is none.
    A locale Whisper has no language for also gets a multilingual model: it detects, and the agreement
    gates decide alone."""
    if main_hears_all or whisper_language(locale) == "en":
        return model_ref
    if multilingual_ref:
        return multilingual_ref
    heard = whisper_language(locale)
    raise LanguageNotSupportedError(
        f"locale(s) {locale} need a multilingual Whisper, but transcriber.model={model_ref} is English-only "
        f"and transcriber.multilingual_model is unset{'' if heard else ' (Whisper has no language for it)'}; "
        "set --set transcriber.multilingual_model=bundled:whisper-base (or a hub id, or a local "
        "CTranslate2/transformers checkpoint)"
    )
