"""Gates: each returns (keep, reason); a row is kept only when every gate passes."""

from __future__ import annotations

import pyarrow as pa
import pytest

from pipeline.config import build_config
from pipeline.stages.gate_rules import LanguageMismatch, build_gates
from pipeline.stages.gates import apply_gates, decide_table, failed_gates, reason_counts

GOOD = {
    "transcription": "Plants use sunlight to turn water into sugar.",
    "sentence": "Plants use sunlight to turn water into sugar.",
    "duration_s": 4.2,
    "score": 4,
    "score_expected": 3.8,
    "avg_logprob": -0.2,
    "no_speech_prob": 0.01,
    "compression_ratio": 1.2,
    "detected_language": None,
    "detected_language_prob": None,
    "error": None,
    "stage": None,
}


def _verdict(**changes):
    row = {**GOOD, **changes}
    out = apply_gates(pa.Table.from_pylist([row]), build_gates(build_config())).to_pylist()[0]
    return out


def test_a_clean_row_passes_every_gate():
    out = _verdict()
    assert out["kept"] is True and out["reasons"] == [] and out["wer"] == 0.0 and out["cer"] == 0.0


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"transcription": "Thanks for watching!"}, "wer_above"),  # hold music's favourite hallucination
        ({"no_speech_prob": 0.9, "avg_logprob": -1.3}, "no_speech"),
        ({"compression_ratio": 3.1}, "hallucination"),
        ({"avg_logprob": -1.4}, "low_logprob"),
        ({"duration_s": 0.3}, "too_short"),
        ({"duration_s": 31.0}, "too_long"),
        ({"duration_s": 2.0, "duration_ms": 5531}, "truncated"),  # an interrupted download's first 2 s
        ({"score": 2}, "judge_below"),
    ],
)
def test_each_gate_rejects_with_its_code(changes, reason):
    out = _verdict(**changes)
    assert out["kept"] is False and reason in out["reasons"]


def test_a_clip_is_truncated_only_past_the_tolerance_and_where_the_release_lists_its_duration():
    assert _verdict(duration_s=4.16, duration_ms=4200)["kept"] is True  # a decoder's tens of milliseconds
    assert _verdict(duration_s=4.2, duration_ms=None)["kept"] is True  # not from a release
    assert _verdict(duration_s=4.2, duration_ms=3000)["kept"] is True  # longer is not truncated
    off = build_config(overrides=["gates.max_truncation_s=null"])
    row = pa.Table.from_pylist([{**GOOD, "duration_s": 1.0, "duration_ms": 5000}])
    assert apply_gates(row, build_gates(off)).column("kept").to_pylist() == [True]


def test_a_row_carries_every_reason_it_fails():
    out = _verdict(transcription="Thanks for watching!", score=1, duration_s=0.2)
    assert out["reasons"] == ["wer_above", "too_short", "judge_below"]


def test_no_sentence_means_null_wer_and_no_agreement_gate():
    out = _verdict(sentence=None)
    assert out["wer"] is None and out["cer"] is None and out["kept"] is True


@pytest.mark.parametrize("sentence", ["", "   ", "...", "« — »"])
def test_a_blank_prompted_sentence_is_rejected_not_kept_by_default(sentence):
    """A release row whose sentence is there but blank: nothing to agree with, and an empty label."""
    out = _verdict(sentence=sentence)
    assert out["wer"] is None and out["kept"] is False and out["reasons"] == ["no_sentence"]
    zh = _verdict(sentence=sentence, locale="zh-CN", transcription="今天天气很好")
    assert zh["reasons"] == ["no_sentence"]


def test_taiwanese_hokkien_is_measured_in_characters_as_its_han_script_is():
    """nan-tw has no Whisper language, but its sentences are Han characters with Tâi-lô in brackets: a word-level
    WER would take each sentence for one word and reject every clip that is not letter-perfect."""
    # A sentence from Common Voice's nan-tw corpus: its bracketed reading is not said twice.
    said = _verdict(locale="nan-tw", sentence="七月頓頓飽，八月攏無巧（khá）", transcription="七月頓頓飽八月攏無巧")
    assert said["cer"] == 0.0 and said["kept"] is True, said
    close = _verdict(locale="nan-tw", sentence="伊佇學校教冊。", transcription="伊在學校教書")
    assert close["cer"] == pytest.approx(2 / 6) and close["kept"] is True, close
    far = _verdict(locale="nan-tw", sentence="伊佇學校教冊。", transcription="今天天氣很好")
    assert far["kept"] is False and far["reasons"] == ["cer_above"]
    assert _verdict(locale="ab", sentence="Сара сыԥсадгьыл", transcription="Сара сыԥсадгьыл")["kept"] is True


def test_indic_scripts_are_measured_in_whole_words_and_gated_on_characters():
    """Transcripts the bundled base wrote for espeak-ng's Tamil and Hindi (2026-12-06).  Whisper's normalizer
    made each vowel sign a space, so WER counted fragments without vowels: the Tamil reading below scored
    0.5 and a wrong vowel none.  Measured in whole words it is 1.0 (no word letter-perfect) at CER 0.27:
    the speaker said the sentence, so the gate reads characters, as for scripts without spaces."""
    said = _verdict(locale="ta", sentence="நான் இன்று கடைக்குப் போகிறேன்.", transcription="நாள் இன்றுக்காக் குற்போகிறேன்.")
    assert said["wer"] == 1.0 and said["cer"] == pytest.approx(0.27, abs=0.01) and said["kept"] is True, said
    # Another sentence's reading (base heard Malayalam speech as Tamil): rejected on characters.
    other = _verdict(locale="ta", sentence="சூரியன் கிழக்கில் உதிக்கிறது.", transcription="சொல்றியாம் கிராகக்கிருகினான்.")
    assert other["kept"] is False and other["reasons"] == ["cer_above"], other
    # A vowel is a letter: "कल" (tomorrow) is not "काल" (time); the words stay whole.
    hindi = _verdict(locale="hi", sentence="कल बारिश होगी।", transcription="काल बारिश होगी")
    assert hindi["wer"] == pytest.approx(1 / 3) and hindi["cer"] > 0 and hindi["kept"] is True, hindi
    garbled = _verdict(locale="hi", sentence="पानी सौ डिग्री पर उबलता है।", transcription="Pani Sawvibri, Pahubal Taha")
    assert garbled["kept"] is False and garbled["reasons"] == ["cer_above"], garbled
    # Detection is outweighed by agreement in characters there too.
    gate = LanguageMismatch(default="en", min_prob=0.5, agree_wer=0.5, agree_cer=0.35)
    row = {"locale": "ta", "detected_language": "ml", "detected_language_prob": 0.8, "wer": 1.0}
    assert gate({**row, "cer": 0.27}) == (True, None) and gate({**row, "cer": 0.6}) == (False, "language_mismatch")


def test_an_empty_transcript_is_rejected_as_no_speech_and_an_old_quarantined_one_is_decided_again():
    """Whisper wrote nothing (its no-speech rule dropped every window: noise, music, a hiss): a verdict on the
    clip, so a rejection with its reason, not a quarantined row.  A table row stored quarantined so before is
    decided by today's gates when the plan decides it again."""
    out = _verdict(transcription=" ", no_speech_prob=None, avg_logprob=None, score=None, score_expected=None)
    assert out["kept"] is False and "no_speech" in out["reasons"] and out["wer"] == 1.0, out
    assert "judge_below" not in out["reasons"]  # the judge left it unscored: nothing was said
    # Noise in a Portuguese release, "detected" as Norwegian: no speech, so no language to mismatch.
    noise = {"locale": "pt", "detected_language": "nn", "detected_language_prob": 0.9, "wer": 1.0, "cer": 1.0}
    gate = LanguageMismatch(default="en", min_prob=0.5, agree_wer=0.5, agree_cer=0.35)
    assert gate({**noise, "transcription": ""}) == (True, None)
    assert gate({**noise, "transcription": "outra frase"}) == (False, "language_mismatch")
    assert "judge_below" in _verdict(score=None, score_expected=None)["reasons"]  # a spoken clip must be scored
    cfg = build_config()
    stored = {**GOOD, "id": "a", "engine_key": "k", "transcription": "", "score": None, "score_expected": None,
              "error": "empty transcript", "stage": "transcribe", "speech_ratio": 0.0, "wer": None,
              "agreement_key": "a"}  # fmt: skip
    other = {**stored, "id": "b", "error": "cannot decode audio: Format not recognised.", "stage": "decode"}
    a, b = decide_table(
        pa.Table.from_pylist([stored, other]), build_gates(cfg), [], language="en", fold_diacritics=False,
        agreement_key="a",
    ).to_pylist()  # fmt: skip
    assert (a["error"], a["stage"], a["kept"], a["wer"], a["agreement_key"]) == (None, None, False, 1.0, "a")
    assert {"no_speech", "wer_above", "mostly_silence"} <= set(a["reasons"]), a
    assert (b["error"], b["stage"], b["reasons"]) == (other["error"], "decode", [])  # still quarantined


def test_quarantined_rows_get_no_verdict():
    out = _verdict(error="audio is silent", stage="decode")
    assert out["kept"] is False and out["reasons"] == [] and out["wer"] is None


def test_the_judge_gate_follows_threshold_on():
    cfg = build_config(threshold=3.9, threshold_on="score_expected")
    assert failed_gates({**GOOD}, build_gates(cfg)) == ["judge_below"]
    assert failed_gates({**GOOD, "score_expected": 4.0}, build_gates(cfg)) == []


def test_language_mismatch_only_when_the_model_is_sure():
    gate = LanguageMismatch(default="en", min_prob=0.5)
    heard = lambda lang, p, **row: gate({"detected_language": lang, "detected_language_prob": p, **row})  # noqa: E731
    assert heard("pt", 0.9, locale="pt") == (True, None)
    assert heard("es", 0.8, locale="pt") == (False, "language_mismatch")
    assert heard("es", 0.3, locale="pt") == (True, None)
    assert heard("zh", 0.99, locale="zh-CN") == (True, None)
    assert gate({"detected_language": None}) == (True, None)  # an English-only model reports no language


def test_cantonese_heard_as_chinese_is_no_language_mismatch():
    """Whisper before large-v3 has no Cantonese and hears it as Chinese; large-v3 often does too."""
    gate = LanguageMismatch(default="en", min_prob=0.5)
    for locale in ("yue", "zh-HK"):
        row = {"locale": locale, "detected_language_prob": 0.9}
        assert gate({**row, "detected_language": "zh"}) == (True, None)
        assert gate({**row, "detected_language": "yue"}) == (True, None)
        assert gate({**row, "detected_language": "ja"}) == (False, "language_mismatch")
    assert gate({"locale": "zh-CN", "detected_language": "yue", "detected_language_prob": 0.9}) == (True, None)
    english = {"locale": "en", "detected_language": "zh", "detected_language_prob": 0.9}
    assert gate(english) == (False, "language_mismatch")


def test_one_spoken_language_under_two_names_is_no_language_mismatch():
    """Urdu and Hindi are one spoken language in two scripts (so are Serbian, Croatian and Bosnian, and
    Norway's two written standards): a detector hearing one as the other, even when sure, says nothing
    about the speech.  The agreement gates, in the locale's script, still decide."""
    gate = LanguageMismatch(default="en", min_prob=0.5)
    for locale, heard in (("ur", "hi"), ("hi", "ur"), ("sr", "hr"), ("nn-NO", "no")):
        row = {"locale": locale, "detected_language": heard, "detected_language_prob": 0.95}
        assert gate(row) == (True, None), (locale, heard)
    assert gate({"locale": "ur", "detected_language": "en", "detected_language_prob": 0.95}) == (
        False,
        "language_mismatch",
    )
    assert gate({"locale": "hi", "detected_language": "bn", "detected_language_prob": 0.95}) == (
        False,
        "language_mismatch",
    )


def test_a_transcript_that_agrees_with_its_sentence_outweighs_detection():
    """Telephone-band Spanish read word for word, heard as Hebrew: kept; English speech forced through the
    Spanish decoder agrees with nothing: still rejected (#33)."""
    gate = LanguageMismatch(default="en", min_prob=0.5, agree_wer=0.5, agree_cer=0.35)
    row = {"locale": "es", "detected_language": "he", "detected_language_prob": 0.63}
    assert gate({**row, "wer": 0.0}) == (True, None)
    assert gate({**row, "wer": 0.5}) == (True, None)
    assert gate({**row, "wer": 0.9}) == (False, "language_mismatch")
    assert gate({**row, "wer": None}) == (False, "language_mismatch")  # no sentence: no evidence
    english = {"locale": "es", "detected_language": "en", "detected_language_prob": 0.97, "wer": 1.0}
    assert gate(english) == (False, "language_mismatch")
    # Scripts without spaces weigh CER.
    zh = {"locale": "zh-CN", "detected_language": "ja", "detected_language_prob": 0.7, "wer": 1.0}
    assert gate({**zh, "cer": 0.2}) == (True, None) and gate({**zh, "cer": 0.6}) == (False, "language_mismatch")
    # The config turns it on by default; null brings back detection alone.
    on = [g for g in build_gates(build_config()) if isinstance(g, LanguageMismatch)]
    assert on[0]({**row, "wer": 0.1}) == (True, None)
    off = build_config(overrides=["gates.language_agree_wer=null", "gates.language_agree_cer=null"])
    alone = [g for g in build_gates(off) if isinstance(g, LanguageMismatch)]
    assert alone[0]({**row, "wer": 0.1}) == (False, "language_mismatch")


def test_a_kept_clip_s_language_is_its_locale_s_and_detection_has_its_own_column():
    t = pa.Table.from_pylist(
        [{**GOOD, "locale": "es", "sentence": "hola amigo", "transcription": "hola amigo",
          "detected_language": "he", "detected_language_prob": 0.63}]
    )  # fmt: skip
    (out,) = apply_gates(t, build_gates(build_config()), language="en").to_pylist()
    assert out["kept"] is True and out["language"] == "es" and out["detected_language"] == "he"


def test_a_table_row_written_before_detected_language_keeps_its_detection():
    """Older tables held the detection in ``language``/``language_prob``: deciding such a row again moves it
    to ``detected_language`` and still gates on it."""
    cfg = build_config()
    legacy = {**GOOD, "id": "a", "locale": "pt", "engine_key": "k", "language": "es", "language_prob": 0.9,
              "transcription": "something else entirely", "sentence": "Plants use sunlight."}  # fmt: skip
    legacy.pop("detected_language")
    legacy.pop("detected_language_prob")
    out = decide_table(
        pa.Table.from_pylist([legacy]), build_gates(cfg), [], language="en", fold_diacritics=False, agreement_key="a"
    ).to_pylist()[0]
    assert (out["detected_language"], out["detected_language_prob"], out["language_prob"]) == ("es", 0.9, None)
    assert out["language"] == "pt" and "language_mismatch" in out["reasons"]


def test_gates_can_be_turned_off():
    cfg = build_config(overrides=["gates.max_wer=null", "gates.min_duration_s=null"])
    assert failed_gates({**GOOD, "wer": 1.0, "duration_s": 0.1}, build_gates(cfg)) == []


def test_reason_counts():
    reasons = pa.array([["wer_above"], [], None, ["wer_above", "too_short"]], pa.list_(pa.string()))
    assert reason_counts(reasons) == {"wer_above": 2, "too_short": 1}
    assert reason_counts(pa.chunked_array([], pa.list_(pa.string()))) == {}


def test_input_without_sentence_flows_through_every_contract():
    """Parquet with no `sentence`: the layout knows it, outputs simply lack the column, the agreement
    gates have nothing to compare (null WER/CER, never 0), and the row is judged on the rest."""
    from pipeline.columns import AUDIO, ID
    from pipeline.dag import check_curation, curation_stages
    from pipeline.io.schema import inspect_schema
    from pipeline.table.schema import clips_schema, conform
    from tests.unit.test_contracts import MODELS

    schema = pa.schema([(ID, pa.string()), (AUDIO, pa.binary()), ("age", pa.string())])
    layout = inspect_schema(schema)
    assert not layout.has_sentence and layout.passthrough == ("age",)
    check_curation(["age"], curation_stages(build_config(), MODELS, ["age"]))
    row = {k: v for k, v in GOOD.items() if k != "sentence"}
    gated = apply_gates(pa.Table.from_pylist([row]), build_gates(build_config()))
    out = gated.to_pylist()[0]
    assert out["wer"] is None and out["cer"] is None and out["kept"] is True
    # The table takes the row with a null sentence and the input's own column.
    stored = conform(
        gated.append_column("age", pa.array(["thirties"])), clips_schema(pa.schema([("age", pa.string())]))
    )
    assert stored.column("sentence").to_pylist() == [None] and stored.column("age").to_pylist() == ["thirties"]


def test_common_voice_status_and_reported_sentences_gate_with_their_codes():
    from pipeline.stages.gate_rules import kept_statuses

    gates = build_gates(build_config(), "validated")
    assert failed_gates({**GOOD, "cv_status": "validated"}, gates) == []
    assert failed_gates({**GOOD, "cv_status": None}, gates) == []  # not from a release: nothing to judge by
    assert failed_gates({**GOOD, "cv_status": "invalidated"}, gates) == ["cv_invalidated"]
    assert failed_gates({**GOOD, "cv_status": "other"}, gates) == ["cv_not_validated"]
    assert failed_gates({**GOOD, "cv_status": "deleted"}, gates) == ["cv_deleted"]
    assert failed_gates({**GOOD, "sentence_reported": True}, gates) == ["sentence_reported"]
    lenient = build_gates(build_config(overrides=["gates.exclude_reported=false"]), "validated")
    assert failed_gates({**GOOD, "sentence_reported": True}, lenient) == []
    # Curating other.tsv keeps other clips; a configured list wins.
    assert kept_statuses("other", None) == {"validated", "other"}
    assert kept_statuses("train", None) == {"validated"}
    assert kept_statuses("train", ["validated", "other"]) == {"validated", "other"}


def test_a_locale_the_judge_does_not_score_is_decided_by_the_gates_alone():
    import pyarrow as pa

    from pipeline.config import build_config
    from pipeline.stages.gate_rules import build_gates
    from pipeline.stages.gates import failed_gates
    from pipeline.stages.judge import unjudged

    cfg = build_config()
    assert cfg.judge.locales == ["en"] and build_config("cluster").judge.locales is None
    off = cfg.model_copy(update={"judge": cfg.judge.model_copy(update={"enabled": False})})
    assert "judge_below" in {g.code for g in build_gates(cfg)}
    assert "judge_below" not in {g.code for g in build_gates(off)}
    row = {"wer": 0.1, "cer": 0.05, "duration_s": 3.0, "score": None, "score_expected": None}
    assert "judge_below" not in failed_gates(row, build_gates(off))
    out = unjudged(pa.table({"id": ["a"], "transcription": ["hola"], "extra": [1]}), keep=("id", "transcription"))
    assert out.column_names == ["id", "transcription", "score", "score_expected"]
    assert out.column("score").to_pylist() == [None]


def test_every_reason_a_gate_can_give_has_a_human_name():
    from pipeline.config import build_config
    from pipeline.stages.gate_rules import CV_STATUS_CODES, REASON_NAMES, CvStatus, build_gates

    for profile in ("local", "cluster"):
        cfg = build_config(profile, overrides=["gates.min_bandwidth_hz=4500", "quality.dnsmos=true"])
        gates = build_gates(cfg, "validated")
        # Common Voice's status gate gives one code per status (CV_STATUS_CODES).
        codes = {g.code for g in gates if not isinstance(g, CvStatus)} | set(CV_STATUS_CODES.values())
        assert codes - set(REASON_NAMES) == set(), codes - set(REASON_NAMES)


def test_judge_enabled_false_switches_the_judge_off_in_every_locale_and_says_which_setting():
    """``--set judge.enabled=false`` was printed by ``curate config`` and accepted, then overwritten per locale
    from judge.locales: the judge started and scored English anyway."""
    from pipeline.config import build_config
    from pipeline.dag import Models
    from pipeline.models.resolve import ResolvedModel
    from pipeline.run import locale_setups

    whisper = ResolvedModel("openai/whisper-large-v3", "openai/whisper-large-v3", "main")
    models = Models(transcriber=whisper, judge=ResolvedModel("some/judge", "some/judge", "main"))
    on = build_config(overrides=["transcriber.model=openai/whisper-large-v3"])
    off = build_config(overrides=["transcriber.model=openai/whisper-large-v3", "judge.enabled=false"])
    assert {loc: c.judge.enabled for loc, (c, _) in locale_setups(on, models, ["en", "de"]).items()} == {
        "en": True, "de": False
    }  # fmt: skip
    assert {loc: c.judge.enabled for loc, (c, _) in locale_setups(off, models, ["en", "de"]).items()} == {
        "en": False, "de": False
    }  # fmt: skip
    assert (on.judge.off_for("en"), on.judge.off_for("de")) == (None, "judge.locales")
    assert (off.judge.off_for("en"), off.judge.off_for("de")) == ("judge.enabled", "judge.locales")
