import math

import pytest

from pipeline.config import SEED_SYSTEM_PROMPT, JudgeConfig
from pipeline.stages.judge import (
    JudgeAnswerError,
    build_messages,
    expected_score,
    finalize_judgement,
    judge_request,
    parse_score,
)


@pytest.mark.parametrize("text,score", [("1", 1), (" 5\n", 5), ("3", 3)])
def test_parse_score_accepts_the_choices(text, score):
    assert parse_score(text) == score


@pytest.mark.parametrize("text", ["", None, "6", "0", "four", "4.5", "3 because"])
def test_parse_score_rejects_anything_else(text):
    with pytest.raises(JudgeAnswerError):
        parse_score(text)


def _lp(p):
    return math.log(p)


def test_expected_score_from_vllm_dict_shape():
    # Ray's vLLM stage returns one dict per generated position: token id -> {logprob, decoded_token}.
    logprobs = [
        {
            "16": {"logprob": _lp(0.5), "decoded_token": "4"},
            "17": {"logprob": _lp(0.25), "decoded_token": "5"},
            "15": {"logprob": _lp(0.25), "decoded_token": "3"},
        }
    ]
    assert expected_score(logprobs) == pytest.approx(0.5 * 4 + 0.25 * 5 + 0.25 * 3)


def test_expected_score_renormalises_over_the_choices_and_ignores_other_tokens():
    logprobs = [
        [
            {"decoded_token": "1", "logprob": _lp(0.2)},
            {"decoded_token": "2", "logprob": _lp(0.2)},
            {"decoded_token": "Hello", "logprob": _lp(0.6)},
        ]
    ]
    assert expected_score(logprobs) == pytest.approx(1.5)


def test_expected_score_none_without_choices():
    assert expected_score(None) is None
    assert expected_score([]) is None
    assert expected_score([{"9": {"logprob": -0.1, "decoded_token": "x"}}]) is None


def test_build_messages_keeps_seed_prompt_and_truncates():
    msgs = build_messages(SEED_SYSTEM_PROMPT, "x" * 50, max_chars=10)
    assert msgs[0] == {"role": "system", "content": SEED_SYSTEM_PROMPT}
    assert msgs[1] == {"role": "user", "content": "x" * 10}


def test_judge_request_constrains_to_choices():
    req = judge_request({"transcription": "photosynthesis", "error": None}, JudgeConfig())
    sp = req["sampling_params"]
    assert sp["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}
    assert sp["max_tokens"] == 1 and sp["logprobs"] == 5
    assert req["messages"][1]["content"] == "photosynthesis"


KEEP = ("id", "transcription", "error", "stage")


def test_finalize_turns_engine_error_into_quarantine():
    row = {"id": "a", "transcription": "t", "error": None, "stage": None, "__inference_error__": "boom"}
    out = finalize_judgement(row, KEEP)
    assert out["error"] == "judge engine error: boom" and out["stage"] == "judge" and out["score"] is None


def test_an_empty_transcript_is_left_unscored_not_quarantined():
    """Whisper heard no speech: the gates reject the clip (no_speech); the judge's answer to "-" is no score."""
    row = {"id": "a", "transcription": "", "error": None, "stage": None, "generated_text": "1",
           "logprobs": [{"1": {"logprob": 0.0, "decoded_token": "1"}}]}  # fmt: skip
    out = finalize_judgement(row, KEEP)
    assert out["error"] is None and out["score"] is None and out["score_expected"] is None


def test_finalize_turns_unparseable_answer_into_quarantine():
    row = {"id": "a", "transcription": "t", "error": None, "stage": None, "generated_text": "maybe"}
    out = finalize_judgement(row, KEEP)
    assert out["stage"] == "judge" and "not one of" in out["error"]


def test_finalize_keeps_upstream_error_and_drops_engine_columns():
    row = {
        "id": "a",
        "transcription": "",
        "error": "audio is empty (0 bytes)",
        "stage": "decode",
        "generated_text": "4",
        "messages": [],
        "prompt": "...",
    }
    out = finalize_judgement(row, KEEP)
    assert out == {
        "id": "a",
        "transcription": "",
        "error": "audio is empty (0 bytes)",
        "stage": "decode",
        "score": None,
        "score_expected": None,
    }


def test_finalize_scores_a_good_row():
    row = {
        "id": "a",
        "transcription": "t",
        "error": None,
        "stage": None,
        "generated_text": "4",
        "logprobs": [{"1": {"logprob": 0.0, "decoded_token": "4"}}],
    }
    out = finalize_judgement(row, KEEP)
    assert out["score"] == 4 and out["score_expected"] == pytest.approx(4.0) and out["error"] is None


def test_split_chat_template_renders_like_the_template():
    from pipeline.stages.judge import render_prompt, split_chat_template

    def chatml(messages):
        body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return body + "<|im_start|>assistant\n"

    prefix, suffix = split_chat_template(chatml, "Rate it.")
    for text in ["Photosynthesis makes sugar.", "x" * 50, ""]:
        assert render_prompt(prefix, suffix, text, 20) == chatml(
            [{"role": "system", "content": "Rate it."}, {"role": "user", "content": text[:20]}]
        )


def test_split_chat_template_refuses_templates_that_rewrite_the_text():
    from pipeline.stages.judge import split_chat_template

    with pytest.raises(ValueError, match="verbatim"):
        split_chat_template(lambda messages: messages[1]["content"].lower(), "sys")
    with pytest.raises(ValueError, match="verbatim"):
        split_chat_template(lambda messages: messages[1]["content"] * 2, "sys")


def test_a_judge_answer_without_logprobs_is_quarantined_not_rejected():
    row = {"id": "a", "transcription": "t", "error": None, "stage": None, "generated_text": "5", "logprobs": None}
    out = finalize_judgement(row, KEEP)
    assert out["stage"] == "judge" and "no logprobs" in out["error"]
    assert out["score"] is None and out["score_expected"] is None
