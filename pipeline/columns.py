"""Every column the pipeline reads or adds, by name.

Stages take their column names from here instead of repeating strings; what each stage reads, writes
and drops is declared by the stage itself (``pipeline/stage.py``), and checked when the DAG is
built, so a stage that reads a column nobody wrote fails with the stage's name, not in a Ray worker.
"""

from __future__ import annotations

# Common Voice's clip-list columns from v17 on, in the release's order: the one list the release reader,
# the plan and the clips table's schema use.  Older releases say ``accent`` and lack
# ``sentence_id``/``sentence_domain``; both load into this one shape.
CV_COLUMNS = (
    "client_id",
    "path",
    "sentence_id",
    "sentence",
    "sentence_domain",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
)
CV_INT_COLUMNS = ("up_votes", "down_votes")
# What the release reader adds from the release's other files: clip_durations.tsv, the list a clip is in,
# the split it is drawn into, reported.tsv.
CV_DERIVED = ("duration_ms", "cv_status", "split", "sentence_reported")
# The release's own verdicts and metadata, stored per clip: the latest release that lists a clip decides
# them (``path`` is the clip's id, ``locale`` its table's).
CV_METADATA = (*(c for c in CV_COLUMNS if c not in ("path", "locale")), *CV_DERIVED, "last_release")
# From the reader (every input form).
ID = "id"
AUDIO = "audio_bytes"
SENTENCE = "sentence"
AUDIO_SHA = "audio_sha256"  # the clip's bytes' sha256: its key in the audio table
AUDIO_SIZE = "audio_size"
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
DETECTED_LANGUAGE = "detected_language"  # what a multilingual model hears (with its probability)
DETECTED_LANGUAGE_PROB = "detected_language_prob"
CONFIDENCE = (AVG_LOGPROB, NO_SPEECH_PROB, COMPRESSION_RATIO, DETECTED_LANGUAGE, DETECTED_LANGUAGE_PROB)
# The clip's language: its locale's (Whisper's code), the language it is kept as.  Tables written before
# detected_language existed hold the detection here, with LEGACY_LANGUAGE_PROB beside it.
LANGUAGE = "language"
LEGACY_LANGUAGE_PROB = "language_prob"
# How the clip sounds (docs/curation.md "Acoustic quality").  Measured on the original samples by decode:
CLIPPING = "clipping_ratio"
BANDWIDTH = "bandwidth_hz"
DROPOUTS = "dropouts"  # stretches of digital silence inside speech (quality/signals.py)
# on the 16 kHz samples with Silero VAD, by measure_quality:
SNR = "snr_db"
SPEECH_RATIO = "speech_ratio"
LEADING_SILENCE = "leading_silence_s"
TRAILING_SILENCE = "trailing_silence_s"
LOUDNESS = "loudness_lufs"
# and by the DNSMOS stage, when quality.dnsmos is on.
DNSMOS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
DNSMOS_OVRL = "dnsmos_ovrl"
NATIVE_SIGNALS = (CLIPPING, BANDWIDTH, DROPOUTS)
VAD_SIGNALS = (SNR, SPEECH_RATIO, LEADING_SILENCE, TRAILING_SILENCE, LOUDNESS)
# Exports only, with quality.trim_silence: the span each clip's audio was cut to.
TRIM_START, TRIM_END = "trim_start_s", "trim_end_s"
QUALITY = (*NATIVE_SIGNALS, *VAD_SIGNALS, *DNSMOS)
# Agreement with the prompted sentence (gates stage).
WER = "wer"
CER = "cer"
REASONS = "reasons"  # machine-readable codes of every gate a row failed
# What the stored WER/CER were measured under (the normaliser and its settings): rows under another
# key are measured again when the plan re-decides them; the rest reuse theirs.
AGREEMENT_KEY = "agreement_key"
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
