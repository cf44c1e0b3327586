"""Locales other than English with the bundled multilingual Whisper (base), on espeak-ng speech.

One ``curate run`` on a Spanish release tarball (header-only other/invalidated/reported TSVs, English
speech planted in it, a clip under another sentence, a sentence base tends to hear as Italian); then the
engine itself, in this process, on French, German and Mandarin (CER).  espeak-ng's robotic voices are
harder for Whisper than people are (docs/curation.md "Every Common Voice locale"), so agreement is
asserted against other sentences' agreement, not against a fixed WER.
"""

from __future__ import annotations

import re

import pytest

from bench import multilingual_set
from pipeline.commonvoice.languages import unspaced, whisper_language
from pipeline.config import AudioConfig, build_config
from pipeline.metrics import agreement, corpus_wer
from pipeline.models import resolve_model
from pipeline.stages.decode import decode_clip
from pipeline.stages.gate_rules import build_gates
from scripts.make_cv_release import clip_rows, sample_clips, write_release
from tests.integration.test_pipeline_e2e import run_cli
from tests.table import result_of, rows

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not multilingual_set.espeak_available(), reason="needs espeak-ng (scripts/install.sh)"),
]

RELEASE = "cv-corpus-23.0-2025-09-05"


@pytest.fixture(scope="module")
def spanish(tmp_path_factory):
    """A Spanish release: eight read sentences, one clip of English speech, one under another sentence."""
    tmp = tmp_path_factory.mktemp("es")
    said = multilingual_set.SENTENCES["es"]["educational"]
    audio = [(*multilingual_set.speak(s, "es"), s) for s in said]  # (mp3, seconds, sentence)
    # A contributor who read a Spanish prompt in English: the forced Spanish transcript cannot read the
    # sentence, so agreement is no evidence of Spanish and detection decides.
    english_mp3, _, english_s = sample_clips(1)[0]
    audio.append((english_mp3, english_s, multilingual_set.SENTENCES["es"]["chitchat"][0]))
    mismatch_mp3, mismatch_s = multilingual_set.speak(said[0], "es")
    audio.append((mismatch_mp3, mismatch_s, multilingual_set.SENTENCES["es"]["chitchat"][2]))
    # Read word for word, yet base's detector has heard it as Italian (p 0.75): agreement must outweigh that.
    misheard = multilingual_set.SENTENCES["es"]["chitchat"][5]
    audio.append((*multilingual_set.speak(misheard, "es"), misheard))
    # The detector's odds move with the CPU's kernels (on one host the clip above was heard as Spanish), so
    # Spanish read with an Italian accent too: base heard two of these as Italian (p 0.78, 0.82) and forced
    # in Spanish they agree (WER 0.09, 0.0); it takes one such clip for the test to hold.
    for sentence, speed in ((said[1], 150), (said[3], 130), (said[6], 150)):
        audio.append((*multilingual_set.speak(sentence, "es", speed, voice="it"), sentence))
    listed = clip_rows([(mp3, sentence, seconds) for mp3, seconds, sentence in audio], "es", 7_000_000)
    for row, (_, _, sentence) in zip(listed, audio, strict=True):
        row["sentence"] = sentence  # clip_rows puts a quoted English sentence on row 1
    files = {row["path"]: (mp3, seconds) for row, (mp3, seconds, _) in zip(listed, audio, strict=True)}
    # Small locales ship other, invalidated and reported as a header line alone.
    tarball = write_release(
        tmp / "in", RELEASE, "es", {"validated": listed, "other": [], "invalidated": []}, files, reported=[]
    )
    out = tmp / "out"
    proc = run_cli("run", "--input", str(tarball), "--output", str(out), "--emit-result")
    ids = [row["path"] for row in listed]
    return out, proc, {"spanish": [*ids[:8], *ids[10:]], "english": ids[8], "mismatch": ids[9]}


def test_a_spanish_release_is_curated_with_the_multilingual_whisper(spanish):
    out, proc, ids = spanish
    (locale,) = result_of(proc.stdout).locales
    assert locale.locale == "es"
    assert locale.transcriber.startswith("bundled:whisper-base@")
    assert (locale.language, locale.language_check) == ("es", "whisper")
    assert re.search(r"language\s+es; language check: whisper", proc.stdout), proc.stdout
    assert re.search(r"judge\s+off \(judge.locales\)", proc.stdout), proc.stdout
    table = rows(out, locale="es")
    assert set(table) == {*ids["spanish"], ids["english"], ids["mismatch"]}  # header-only TSVs: no error
    # No judge scored Spanish, so no row names one (it named the English judge's model).
    assert all(r["score"] is None and r["judge"] is None for r in table.values()), table
    assert all(r["transcriber"].startswith("bundled:whisper-base@") for r in table.values()), table
    for cid in ids["spanish"]:
        assert table[cid]["wer"] is not None and table[cid]["detected_language"] is not None, table[cid]
    heard_spanish = [cid for cid in ids["spanish"] if table[cid]["detected_language"] == "es"]
    agreeing = [cid for cid in ids["spanish"] if "wer_above" not in (table[cid]["reasons"] or [])]
    assert len(heard_spanish) >= 5, {c: table[c]["detected_language"] for c in ids["spanish"]}
    assert len(agreeing) >= 5, {c: (table[c]["transcription"], table[c]["wer"]) for c in ids["spanish"]}


def test_english_speech_in_a_spanish_release_is_a_language_mismatch(spanish):
    out, _, ids = spanish
    row = rows(out, locale="es")[ids["english"]]
    assert row["language"] == "es" and not row["kept"], row
    if row["detected_language_prob"] >= 0.5:
        # Confidently not Spanish: what base names it moves with the CPU's kernels too (English on most
        # hosts; Latin at p 0.51 with AVX2 kernels on a Zen 4, bench/isa_avx2), the gate is the same.
        assert row["detected_language"] != "es" and "language_mismatch" in row["reasons"], row
    else:
        # Detection's odds move with the CPU's kernels: on a 2-core AVX2-only EPYC base heard this clip as
        # Latin at p 0.43, too weak to decide, and the agreement gate rejected it alone.
        assert "wer_above" in row["reasons"] and "language_mismatch" not in row["reasons"], row


def test_a_spanish_clip_read_word_for_word_is_not_rejected_for_what_detection_heard(spanish):
    """Agreement with the prompted sentence is evidence of the language (#33): a clip the detector heard,
    with confidence, as another language, whose transcript forced in Spanish matches its sentence, is never
    a language mismatch, and its ``language`` is the locale's."""
    out, _, ids = spanish
    table = rows(out, locale="es")
    misheard = [
        cid for cid in ids["spanish"]
        if table[cid]["detected_language"] != "es" and table[cid]["detected_language_prob"] >= 0.5
        and table[cid]["wer"] <= 0.5
    ]  # fmt: skip
    assert misheard, {c: (table[c]["detected_language"], table[c]["detected_language_prob"], table[c]["wer"])
                      for c in ids["spanish"]}  # fmt: skip
    for cid in misheard:
        assert "language_mismatch" not in table[cid]["reasons"] and table[cid]["language"] == "es", table[cid]
    assert all(table[c]["language"] == "es" for c in table)


def test_a_clip_under_another_sentence_is_rejected_on_agreement(spanish):
    out, _, ids = spanish
    row = rows(out, locale="es")[ids["mismatch"]]
    assert not row["kept"] and "wer_above" in row["reasons"], row


@pytest.fixture(scope="module")
def base_engine():
    from pipeline.engines.whisper import BatchedWhisper

    return BatchedWhisper(resolve_model("bundled:whisper-base").path, language=None)


def _heard(engine, locale: str, kind: str | None = None) -> list[tuple[str, str, str | None]]:
    """(sentence, transcript, heard language) for ``locale``'s sentences, decoded as its language."""
    items = [c for c in multilingual_set.clips(locale) if kind is None or c[3] == kind]
    audio = [decode_clip(data, AudioConfig()) for data, *_ in items]
    lang = whisper_language(locale)
    got = engine.transcribe(audio, batch_size=8, min_window_s=10.0, languages=[lang] * len(audio))
    return [(sentence, t.text, t.detected_language) for (_, sentence, _, _), t in zip(items, got, strict=True)]


def _closest_own(heard: list[tuple[str, str, str | None]], lang: str) -> int:
    """How many transcripts agree best with their own sentence of all the set's (WER, or CER unspaced)."""
    sentences = [s for s, _, _ in heard]
    measure = 1 if unspaced(lang) else 0
    hits = 0
    for i, (_, text, _) in enumerate(heard):
        rates = [agreement(s, text, lang, fold_diacritics=True)[measure] for s in sentences]
        hits += min(range(len(rates)), key=rates.__getitem__) == i
    return hits


# Mandarin is not here: espeak-ng's pinyin voice is too far from speech for base to decode it steadily
# (most of its decodes look failed); test_mandarin_is_judged_by_characters judges what it writes.
@pytest.mark.parametrize("locale", ["fr", "de"])
def test_transcripts_agree_best_with_their_own_sentence(base_engine, locale):
    heard = _heard(base_engine, locale)
    lang = whisper_language(locale)
    # Chance is one in 16: half or more means the model hears the language.
    assert _closest_own(heard, lang) >= len(heard) / 2, heard
    # Accented sentences: folding accents never makes agreement worse.
    pairs = [(s, t) for s, t, _ in heard]
    assert corpus_wer(pairs, lang, fold_diacritics=True) <= corpus_wer(pairs, lang, fold_diacritics=False)


def test_mandarin_is_judged_by_characters(base_engine):
    heard = _heard(base_engine, "zh-CN")
    cers = [agreement(s, t, "zh")[1] for s, t, _ in heard]
    # The gates read CER for zh-CN rows and leave their WER (one "word" a sentence) alone.
    gates = [g for g in build_gates(build_config()) if g.code in ("wer_above", "cer_above")]
    limit = build_config().gates.max_cer_unspaced
    for cer in cers:
        assert all(gate({"locale": "zh-CN", "wer": 1.0, "cer": cer})[0] for gate in gates) == (cer <= limit)
    assert [g.code for g in gates if not g({"locale": "zh-CN", "wer": 0.0, "cer": 0.9})[0]] == ["cer_above"]


def test_cantonese_on_a_whisper_without_it_is_decoded_as_chinese(base_engine):
    """base has no <|yue|> (Cantonese came with large-v3): forcing it would leave the prompt without a
    language and decode garbage ("G G G ...", found on espeak-ng's Cantonese).  It decodes as Chinese."""
    assert "yue" not in base_engine.languages and base_engine.decodable("yue") == "zh"
    assert base_engine._prompt(base_engine.decodable("yue")) == base_engine._prompt("zh")
    said = ["今日天氣好好。", "我鍾意食點心。", "香港係一個大城市。"]
    audio = [decode_clip(multilingual_set.speak(s, "yue")[0], AudioConfig()) for s in said]
    got = base_engine.transcribe(audio, batch_size=8, min_window_s=10.0, languages=["yue"] * len(audio))
    texts = [t.text for t in got]
    # No repetition loop; Chinese characters where base heard words (it writes the first clip's Cantonese
    # syllables out in Latin letters: "Gamya-jin-ei-ho-ho" for gam jat tin hei hou hou).
    assert all(t.compression_ratio is not None and t.compression_ratio <= 2.4 for t in got), texts
    assert sum(sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 2 for text in texts) >= 2, texts
    # Two of the three decodes look failed and are tried again: by beam search, so the same text every time
    # (faster-whisper's temperature fallback sampled: this test saw four texts in four runs, and failed on
    # one that had no Chinese character).
    again = base_engine.transcribe(audio, batch_size=8, min_window_s=10.0, languages=["yue"] * len(audio))
    assert [t.text for t in again] == texts
