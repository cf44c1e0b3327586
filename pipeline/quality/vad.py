"""Silero VAD, as shipped inside faster-whisper's wheel (``faster_whisper/assets/silero_vad_v6.onnx``):
per-frame speech probabilities, with no download and no model of our own."""

from __future__ import annotations

import functools

import numpy as np

from pipeline.quality.signals import VAD_FRAME


@functools.cache
def _model():
    # faster-whisper's wrapper: one ONNX session, one intra-op thread, loaded once per process.
    from faster_whisper.vad import get_vad_model

    return get_vad_model()


def speech_probs(audio: np.ndarray) -> np.ndarray:
    """Speech probability of each 512-sample (32 ms at 16 kHz) frame of 16 kHz ``audio``."""
    if len(audio) == 0:
        return np.zeros(0, dtype=np.float32)
    n = -(-len(audio) // VAD_FRAME) * VAD_FRAME
    padded = np.zeros(n, dtype=np.float32)
    padded[: len(audio)] = audio
    return np.asarray(_model()(padded), dtype=np.float32).reshape(-1)
