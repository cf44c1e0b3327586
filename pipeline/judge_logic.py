"""Pure judge logic: prompt building and answer parsing. The engine lives in ``stages/judge.py``."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

CHOICES = ("1", "2", "3", "4", "5")


class JudgeAnswerError(ValueError):
    """The judge's text is not one of the allowed choices."""


def build_messages(system_prompt: str, transcript: str, max_chars: int) -> list[dict[str, str]]:
    """The seed's two-message chat, with the transcript cut so it fits the model's context."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": transcript[:max_chars]},
    ]


_SENTINEL = "\u2063TRANSCRIPT\u2063"


def split_chat_template(render: Callable[[list[dict[str, str]]], str], system_prompt: str) -> tuple[str, str]:
    """The rendered chat around the user's text, as (prefix, suffix), from one render with a sentinel.

    Lets the driver template every row with string concatenation, instead of ray.data.llm's
    chat-template, tokenize and detokenize actor pools (three more processes loading a tokenizer).
    ``ValueError`` when the template does not insert the user text verbatim exactly once.
    """
    text = render(build_messages(system_prompt, _SENTINEL, len(_SENTINEL)))
    if text.count(_SENTINEL) != 1:
        raise ValueError("the chat template does not place the user message verbatim exactly once")
    prefix, suffix = text.split(_SENTINEL)
    return prefix, suffix


def render_prompt(prefix: str, suffix: str, transcript: str, max_chars: int) -> str:
    return prefix + transcript[:max_chars] + suffix


def parse_score(text: Any) -> int:
    """The judge's constrained answer as an int in 1..5, or ``JudgeAnswerError``."""
    answer = str(text if text is not None else "").strip()
    if answer not in CHOICES:
        raise JudgeAnswerError(f"judge answer {answer[:40]!r} is not one of {', '.join(CHOICES)}")
    return int(answer)


def _token_entries(first_token: Any) -> Iterable[tuple[str, float]]:
    """(decoded token, logprob) pairs from one position of vLLM's logprobs, in either shape Ray emits."""
    if isinstance(first_token, Mapping):
        for key, entry in first_token.items():
            if isinstance(entry, Mapping):
                token = entry.get("decoded_token", key)
                yield str(token), float(entry["logprob"])
            else:
                yield str(key), float(entry)
    elif isinstance(first_token, Iterable):
        for entry in first_token:
            if isinstance(entry, Mapping):
                yield str(entry.get("decoded_token")), float(entry["logprob"])


def expected_score(logprobs: Any) -> float | None:
    """Σ p(k)·k over the choices at the first generated position, renormalised over the choices.

    Constrained decoding masks every other token, so the returned top-k may hold only the choices;
    renormalising makes the result the same either way.  ``None`` when no choice has a logprob.
    """
    if logprobs is None:
        return None
    positions = list(logprobs) if not isinstance(logprobs, Mapping) else [logprobs]
    if not positions:
        return None
    probs: dict[int, float] = {}
    for token, lp in _token_entries(positions[0]):
        key = token.strip()
        if key in CHOICES and math.isfinite(lp):
            probs[int(key)] = probs.get(int(key), 0.0) + math.exp(lp)
    total = sum(probs.values())
    if total <= 0:
        return None
    return sum(k * p for k, p in probs.items()) / total
