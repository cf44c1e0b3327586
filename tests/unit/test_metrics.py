import pytest

from pipeline.metrics import agreement, corpus_wer, expected_score_bins, normalize_text, score_histogram


def test_whisper_english_normalizer_ignores_numbers_titles_and_punctuation():
    assert normalize_text("I have 1 apple, Mr. Smith!") == normalize_text("i have one apple mister smith")
    assert agreement("He paid $20 for it.", "he paid twenty dollars for it") == (0.0, 0.0)


def test_agreement_counts_word_and_character_errors():
    wer, cer = agreement("the cat sat on the mat", "the cat sat on a hat")
    assert wer == pytest.approx(2 / 6)
    assert 0 < cer < wer
    assert agreement("red green blue", "completely different words")[0] == 1.0


def test_agreement_is_null_without_a_reference_never_zero():
    assert agreement(None, "anything") == (None, None)
    assert agreement("", "anything") == (None, None)
    assert agreement("...", "anything") == (None, None)


def test_other_languages_use_the_basic_normalizer():
    assert normalize_text("¿Qué tal, Señor?", "es") == ["qué", "tal", "señor"]
    assert agreement("Qué tal, señor.", "que tal senor", "es")[0] > 0  # accents still count outside English


def test_a_mark_stays_with_its_letter_and_only_accents_fold():
    """Whisper's basic normalizer made every combining mark a space: an Indic word fell apart at each vowel
    sign and lost it ("मैं आज बाज़ार" was "म आज ब ज र"), and unfolded Arabic fell apart at each haraka."""
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    hindi = "मैं आज बाज़ार जा रहा हूँ।"
    for fold in (True, False):
        assert len(normalize_text(hindi, "hi", fold)) == 6
        assert len(normalize_text("நான் இன்று கடைக்குப் போகிறேன்", "ta", fold)) == 4
    assert agreement("कल", "काल", "hi")[0] == 1.0  # a vowel sign is a letter, never folded as an accent
    assert agreement("น้ำเดือด", "นาเดือด", "th")[1] > 0  # Thai's vowel and tone marks count in its CER
    assert normalize_text("كَتَبَ الوَلَدُ", "ar", True) == ["كتب", "الولد"]  # harakat are accents: folded
    assert normalize_text("كَتَبَ الوَلَدُ", "ar", False) == ["كَتَبَ", "الوَلَدُ"]  # or kept on their letters
    # Text without combining marks comes out as Whisper's normalizer gives it.
    for text in ("¿Qué tal, Señor? [risas] Ça va (bien)!", "Straße, Øre og Æble", "Привет, мир!", "Ἀθῆναι"):
        for fold in (True, False):
            assert " ".join(normalize_text(text, "xx", fold)) == BasicTextNormalizer(fold)(text).strip(), text


def test_invisible_format_characters_are_no_letters():
    """Persian writes "می‌جوشد" (boils) with a zero-width non-joiner; a transcript that joins it ("میجوشد") read
    the same word and counted as an error, as did a right-to-left mark or a soft hyphen."""
    sentence = "آب در صد درجه می\u200cجوشد."
    for heard in ("آب در صد درجه میجوشد", "آب در صد درجه می\u200cجوشد"):
        for fold in (True, False):
            assert agreement(sentence, heard, "fa", fold_diacritics=fold) == (0.0, 0.0), (heard, fold)
    assert agreement("שלום\u200f עולם", "שלום עולם", "he") == (0.0, 0.0)
    assert agreement("Foto\u00adsynthese und Zucker", "Fotosynthese und Zucker", "de") == (0.0, 0.0)
    # A word said as two is still one error: the format character is dropped, not made a space.
    assert agreement(sentence, "آب در صد درجه می جوشد", "fa", fold_diacritics=True)[0] > 0


def test_a_language_whisper_does_not_know_is_not_normalised_as_english():
    """None is an unsupported locale's language (Abkhaz, Kabyle, Romansh...): its words are left as they are,
    where the English normalizer would turn "ten" into 10 and drop "um" as a filler."""
    assert normalize_text("Um, ten", "en") == ["10"]
    assert normalize_text("Um, ten", None) == ["um", "ten"]
    assert agreement("Um ten", "ten", None)[0] == 0.5


def test_corpus_wer_weights_by_reference_words():
    pairs = [("the cat sat", "the cat sat"), ("a b c d e", "a b x d")]  # 0 + 2 edits over 8 words
    assert corpus_wer(pairs) == pytest.approx(2 / 8)


def test_corpus_wer_ignores_formatting_differences():
    assert corpus_wer([("Okay, see you tomorrow then.", "okay see you tomorrow then")]) == 0


def test_corpus_wer_rejects_empty_references():
    with pytest.raises(ValueError):
        corpus_wer([("", "anything")])


def test_score_histogram_has_all_five_keys_and_skips_none():
    assert score_histogram([1, 4, 4, None, 5]) == {1: 1, 2: 0, 3: 0, 4: 2, 5: 1}


def test_expected_bins_cover_one_to_five_and_close_the_last_bin():
    bins = expected_score_bins([1.0, 1.49, 1.5, 4.99, 5.0, None])
    assert bins[0] == (1.0, 1.5, 2)
    assert bins[1] == (1.5, 2.0, 1)
    assert bins[-1] == (4.5, 5.0, 2)
    assert sum(c for _, _, c in bins) == 5


def test_numbers_written_as_digits_agree_with_the_sentence_that_spells_them():
    """Common Voice's sentences spell numbers out and Whisper writes digits: base heard German "um zehn Uhr"
    as "um 10 Uhr" (one error in seven words nobody said wrong), and "drei, zwei, eins" as "3, 2, 1" (WER 1)."""
    said = [
        ("de", "Der Zug fährt um zehn Uhr ab.", "Der Zug fährt um 10 Uhr ab."),
        ("de", "Drei, zwei, eins.", "3, 2, 1."),
        ("de", "Er wurde neunzehnhundertneunzig geboren.", "Er wurde 1990 geboren."),  # a year, as said
        ("es", "Éramos veinte personas en la sala.", "Éramos 20 personas en la sala."),
        ("es", "Tengo cinco manzanas.", "Tengo 5 manzanas."),
        ("fr", "Elle a dix-huit ans.", "Elle a 18 ans."),
        ("fr", "Il y a septante personnes.", "Il y a 70 personnes."),  # Belgian and Swiss French
        ("fr", "Dix mille personnes.", "10 000 personnes."),  # digits grouped in thousands are one number
        ("pt", "Ela tem dezesseis anos.", "Ela tem 16 anos."),  # Brazil's spelling
        ("pt", "Ela tem dezasseis anos.", "Ela tem 16 anos."),  # Portugal's
        ("ru", "Ей восемнадцать лет.", "Ей 18 лет."),
        ("nl", "In negentienhonderdnegentig.", "In 1990."),
        ("fa", "هجده سال", "۱۸ سال"),  # Persian digits are digits
        ("ja", "十月に行きます。", "10月に行きます。"),
        ("zh", "我一九九零年出生。", "我1990年出生。"),  # read digit by digit
        ("zh", "一百个人", "100个人"),
    ]
    for language, sentence, heard in said:
        assert agreement(sentence, heard, language, fold_diacritics=True) == (0.0, 0.0), (language, heard)
    # A sentence holding digits (a Parquet mirror's) reads the same way, and a wrong number is still wrong.
    assert agreement("Tengo 5 manzanas.", "Tengo cinco manzanas.", "es", fold_diacritics=True) == (0.0, 0.0)
    assert agreement("我1990年出生。", "我一九九零年出生。", "zh")[1] == 0.0  # spelled as the transcript says it
    assert agreement("Tengo 5 manzanas.", "", "es") == (1.0, 1.0)
    assert agreement("x " + "9" * 5000, "x " + "9" * 5000, "de") == (0.0, 0.0)  # a run no one says: left as is
    assert agreement("Der Zug fährt um zehn Uhr ab.", "Der Zug fährt um 11 Uhr ab.", "de")[0] == pytest.approx(1 / 7)
    # English keeps Whisper's own number rules; a language num2words cannot spell keeps its digits.
    assert agreement("He is eighteen.", "He is 18.") == (0.0, 0.0)
    assert agreement("मैं 18 साल का हूँ", "मैं 18 साल का हूँ", "hi") == (0.0, 0.0)
    assert normalize_text("18", "hi") == ["18"]


def test_japanese_katakana_and_hiragana_are_one_syllabary():
    """base wrote espeak-ng's "こんにちは、げんきですか。" as "コンビチハ、元気でスウカ": CER 1.0, every character
    counted wrong, where the syllables were mostly right.  Both kana are read as hiragana; kanji stay."""
    assert agreement("こんにちは", "コンニチハ", "ja") == (0.0, 0.0)
    assert agreement("コーヒーをのみます", "こーひーをのみます", "ja") == (0.0, 0.0)
    assert agreement("こんにちは", "ｺﾝﾆﾁﾊ", "ja") == (0.0, 0.0)  # half-width katakana, through NFKC
    assert agreement("げんきです", "元気です", "ja")[1] > 0  # a kanji is not its reading
    assert agreement("こんにちは", "コンニチハ", "zh")[1] > 0  # only Japanese is folded


def test_arabic_teh_marbuta_alef_maksura_and_tatweel():
    """Arabic writes a word's last ة as ه and its ى as ي about as often as not ("المدرسة", "المدرسه"), and
    stretches a word with a tatweel ("كـتاب"): the same words, each counted an error.  Both sides read ة as ه
    and ى as ي, without the tatweel; Persian and Urdu drop the tatweel too."""
    sentence = "ذهبت إلى المدرسة مع صديقتي."
    for heard in ("ذهبت الي المدرسه مع صديقتي", "ذهبت إلي المدرسة مع صديقتى", "ذهبـت إلى المدرســة مع صديقتي"):
        assert agreement(sentence, heard, "ar", fold_diacritics=True) == (0.0, 0.0), heard
    assert agreement("كتاب جديد", "كـتاب جديد", "ar", fold_diacritics=False) == (0.0, 0.0)
    assert agreement("کتاب خوب", "کتـاب خوب", "fa") == (0.0, 0.0)
    # Another word is still an error, and only Arabic-script languages are folded.
    assert agreement(sentence, "ذهبت الي المدينة مع صديقتي", "ar")[0] > 0
    assert agreement("المدرسة", "المدرسه", "he")[0] > 0
