import pytest

from pipeline.metrics import corpus_wer, edit_distance, expected_score_bins, normalize_text, score_histogram


def test_normalize_strips_case_punctuation_and_hyphens():
    assert normalize_text("Hello, World! It's state-of-the-art.") == [
        "hello",
        "world",
        "its",
        "state",
        "of",
        "the",
        "art",
    ]


def test_edit_distance_counts_sub_ins_del():
    assert edit_distance(["a", "b", "c"], ["a", "x", "c"]) == 1
    assert edit_distance(["a", "b", "c"], ["a", "b"]) == 1
    assert edit_distance(["a", "b"], ["a", "b", "c", "d"]) == 2
    assert edit_distance([], ["a"]) == 1


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
