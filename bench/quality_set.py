"""A labelled set for the acoustic-quality gates, built from the bundled sample's speech.

Every clip is the sample's speech (espeak-ng voices at 48 kHz) put through one condition, then
MP3-encoded at 48 kHz as Common Voice ships clips (the below-full-scale clipped ones: every other one
as 16-bit WAV instead, a clipped take stored losslessly).  The sample's speech has digital silence between
words, which no microphone gives, so even ``clean`` clips get a room noise floor 30-45 dB under the
speech, and a level between -30 and -14 dBFS RMS.

Conditions (``condition`` column) and the gate each one should fail (``expect``):

| condition | what | expect |
|---|---|---|
| clean | speech + room floor | nothing |
| loud | clean, peak-normalized to 0.999 (hot but not clipped) | nothing |
| white@S, babble@S, music@S | white noise, 5-talker babble, hold music at S = 20, 10, 5, 0 dB | see below |
| clipped@G | clean times G = 2, 4, 8, hard-clipped at full scale | ``clipped`` |
| clipped-below@L | clean times 12, clipped at L = 0.3, 0.5, 0.8, then peaking at 0.99 (WAV, MP3) | ``clipped`` |
| padded | a 0.6-1.2 s phrase inside 8-10 s of room floor | ``mostly_silence`` |
| quiet | clean at -58 dBFS RMS | ``too_quiet`` |
| narrowband | clean through 8 kHz (telephone), stored at 48 kHz | ``narrow_band`` |
| dropouts | clean with a fifth of its 20 ms frames zeroed at random (lost packets) | ``dropouts`` |
| gaps | clean with three stretches of 0.1-0.2 s zeroed (buffer underruns) | ``dropouts`` |

Noise mixes at 0 and 5 dB SNR should fail ``noisy`` and ``low_mos``; at 20 dB they should pass; 10 dB
is left to taste (not counted either way).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import soundfile as sf
import soxr

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "sample_data" / "common_voice_sample.parquet"
RATE = 48_000
SNRS = (20, 10, 5, 0)
GAINS = (2, 4, 8)
CLIP_LEVELS = (0.3, 0.5, 0.8)
NOISES = ("white", "babble", "music")
# A condition's gate, and the SNRs at which a noise condition must fail it.
NOISY_AT = (5, 0)
UNJUDGED = {f"{n}@10" for n in NOISES}


@dataclass(frozen=True)
class Clip:
    id: str
    condition: str
    expect: tuple[str, ...]  # the gate codes this clip should fail
    audio: np.ndarray  # float32 at RATE
    encoding: str = "mp3"  # or "wav16"

    def encoded(self) -> bytes:
        return mp3(self.audio) if self.encoding == "mp3" else wav16(self.audio)


def speech(count: int) -> list[np.ndarray]:
    rows = pq.read_table(SAMPLE).column("audio_bytes").to_pylist()[:count]
    out = []
    for data in rows:
        x, r = sf.read(io.BytesIO(data), dtype="float32")
        out.append(x if r == RATE else soxr.resample(x, r, RATE))
    return out


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))) + 1e-12)


def at_level(x: np.ndarray, dbfs: float) -> np.ndarray:
    return (x * (10 ** (dbfs / 20) / rms(x))).astype(np.float32)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spec = np.fft.rfft(rng.standard_normal(n))
    spec /= np.sqrt(np.maximum(np.arange(len(spec)), 1))
    return np.fft.irfft(spec, n=n)


def hold_music(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / RATE
    beat = 60 / rng.uniform(80, 130)
    out = np.zeros(n)
    for i, root in enumerate(rng.choice([220.0, 246.9, 261.6, 293.7, 329.6], size=int(t[-1] / (4 * beat)) + 1)):
        bar = (t >= i * 4 * beat) & (t < (i + 1) * 4 * beat)
        for ratio in (1.0, 1.26, 1.5, 2.0):
            out[bar] += np.sin(2 * np.pi * root * ratio * t[bar])
    return out + 3 * np.exp(-((t % beat) * 40)) * np.sin(2 * np.pi * 60 * t)


def babble(n: int, others: list[np.ndarray]) -> np.ndarray:
    out = np.zeros(n)
    for k, x in enumerate(others):
        looped = np.tile(x, -(-n // len(x)) + 1)
        start = (k * 7919) % len(x)
        out += looped[start : start + n] / rms(x)
    return out


def mix(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``x`` plus ``noise`` scaled so that the clip's speech power is ``snr_db`` over the noise's."""
    return (x + noise * (rms(x) / rms(noise)) * 10 ** (-snr_db / 20)).astype(np.float32)


def mp3(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(x, -1, 1).astype(np.float32), RATE, format="MP3")
    return buf.getvalue()


def wav16(x: np.ndarray) -> bytes:
    """16-bit WAV quantised as most tools do (full scale is 32767): a peak of 0.99 reads back as 0.98996."""
    buf = io.BytesIO()
    sf.write(buf, np.round(np.clip(x, -1, 1) * 32767).astype(np.int16), RATE, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def mp3_peak(x: np.ndarray, peak: float) -> np.ndarray:
    """``x`` scaled so that its MP3, decoded, peaks at ``peak``: a clipped take's MP3 rings above its
    plateau, so a tool that normalises the true peak leaves the plateau well under it."""
    decoded, _ = sf.read(io.BytesIO(mp3(x)), dtype="float32")
    return x * (peak / float(np.abs(decoded).max()))


def build(count: int = 10, clean: int = 40, seed: int = 0) -> list[Clip]:
    """``clean`` clean clips and ``count`` of every degraded condition (each from a different voice and
    sentence where the sample has enough)."""
    rng = np.random.default_rng(seed)
    voices = speech(40)
    clips: list[Clip] = []

    def base(i: int) -> np.ndarray:
        """Clip i: its speech at a plausible level over a room floor."""
        x = at_level(voices[i % len(voices)], rng.uniform(-30, -14))
        return mix(x, pink(len(x), rng), rng.uniform(30, 45))

    def add(condition: str, i: int, audio: np.ndarray, expect: tuple[str, ...] = (), encoding: str = "mp3") -> None:
        peak = float(np.abs(audio).max())
        if peak > 0.999 and "clipped" not in expect:  # only the clipped condition may hit the rails
            audio = audio * (0.95 / peak)
        clips.append(Clip(f"{condition}-{i:03d}", condition, expect, audio.astype(np.float32), encoding))

    for i in range(clean):
        add("clean", i, base(i))
    for i in range(count):
        x = base(i + 3)
        add("loud", i, x * (0.999 / np.abs(x).max()))
        for kind in NOISES:
            for snr in SNRS:
                y = base(i + 5 * snr + 1)
                if kind == "white":
                    n = rng.standard_normal(len(y))
                elif kind == "babble":
                    n = babble(len(y), [voices[(i + k * 3 + 1) % len(voices)] for k in range(5)])
                else:
                    n = hold_music(len(y), rng)
                add(f"{kind}@{snr}", i, mix(y, n, snr), ("noisy", "low_mos") if snr in NOISY_AT else ())
        for gain in GAINS:
            y = base(i + 11)
            add(f"clipped@{gain}", i, np.clip(y * gain / np.abs(y).max(), -1, 1), ("clipped",))
        phrase = at_level(voices[(i + 17) % len(voices)], -20)[: int(rng.uniform(0.6, 1.2) * RATE)]
        total = int(rng.uniform(8, 10) * RATE)
        start = int(rng.uniform(1, 3) * RATE)
        padded = np.zeros(total, np.float32)
        padded[start : start + len(phrase)] = phrase
        add("padded", i, mix(padded, pink(total, rng), 40), ("mostly_silence",))
        add("quiet", i, at_level(base(i + 23), -58), ("too_quiet",))
        telephone = soxr.resample(soxr.resample(base(i + 29), RATE, 8000), 8000, RATE)
        add("narrowband", i, telephone, ("narrow_band",))
    # Last, so that adding them left every clip above as it was.
    for i in range(count):
        for level in CLIP_LEVELS:
            y = base(i + 13)
            flat = np.clip(y * 12 / np.abs(y).max(), -level, level) * (0.99 / level)
            if i % 2 == 0:
                add(f"clipped-below@{level}", i, mp3_peak(flat, 0.99), ("clipped",))
            else:
                add(f"clipped-below@{level}", i, flat, ("clipped",), "wav16")
    for i in range(count):
        add("dropouts", i, dropped(base(i + 31), rng), ("dropouts",))
        add("gaps", i, gapped(base(i + 37), rng), ("dropouts",))
    return clips


def dropped(x: np.ndarray, rng: np.random.Generator, share: float = 0.2, ms: float = 20) -> np.ndarray:
    """``x`` with ``share`` of its ``ms`` frames zeroed at random."""
    frame = int(RATE * ms / 1000)
    out = x.copy()
    for k in np.flatnonzero(rng.random(len(x) // frame) < share):
        out[k * frame : (k + 1) * frame] = 0
    return out


def gapped(x: np.ndarray, rng: np.random.Generator, gaps: int = 3) -> np.ndarray:
    """``x`` with ``gaps`` stretches of 0.1-0.2 s zeroed."""
    out = x.copy()
    for _ in range(gaps):
        n = int(rng.uniform(0.1, 0.2) * RATE)
        start = int(rng.uniform(0.1, 0.9) * (len(x) - n))
        out[start : start + n] = 0
    return out


def judged(condition: str) -> bool:
    """Whether a clip of ``condition`` counts in precision and recall (10 dB SNR is left to taste)."""
    return condition not in UNJUDGED
