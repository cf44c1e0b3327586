"""The row contract: every column the pipeline adds, and what each stage reads, writes and drops.

Stages take their column names from here instead of repeating strings, and ``check_stages`` walks the
DAG's stages in order when it is built, so a stage that reads a column nobody wrote fails at build
time with the stage's name, not deep inside a Ray worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# From the reader (every input form).
ID = "id"
AUDIO = "audio_bytes"
SENTENCE = "sentence"
AUDIO_SHA = "audio_sha256"  # the clip's bytes' sha256: its key in the audio table
# Set by the release reader when a TSV row has no audio to decode (its clip is missing).
READ_ERROR = "read_error"
# Added by the stages.
ARR = "arr"  # 16 kHz mono float32 samples, dropped after transcription
DURATION = "duration_s"
ERROR = "error"  # null while the row is healthy; the reason once it is quarantined
STAGE = "stage"  # the stage that set ``error``
TRANSCRIPT = "transcription"
FEATURES = "input_features"  # transformers backend only
TOKENS = "token_ids"  # transformers backend only
# Whisper's own confidence, per row (transcription stages).
AVG_LOGPROB = "avg_logprob"
NO_SPEECH_PROB = "no_speech_prob"
COMPRESSION_RATIO = "compression_ratio"
LANGUAGE = "language"  # what a multilingual model hears
LANGUAGE_PROB = "language_prob"
CONFIDENCE = (AVG_LOGPROB, NO_SPEECH_PROB, COMPRESSION_RATIO, LANGUAGE, LANGUAGE_PROB)
# How the clip sounds (docs/curation.md "Acoustic quality").  Measured on the original samples by decode:
CLIPPING = "clipping_ratio"
BANDWIDTH = "bandwidth_hz"
# on the 16 kHz samples with Silero VAD, by measure_quality:
SNR = "snr_db"
SPEECH_RATIO = "speech_ratio"
LEADING_SILENCE = "leading_silence_s"
TRAILING_SILENCE = "trailing_silence_s"
LOUDNESS = "loudness_lufs"
# and by the DNSMOS stage, when quality.dnsmos is on.
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
DNSMOS_OVRL = "dnsmos_ovrl"
NATIVE_SIGNALS = (CLIPPING, BANDWIDTH)
VAD_SIGNALS = (SNR, SPEECH_RATIO, LEADING_SILENCE, TRAILING_SILENCE, LOUDNESS)
# Exports only, with quality.trim_silence: the span each clip's audio was cut to.
TRIM_START, TRIM_END = "trim_start_s", "trim_end_s"
QUALITY = (*NATIVE_SIGNALS, *VAD_SIGNALS, *DNSMOS)
# Agreement with the prompted sentence (gates stage).
WER = "wer"
CER = "cer"
REASONS = "reasons"  # machine-readable codes of every gate a row failed
LOCALE = "locale"  # Common Voice's; decides the language a multilingual Whisper is told
SCORE = "score"
SCORE_EXPECTED = "score_expected"
KEPT = "kept"

# Input columns may not use these names, or the output would be ambiguous.
RESERVED = frozenset(
    {
        *(ARR, DURATION, TRANSCRIPT, SCORE, SCORE_EXPECTED, ERROR, STAGE, KEPT, READ_ERROR, WER, CER, REASONS),
        *CONFIDENCE,
        *QUALITY,
    }
)


class ColumnContractError(ValueError):
    """A stage reads a column that no earlier stage (or the input) provides."""


@dataclass(frozen=True)
class StageColumns:
    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...] = ()
    drops: tuple[str, ...] = ()
    # A projection: only these columns (and ``writes``) come out.  Every other column the stage is
    # given must be dropped earlier, by name, or the check fails: nothing vanishes unannounced.
    keeps: tuple[str, ...] | None = None


DECODE = StageColumns(
    "decode_audio", reads=(ID, AUDIO), writes=(ARR, DURATION, ERROR, STAGE, *NATIVE_SIGNALS), drops=(READ_ERROR,)
)
MEASURE = StageColumns("measure_quality", reads=(ARR, ERROR), writes=VAD_SIGNALS)
DNSMOS_STAGE = StageColumns("DnsmosScorer", reads=(ARR, ERROR), writes=DNSMOS)
TRANSCRIBE = StageColumns(
    "FasterWhisperTranscriber", reads=(ARR, ERROR, STAGE), writes=(TRANSCRIPT, *CONFIDENCE), drops=(ARR,)
)
FEATURIZE = StageColumns("WhisperFeatures", reads=(ARR, DURATION, ERROR, STAGE), writes=(FEATURES,), drops=(ARR,))
GENERATE = StageColumns(
    "HFWhisperTranscriber",
    reads=(FEATURES, ERROR),
    writes=(TOKENS, AVG_LOGPROB, NO_SPEECH_PROB, LANGUAGE, LANGUAGE_PROB),
    drops=(FEATURES,),
)
DETOKENIZE = StageColumns(
    "WhisperTokenDecoder",
    reads=(TOKENS, ERROR, STAGE, AVG_LOGPROB, NO_SPEECH_PROB, LANGUAGE, LANGUAGE_PROB),
    writes=(TRANSCRIPT, COMPRESSION_RATIO),
    drops=(TOKENS,),
)
# ``keeps`` is set per run (``dag.judged_columns``): the judge sees whole rows and returns many more.
JUDGE = StageColumns("add_judge_stage", reads=(TRANSCRIPT, ERROR, STAGE), writes=(SCORE, SCORE_EXPECTED))
GATES = StageColumns(
    "apply_gates",
    reads=(ERROR, TRANSCRIPT, DURATION, SCORE, SCORE_EXPECTED, *CONFIDENCE),
    writes=(WER, CER, KEPT, REASONS),
)
SINK = StageColumns(
    "TableSink", reads=(ID, TRANSCRIPT, SCORE, SCORE_EXPECTED, KEPT, REASONS, WER, CER, ERROR, STAGE, DURATION)
)


def check_stages(input_columns: Iterable[str], stages: Iterable[StageColumns]) -> set[str]:
    """The columns after ``stages`` run on ``input_columns``; ``ColumnContractError`` on a gap."""
    have = set(input_columns)
    for stage in stages:
        missing = [c for c in stage.reads if c not in have]
        if missing:
            raise ColumnContractError(
                f"{stage.name} reads {missing}, which no earlier stage writes (have {sorted(have)})"
            )
        if stage.keeps is not None:
            lost = have - set(stage.keeps) - set(stage.writes) - set(stage.drops)
            if lost:
                raise ColumnContractError(
                    f"{stage.name} keeps only its declared columns, so {sorted(lost)} would vanish here: "
                    "add them to what it keeps, or drop them by name in an earlier stage"
                )
            have &= set(stage.keeps)
        have = (have | set(stage.writes)) - set(stage.drops)
    return have
