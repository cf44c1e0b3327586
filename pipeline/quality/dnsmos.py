"""DNSMOS P.835 (SIG, BAK, OVRL) and P.808, offline on CPU, from the ONNX files inside ``speechmos``'s
wheel (MIT; ``speechmos/dnsmos_models/``).

``speechmos.dnsmos.run`` scores one 9.01 s window at a time through two sessions it builds on first
use.  This runner keeps the same windows and the same arithmetic (the tests compare it with
``speechmos`` clip by clip) but loads the sessions once per process, runs every window of a batch of
clips in one call per model, and bounds onnxruntime to the threads its actor was given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

RATE = 16_000
WINDOW = int(9.01 * RATE)  # speechmos's INPUT_LENGTH at 16 kHz
# speechmos's polynomial fits from raw model outputs to MOS (non-personalized DNSMOS).
_SIG = np.poly1d([-0.08397278, 1.22083953, 0.0052439])
_BAK = np.poly1d([-0.13166888, 1.60915514, -0.39604546])
_OVR = np.poly1d([-0.06766283, 1.11546468, 0.04602535])
COLUMNS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808")
# Windows per model call.  The primary model's activations for 32 windows peak near 4 GiB, and
# onnxruntime's CPU arena then keeps that much for the life of the actor (6 GiB measured); 8 windows
# peak at 1.2 GiB and run as fast per clip (bench/dnsmos_memory.py, docs/curation.md).
MAX_WINDOWS = 8


class DnsmosUnavailable(RuntimeError):
    """speechmos, onnxruntime or librosa is missing: fail loudly rather than return NaN."""


def models_dir() -> str:
    try:
        import speechmos
    except ImportError as exc:
        raise DnsmosUnavailable(
            "quality.dnsmos is on but speechmos is not installed (pip install the 'quality' pins)"
        ) from exc
    path = os.path.join(os.path.dirname(speechmos.__file__), "dnsmos_models")
    for name in ("sig_bak_ovr.onnx", "model_v8.onnx"):
        if not os.path.isfile(os.path.join(path, name)):
            raise DnsmosUnavailable(f"speechmos's wheel lacks {name} under {path}")
    return path


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """speechmos's windows of one clip: the clip repeated until it is 9.01 s long, then 9.01 s windows
    every second."""
    audio = np.clip(audio, -1.0, 1.0).astype(np.float32)  # a resampler can overshoot full scale
    if len(audio) == 0:
        return []
    while len(audio) < WINDOW:
        audio = np.append(audio, audio)
    hops = int(np.floor(len(audio) / RATE) - 9.01) + 1
    out = [audio[i * RATE : i * RATE + WINDOW] for i in range(hops)]
    return [w for w in out if len(w) == WINDOW]


@dataclass
class Dnsmos:
    threads: int = 1

    def __post_init__(self) -> None:
        try:
            import librosa  # noqa: F401  (the P.808 model's mel features)
            import onnxruntime as ort
        except ImportError as exc:
            raise DnsmosUnavailable(f"quality.dnsmos is on but {exc.name} is not installed") from exc
        path = models_dir()
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, self.threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # No CPU arena: it keeps the largest call's buffers for the actor's life, and every quality actor
        # would hold gigabytes it no longer uses.
        opts.enable_cpu_mem_arena = False
        make = lambda f: ort.InferenceSession(  # noqa: E731
            os.path.join(path, f), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        self.primary, self.p808 = make("sig_bak_ovr.onnx"), make("model_v8.onnx")

    @staticmethod
    def _mel(segs: np.ndarray) -> np.ndarray:
        import librosa

        mel = librosa.feature.melspectrogram(y=segs[:, :-160], sr=RATE, n_fft=321, hop_length=160, n_mels=120)
        # power_to_db's ref=np.max is per window, as speechmos computes it one window at a time.
        db = np.stack([(librosa.power_to_db(m, ref=np.max) + 40) / 40 for m in mel])
        return np.ascontiguousarray(db.transpose(0, 2, 1), dtype=np.float32)

    def score(self, clips: list[np.ndarray], max_windows: int = MAX_WINDOWS) -> list[dict[str, float | None]]:
        """The four scores of each 16 kHz clip (None for an empty clip), windows averaged per clip."""
        per_clip = [windows(c) for c in clips]
        flat = [w for ws in per_clip for w in ws]
        raw, p808 = np.zeros((0, 3), np.float32), np.zeros((0,), np.float32)
        for i in range(0, len(flat), max_windows):
            segs = np.stack(flat[i : i + max_windows])
            raw = np.concatenate([raw, self.primary.run(None, {"input_1": segs})[0]])
            p808 = np.concatenate([p808, self.p808.run(None, {"input_1": self._mel(segs)})[0][:, 0]])
        out, at = [], 0
        for ws in per_clip:
            if not ws:
                out.append(dict.fromkeys(COLUMNS))
                continue
            r, p = raw[at : at + len(ws)], p808[at : at + len(ws)]
            at += len(ws)
            out.append(
                {
                    "dnsmos_sig": float(np.mean(_SIG(r[:, 0]))),
                    "dnsmos_bak": float(np.mean(_BAK(r[:, 1]))),
                    "dnsmos_ovrl": float(np.mean(_OVR(r[:, 2]))),
                    "dnsmos_p808": float(np.mean(p)),
                }
            )
        return out
