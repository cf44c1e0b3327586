"""Acoustic signals of one clip, as pure functions of its samples.

Each returns a plain float (or None where the clip gives nothing to measure), so the stage that calls
them and the tests that check them need no engine.  Speech/non-speech decisions come from Silero VAD's
per-frame probabilities (``pipeline.quality.vad``), passed in as an array.
"""

from __future__ import annotations

import numpy as np

# Silero VAD scores 512-sample frames at 16 kHz: 32 ms each.
VAD_FRAME = 512
# A frame is a sure pause (noise floor) under this speech probability; between it and the speech
# threshold a frame is neither (word onsets and tails).
PAUSE_PROB = 0.2
# Where the VAD hears no pause long enough to measure the noise floor, the quietest tenth of the frames
# stands in for it (the gaps between words).
MIN_NOISE_FRAMES = 5
NOISE_PERCENTILE = 10
# An SNR above this is reported as this: digital silence between words has no noise to divide by.
MAX_SNR_DB = 100.0


def frame_power(audio: np.ndarray, frame: int = VAD_FRAME) -> np.ndarray:
    """Mean power of each ``frame``-sample frame (the last one zero-padded), aligned with the VAD's."""
    n = -(-len(audio) // frame) * frame
    padded = np.zeros(n, dtype=np.float64)
    padded[: len(audio)] = audio
    return (padded.reshape(-1, frame) ** 2).mean(axis=1)


def speech_span(speech: np.ndarray, rate: int, frame: int = VAD_FRAME) -> tuple[float, float, float]:
    """``(speech_ratio, leading_silence_s, trailing_silence_s)`` from per-frame speech flags.

    A clip with no speech frame is all silence: ratio 0, and its whole length is leading silence.
    """
    frames = len(speech)
    if frames == 0:
        return 0.0, 0.0, 0.0
    hits = np.flatnonzero(speech)
    if hits.size == 0:
        return 0.0, frames * frame / rate, 0.0
    return float(hits.size / frames), float(hits[0] * frame / rate), float((frames - 1 - hits[-1]) * frame / rate)


def snr_db(power: np.ndarray, speech: np.ndarray, pause: np.ndarray) -> float | None:
    """Speech-to-noise ratio in dB: mean power of the speech frames (less the noise they hold) over the
    noise floor.

    The noise floor is the median power of the frames the VAD is sure hold no speech (``pause``: a
    median, so the tail of a word leaking into a pause does not lift it), or the mean of the quietest
    tenth of all frames when there are too few pauses (continuous speech, or noise loud enough to pass
    for speech).  None when the clip has no speech frame: there is no speech to compare.
    """
    if not speech.any():
        return None
    if int(pause.sum()) >= MIN_NOISE_FRAMES:
        noise = float(np.median(power[pause]))
    else:
        noise = float(power[power <= np.percentile(power, NOISE_PERCENTILE)].mean())
    signal = float(power[speech].mean()) - noise
    if noise <= 0:
        return MAX_SNR_DB
    if signal <= 0:
        return -MAX_SNR_DB if signal < 0 else 0.0
    return float(np.clip(10 * np.log10(signal / noise), -MAX_SNR_DB, MAX_SNR_DB))


# The DC blocker's corner: far under speech (a voice's fundamental is 70 Hz and up), over a slow drift.
DC_CUTOFF_HZ = 15.0


def remove_dc(audio: np.ndarray, rate: int) -> np.ndarray:
    """``audio`` through a one-pole DC blocker (a constant or slowly drifting offset removed), float32.

    Not the clip's mean: speech's own waveform is lopsided, and subtracting its mean would put an offset
    into the pauses it leaves alone.  The filter starts settled on the median of the first 10 ms, so an
    offset that is there from the start leaves no step behind, and a click on the first sample no tail."""
    from scipy.signal import lfilter, lfilter_zi

    if len(audio) == 0:
        return audio.astype(np.float32)
    pole = float(np.exp(-2 * np.pi * DC_CUTOFF_HZ / rate))
    b, a = np.array([1.0, -1.0]), np.array([1.0, -pole])
    start = float(np.median(audio[: max(1, rate // 100)]))
    out, _ = lfilter(b, a, audio.astype(np.float64), zi=lfilter_zi(b, a) * start)
    return out.astype(np.float32)


# A pure tone's samples pile up towards its crest, up to 2.3 times as many within 5% of a level as in
# the band just under it; a plateau holds far more.  Past this factor, a pile-up is a plateau.
PLATEAU_EXCESS = 2.5


def clipping_ratio(
    audio: np.ndarray, level: float = 0.99, min_run: int = 3, tolerance: float = 0.05, floor: float = 0.3
) -> float:
    """Share of the clip's samples flattened by clipping: the larger of two measures.

    - **At the rails**: samples inside runs of at least ``min_run`` consecutive samples at or above
      ``level`` of full scale (a lone loud peak is not a run).
    - **On a plateau below full scale**, relative to the clip's own peak: a recording clipped at 0.3 and
      normalised later, or an MP3 of a clipped take (whose ringing overshoots the plateau, so the
      plateau is not the peak), piles its samples up at one level.  For each level between ``floor``
      and 1 of the peak, the samples within ``tolerance`` of it are compared with those in the band
      just under it; the excess over ``PLATEAU_EXCESS`` times that band is the plateau's share.  Clean
      speech thins out towards its peak, so it has none, however loud.
    """
    if len(audio) == 0:
        return 0.0
    # The rails are raw values; a plateau is the waveform's shape, so a DC offset (where the quiet samples
    # pile up) must not pass for one.
    centred = np.abs(audio - audio.mean(dtype=np.float64))
    return max(_rails(np.abs(audio), level, min_run), _plateau(centred, tolerance, floor, min_run))


def _run_bounds(flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[starts, ends) of the runs of consecutive True values, from the edges of the flags."""
    edges = np.diff(flags.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _runs(hot: np.ndarray) -> np.ndarray:
    """Lengths of the runs of consecutive True samples."""
    starts, ends = _run_bounds(hot)
    return ends - starts


def _rails(mags: np.ndarray, level: float, min_run: int) -> float:
    hot = mags >= level
    if not hot.any():
        return 0.0
    runs = _runs(hot)
    return float(runs[runs >= min_run].sum() / len(mags))


def _plateau(mags: np.ndarray, tolerance: float, floor: float, min_run: int, levels: int = 100) -> float:
    peak = float(mags.max())
    if peak <= 0:
        return 0.0
    ordered = np.sort(mags)
    at = np.linspace(floor * peak, peak, levels)
    below = lambda x: np.searchsorted(ordered, x)  # noqa: E731
    band = below(at * (1 + tolerance)) - below(at * (1 - tolerance))
    under = below(at * (1 - tolerance)) - below(at * (1 - 3 * tolerance))
    excess = band - PLATEAU_EXCESS * under
    best = int(np.argmax(excess))
    if excess[best] <= 0:
        return 0.0
    # A plateau is flat for a while: stray samples at one level (isolated spikes) are not one.
    lo, hi = at[best] * (1 - tolerance), at[best] * (1 + tolerance)
    if not (_runs((mags >= lo) & (mags < hi)) >= min_run).any():
        return 0.0
    return float(excess[best]) / len(mags)


def loudness_lufs(audio: np.ndarray, rate: int) -> float | None:
    """Integrated loudness (ITU-R BS.1770-4, gated) in LUFS; None for a clip under one 400 ms block or of
    digital silence.  A clip whose every block is under the -70 LUFS absolute gate is measured with the
    relative gate alone (at a gain that lifts it over the absolute one, taken off again): it reads under
    -70, so too_quiet rejects it, rather than null, which would pass."""
    import pyloudnorm

    if len(audio) < int(0.4 * rate) + 1:
        return None
    x = audio.astype(np.float64)
    meter = pyloudnorm.Meter(rate)
    value = meter.integrated_loudness(x)
    peak = float(np.abs(x).max(initial=0.0))
    if not np.isfinite(value) and peak > 0:
        gain = 0.5 / peak  # the relative gate is scale-free; the absolute gate is not
        value = meter.integrated_loudness(x * gain) - 20 * np.log10(gain)
    return float(value) if np.isfinite(value) else None


def bandwidth_hz(audio: np.ndarray, rate: int, floor_db: float = 50.0, nfft: int = 1024) -> float | None:
    """Effective bandwidth: the highest frequency whose long-term power is within ``floor_db`` of the
    spectrum's peak (a spectral roll-off on a dB scale).

    Measured at the clip's own rate, before resampling: 8 kHz telephone audio upsampled to 48 kHz has
    nothing above 4 kHz, which a 16 kHz copy could not tell from 8 kHz of real bandwidth.
    """
    if len(audio) < nfft:
        return None
    hop = nfft // 2
    frames = np.lib.stride_tricks.sliding_window_view(audio, nfft)[::hop]
    spec = (np.abs(np.fft.rfft(frames * np.hanning(nfft), axis=1)) ** 2).mean(axis=0)
    if not np.any(spec > 0):
        return None
    db = 10 * np.log10(spec + 1e-20)
    above = np.flatnonzero(db >= db.max() - floor_db)
    return float(above[-1] * rate / nfft)


def trim_span(duration: float, leading: float | None, trailing: float | None, pad: float) -> tuple[float, float] | None:
    """The [start, end) seconds of a clip's speech with ``pad`` each side, from its measured leading and
    trailing silence; None when they were not measured or the clip has no speech to keep."""
    if leading is None or trailing is None or leading + trailing >= duration:
        return None
    return max(0.0, leading - pad), min(duration, duration - trailing + pad)


# Dropouts: digital silence inside a recording whose pauses hold a noise floor (a lost packet, a buffer
# underrun, a bad splice).  On 10 ms frames of the clip's own samples, before resampling.
DROPOUT_FRAME_S = 0.01
# A frame this quiet is digital silence: a microphone's floor, even dithered 16-bit, is louder.
SILENT_DBFS = -100.0
# A frame this far under the clip's loud frames (their 95th percentile) is a pause.
PAUSE_BELOW_DB = 35.0
# A silent stretch is a dropout when a frame within REACH of it is this close to the loud frames: it
# interrupts speech (a stretch inside a pause loses nothing).
NEAR_SPEECH_DB = 30.0
REACH = 2
# Pauses quieter than this: an MP3 encoder silences such a floor by itself, so silence proves nothing.
FLOOR_MIN_DBFS = -85.0
# A floor is a pause that holds: this many frames in a row under the pause line and over digital silence.
# Synthesized speech (espeak-ng) has none, only a frame or two where a word fades into its own digital
# silence (more once resampled and MP3-encoded), which must not count as one.
FLOOR_RUN = 3


def _runs_of(flags: np.ndarray, at_least: int) -> np.ndarray:
    """``flags`` kept only where they stand in runs of ``at_least`` or more."""
    starts, ends = _run_bounds(flags)
    long = ends - starts >= at_least
    out = np.zeros_like(flags)
    for s, e in zip(starts[long], ends[long], strict=True):
        out[s:e] = True
    return out


def dropouts(audio: np.ndarray, rate: int) -> float | None:
    """How many stretches of digital silence interrupt the speech of a recording that otherwise never falls
    below its own noise floor.  None where that cannot be told: pauses that are digital silence themselves
    (a synthesizer's speech, a noise gate) or a floor under ``FLOOR_MIN_DBFS``; leading and trailing
    silence is not counted."""
    frame = max(1, int(rate * DROPOUT_FRAME_S))
    n = len(audio) // frame
    if n < 3:
        return None
    power = (audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2).mean(axis=1)
    db = 10 * np.log10(power + 1e-20)
    silent = db < SILENT_DBFS
    sound = np.flatnonzero(~silent)
    if sound.size == 0:
        return None
    db, silent = db[sound[0] : sound[-1] + 1], silent[sound[0] : sound[-1] + 1]
    loud = float(np.percentile(db, 95))
    pause = db < loud - PAUSE_BELOW_DB
    floor = _runs_of(pause & ~silent, FLOOR_RUN)
    if pause.any() and (floor.sum() * 2 < pause.sum() or float(np.median(db[floor])) < FLOOR_MIN_DBFS):
        return None
    starts, ends = _run_bounds(silent)
    near = loud - NEAR_SPEECH_DB
    count = 0
    for s, e in zip(starts, ends, strict=True):
        around = np.concatenate([db[max(0, s - REACH) : s], db[e : e + REACH]])
        count += bool(around.size and around.max() >= near)
    return float(count)
