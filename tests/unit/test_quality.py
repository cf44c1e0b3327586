"""Acoustic quality: each signal on fixtures built here with one degradation each, the gates' reasons,
the config switches, DNSMOS against speechmos itself, and the run report's histograms."""

from __future__ import annotations

import io
import sys
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import soundfile as sf

from bench import quality_set as qs
from pipeline.config import build_config
from pipeline.quality.signals import (
    bandwidth_hz,
    clipping_ratio,
    dropouts,
    loudness_lufs,
    remove_dc,
    snr_db,
    speech_span,
    trim_span,
)
from pipeline.result import Tally
from pipeline.stages.decode import decode_audio
from pipeline.stages.gate_rules import quality_gates
from pipeline.stages.quality import measure_quality

RATE = qs.RATE


@pytest.fixture(scope="module")
def degraded() -> dict[str, qs.Clip]:
    """One clip of every condition of bench/quality_set.py (built, never committed)."""
    clips = qs.build(count=1, clean=2)
    return {c.condition if c.condition != "clean" else c.id: c for c in clips}


def measured(clips: dict[str, qs.Clip], cfg) -> dict[str, dict]:
    table = pa.table({"id": list(clips), "audio_bytes": [c.encoded() for c in clips.values()]})
    out = decode_audio(table, cfg.audio, cfg.quality)
    if cfg.quality.enabled:  # as the DAG composes it
        out = measure_quality(out, cfg.quality, cfg.audio)
    return {r["id"]: r for r in out.drop_columns(["arr", "audio_bytes"]).to_pylist()}


def reasons(row: dict, cfg) -> list[str]:
    return [code for keep, code in (g(row) for g in quality_gates(cfg)) if not keep]


def test_each_degradation_gets_its_own_reason_and_clean_speech_none(degraded):
    cfg = build_config("local", overrides=["gates.min_bandwidth_hz=4500"])
    rows = measured(degraded, cfg)
    expect = {
        "clean-000": [],
        "clean-001": [],
        "loud": [],
        "white@20": [],
        "white@0": ["noisy"],
        "music@0": ["noisy"],
        "clipped@8": ["clipped"],
        "clipped-below@0.3": ["clipped"],
        "clipped-below@0.8": ["clipped"],
        "padded": ["mostly_silence"],
        "quiet": ["too_quiet"],
        "narrowband": ["narrow_band"],
        "dropouts": ["dropouts"],
        "gaps": ["dropouts"],
    }
    got = {k: reasons(rows[k], cfg) for k in expect}
    assert got == expect
    for row in rows.values():  # every signal measured on every decoded clip; DNSMOS is off here
        for col in ("snr_db", "speech_ratio", "leading_silence_s", "trailing_silence_s", "loudness_lufs",
                    "clipping_ratio", "bandwidth_hz"):  # fmt: skip
            assert row[col] is not None, (row["id"], col)
    # Dropouts are told only over a floor a microphone could have: the -58 dBFS clip's is under it.
    assert {k: rows[k]["dropouts"] for k in ("clean-000", "clean-001", "loud", "white@20", "quiet")} == {
        "clean-000": 0, "clean-001": 0, "loud": 0, "white@20": 0, "quiet": None
    }  # fmt: skip
    assert all(row.get("dnsmos_ovrl") is None for row in rows.values())
    # The phrase sits 1-3 s into 8-10 s of room tone.
    assert 1.0 <= rows["padded"]["leading_silence_s"] <= 3.1 and rows["padded"]["trailing_silence_s"] > 4


def test_dropouts_are_digital_silence_inside_speech_over_a_floor_and_nothing_else():
    """A recording never falls below its own noise floor; a lost packet does.  Where the pauses are digital
    silence themselves (espeak-ng's speech, a noise gate) or the floor is one an MP3 encoder silences by
    itself, nothing can be told: None, which passes."""
    rng = np.random.default_rng(5)
    speech = qs.at_level(qs.speech(1)[0], -20)
    floor = qs.mix(speech, qs.pink(len(speech), rng), 40)
    assert dropouts(floor, RATE) == 0
    assert dropouts(qs.dropped(floor, rng), RATE) >= 2
    assert dropouts(qs.gapped(floor, rng), RATE) >= 2
    # Leading and trailing digital silence (a recorder's start) is no dropout.
    pad = np.zeros(RATE // 2, np.float32)
    assert dropouts(np.concatenate([pad, floor, pad]), RATE) == 0
    # A stretch inside a pause, far from any speech, loses nothing.
    long = np.concatenate([floor, qs.mix(np.zeros(2 * RATE, np.float32), qs.pink(2 * RATE, rng), 0) * 0.01, floor])
    hole = long.copy()
    middle = len(floor) + RATE
    hole[middle : middle + RATE // 20] = 0
    assert dropouts(hole, RATE) == dropouts(long, RATE) == 0
    # No floor to judge by: espeak-ng's own digital silence between words, or a floor 90 dB down.
    assert dropouts(speech, RATE) is None
    assert dropouts(qs.dropped(speech, rng), RATE) is None
    assert dropouts(qs.mix(speech, qs.pink(len(speech), rng), 75), RATE) is None
    assert dropouts(np.zeros(RATE, np.float32), RATE) is None


def _stops(seed: int, rate: int = 48_000) -> np.ndarray:
    """Synthesized speech as espeak-ng makes it: voiced syllables, each fading into the 10-30 ms of digital
    silence of a stop, no pauses and no floor; then MP3-encoded at 48 kHz, as Common Voice ships clips."""
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(14):
        n = int(rng.uniform(0.15, 0.3) * rate)
        t = np.arange(n) / rate
        f0 = rng.uniform(100, 180)
        voiced = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12)) * np.hanning(n) ** 0.3
        fade = int(0.02 * rate)
        voiced[-fade:] *= np.linspace(1, 0, fade) ** 3
        parts += [0.3 * voiced, np.zeros(int(rng.choice([0.01, 0.02, 0.03]) * rate))]
    buf = io.BytesIO()
    sf.write(buf, np.concatenate(parts).astype(np.float32), rate, format="MP3")
    return sf.read(io.BytesIO(buf.getvalue()), dtype="float32")[0]


def test_a_synthesizers_stops_are_no_dropouts_once_mp3_encoded():
    """espeak-ng's Spanish and French, resampled to 48 kHz and MP3-encoded, had 2-10 "dropouts" in one clip of
    five and clean clips were rejected for it: the encoder leaves a frame or two between a word's fade and
    its stop's digital silence, which read as a floor.  A floor is a pause that holds for 30 ms."""
    for seed in range(5):
        assert dropouts(_stops(seed), 48_000) is None, seed
    # Recorded in a room (its tone before and after the words, and under them), zeroed stretches are
    # dropouts again.
    rng = np.random.default_rng(7)
    tone = np.zeros(24_000, np.float32)
    speech = np.concatenate([tone, _stops(0), tone])
    floored = qs.mix(speech, qs.pink(len(speech), rng), 40)
    assert dropouts(floored, 48_000) == 0
    assert dropouts(qs.gapped(floored, rng), 48_000) >= 2


def test_narrow_band_is_off_by_default_and_quality_can_be_switched_off(degraded):
    cfg = build_config("local")
    assert cfg.gates.min_bandwidth_hz is None
    rows = measured({"narrowband": degraded["narrowband"]}, cfg)
    assert rows["narrowband"]["bandwidth_hz"] < 4500 and reasons(rows["narrowband"], cfg) == []
    off = build_config("local", overrides=["quality.enabled=false"])
    rows = measured({"white@0": degraded["white@0"], "clipped@8": degraded["clipped@8"]}, off)
    for row in rows.values():
        assert row.get("snr_db") is None and row["clipping_ratio"] is None
        assert reasons(row, off) == []  # nothing measured: nothing to judge by


def test_a_dc_offset_is_neither_noise_nor_clipping_and_clipping_with_one_still_is(degraded):
    """A constant offset (a cheap microphone's) made a 46 dB clip ``noisy`` at 0.02 of full scale, and at
    0.3 ``clipped`` too, since the quiet samples piled up at one level."""
    cfg = build_config("local")
    clean = degraded["clean-000"]
    clips = {"none": clean}
    for dc in (0.02, 0.3):
        for encoding in ("mp3", "wav16"):
            clips[f"dc{dc}-{encoding}"] = replace(clean, audio=clean.audio + dc, encoding=encoding)
    loud = clean.audio * (8 / np.abs(clean.audio).max())
    clips["clipped-dc"] = replace(clean, audio=np.clip(loud + 0.2, -1, 1).astype(np.float32), encoding="wav16")
    rows = measured(clips, cfg)
    base = rows["none"]["snr_db"]
    assert base > 30 and reasons(rows["none"], cfg) == []
    for name in clips:
        if name.startswith("dc"):
            row = rows[name]
            assert reasons(row, cfg) == [], (name, row["snr_db"], row["clipping_ratio"])
            assert abs(row["snr_db"] - base) < 5 and row["clipping_ratio"] < 1e-3, (name, row["snr_db"], base)
    assert "clipped" in reasons(rows["clipped-dc"], cfg)
    # The blocker starts settled: a constant offset leaves nothing, and a click on the first sample no tail.
    assert np.abs(remove_dc(np.full(16_000, 0.3, np.float32), 16_000)).max() == 0.0
    click = np.zeros(16_000, np.float32)
    click[0] = 0.9
    assert np.abs(remove_dc(click, 16_000)[1:]).max() < 0.01
    # The stages hear the clip without its offset (the stored bytes keep it).
    offset = pa.table({"id": ["x"], "audio_bytes": [clips["dc0.3-wav16"].encoded()]})
    arr = np.asarray(decode_audio(offset, cfg.audio, cfg.quality).column("arr")[0].values)
    assert abs(float(arr.mean())) < 2e-3


def test_bandwidth_is_measured_before_resampling():
    import soxr

    t = np.arange(2 * 8000) / 8000
    noise = np.random.default_rng(0).standard_normal(len(t))
    speechy = np.sin(2 * np.pi * 300 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.1 * noise

    up = soxr.resample(speechy.astype(np.float32) * 0.3, 8000, 48000)
    assert bandwidth_hz(up, 48000) < 4100  # 8 kHz audio stored at 48 kHz is still 4 kHz wide
    wide = np.random.default_rng(1).standard_normal(48000).astype(np.float32) * 0.1
    assert bandwidth_hz(wide, 48000) > 20000


def test_a_dc_offset_does_not_narrow_the_measured_bandwidth():
    """An offset's power sits at 0 Hz, above the speech's peak: the band must be read without it."""
    from scipy.signal import butter, lfilter

    from pipeline.config import QualityConfig
    from pipeline.stages.decode import native_signals

    b, a = butter(8, 6000 / 24000)
    band = lfilter(b, a, np.random.default_rng(0).normal(0, 0.1, 3 * 48000)).astype(np.float32)
    clean = native_signals(band, 48000, QualityConfig())[1]
    assert clean > 9000
    for offset in (0.05, 0.3, -0.3):
        assert native_signals(band + offset, 48000, QualityConfig())[1] == pytest.approx(clean, rel=0.05)


def test_clipping_is_heard_below_full_scale_and_through_mp3_and_loud_clean_speech_is_not():
    t = np.arange(3 * 48000) / 48000
    sine = np.sin(2 * np.pi * 220 * t)
    # Speech-like: in a 3 s clip the envelope touches 0.999 of full scale once, as a loud syllable does.
    hot = 0.999 * sine * np.exp(-(((t - 0.5) / 0.1) ** 2))
    assert clipping_ratio(hot) < 1e-3
    assert clipping_ratio(0.5 * sine) == 0.0  # a steady tone piles up at its crest, but is no plateau
    assert clipping_ratio(np.clip(4 * sine, -1, 1)) > 0.5  # flattened at ±1 most of the time
    lone = np.zeros(1000)
    lone[[10, 500]] = 1.0  # isolated full-scale samples are not runs
    assert clipping_ratio(lone) == 0.0

    # Speech clipped at 0.3, 0.5 and 0.8 of full scale, then normalised to 0.99 (its plateaus quantised
    # to 0.98996 by 16 bits, or rippling around ~0.99 with MP3's overshoot above them): heard, either way.
    speech = qs.speech(3)
    for x in speech:
        loud = x * (0.999 / np.abs(x).max())
        for stored in (qs.mp3, qs.wav16):
            assert clipping_ratio(sf.read(io.BytesIO(stored(loud)), dtype="float32")[0]) < 1e-3
            for level in qs.CLIP_LEVELS:
                flat = np.clip(x * 12 / np.abs(x).max(), -level, level) * (0.99 / level)
                assert clipping_ratio(sf.read(io.BytesIO(stored(flat)), dtype="float32")[0]) > 0.01, (level, stored)


def test_speech_span_snr_and_loudness_arithmetic():
    speech = np.array([False, False, True, True, False, True, False])
    ratio, lead, trail = speech_span(speech, 16000)
    assert ratio == pytest.approx(3 / 7) and lead == pytest.approx(2 * 0.032) and trail == pytest.approx(0.032)
    assert speech_span(np.zeros(5, bool), 16000) == (0.0, 5 * 0.032, 0.0)
    power = np.array([1e-4] * 10 + [1e-2] * 10)
    flags = np.array([False] * 10 + [True] * 10)
    assert snr_db(power, flags, ~flags) == pytest.approx(10 * np.log10((1e-2 - 1e-4) / 1e-4))
    assert snr_db(power, np.zeros(20, bool), np.ones(20, bool)) is None  # no speech: nothing to compare
    t = np.arange(3 * 16000) / 16000
    a = loudness_lufs(0.1 * np.sin(2 * np.pi * 1000 * t), 16000)
    b = loudness_lufs(0.01 * np.sin(2 * np.pi * 1000 * t), 16000)
    assert a - b == pytest.approx(20, abs=0.1) and -25 < a < -20
    assert loudness_lufs(np.zeros(16000), 16000) is None and loudness_lufs(np.ones(100), 16000) is None
    # Under the -70 LUFS absolute gate, a clip still has a (very low) loudness, never a null that passes.
    faint = loudness_lufs(1e-4 * np.sin(2 * np.pi * 1000 * t), 16000)
    assert faint == pytest.approx(a - 60, abs=0.1) and faint < -70
    assert trim_span(5.0, 1.0, 2.0, 0.2) == (0.8, 3.2)
    assert trim_span(5.0, None, 2.0, 0.2) is None and trim_span(1.0, 0.6, 0.5, 0.1) is None


def test_dnsmos_matches_speechmos_clip_by_clip(degraded):
    import soxr
    from speechmos import dnsmos as reference

    from pipeline.quality.dnsmos import Dnsmos

    clips = [np.clip(soxr.resample(degraded[k].audio, RATE, 16000), -1, 1) for k in ("clean-000", "white@0", "padded")]
    ours = Dnsmos(threads=1).score(clips)
    for clip, mine in zip(clips, ours, strict=True):
        ref = reference.run(clip, 16000)
        for ours_key, ref_key in (("dnsmos_sig", "sig_mos"), ("dnsmos_bak", "bak_mos"), ("dnsmos_ovrl", "ovrl_mos"),
                                  ("dnsmos_p808", "p808_mos")):  # fmt: skip
            assert mine[ours_key] == pytest.approx(float(ref[ref_key]), abs=1e-3)
    assert ours[0]["dnsmos_ovrl"] > ours[1]["dnsmos_ovrl"]  # clean above 0 dB white noise


def test_dnsmos_fails_loudly_without_its_runtime(monkeypatch):
    from pipeline.quality.dnsmos import Dnsmos, DnsmosUnavailable

    monkeypatch.setitem(sys.modules, "librosa", None)  # import librosa now raises ImportError
    with pytest.raises(DnsmosUnavailable, match="librosa"):
        Dnsmos()


def test_the_report_shows_signal_histograms_and_the_new_reasons():
    from pipeline.io.table_sink import tally_of
    from pipeline.show.report import RunReport, histogram_markdown

    rows = pa.table(
        {
            "id": ["a", "b", "c"],
            "error": pa.array([None, None, None], pa.string()),
            "stage": pa.array([None, None, None], pa.string()),
            "kept": [True, False, False],
            "score": pa.array([4, 4, 4], pa.int32()),
            "score_expected": [4.0, 4.0, 4.0],
            "wer": [0.0, 0.0, 0.0],
            "duration_s": [3.0, 3.0, 3.0],
            "reasons": [[], ["noisy"], ["mostly_silence", "clipped"]],
            "snr_db": [40.0, 3.0, 30.0],
            "speech_ratio": [0.8, 0.7, 0.1],
            "dnsmos_ovrl": pa.array([None, None, None], pa.float64()),
        }
    )
    tally = tally_of(rows)
    assert set(tally.signal_bins) == {"snr_db", "speech_ratio"}  # DNSMOS was off: no histogram of it
    assert tally.signal_bins["snr_db"]["≥40"] == 1 and tally.signal_bins_kept["snr_db"]["≥40"] == 1
    cfg = build_config("local")
    report = RunReport(shards=1, tally=tally, locales=[], models={}, config=cfg.public_dict())
    text = histogram_markdown(report)
    assert "## SNR (dB" in text and "15–20 ◀ min 15" in text and "0.2–0.3 ◀ min 0.25" in text
    assert "noisy (SNR below the minimum)" in text and "mostly silence" in text and "clipped at full scale" in text
    assert isinstance(Tally.model_validate_json(tally.model_dump_json()), Tally)


def test_trim_cuts_exported_audio_to_the_speech_and_records_it():
    from pipeline.table.export import trimmed

    rate = 48000
    audio = np.zeros(5 * rate, np.float32)
    audio[rate : 3 * rate] = 0.3 * np.sin(2 * np.pi * 200 * np.arange(2 * rate) / rate)
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format="FLAC")
    batch = pa.table(
        {
            "id": ["x", "y"],
            "audio_bytes": [buf.getvalue(), buf.getvalue()],
            "duration_s": [5.0, 5.0],
            "leading_silence_s": pa.array([1.0, None], pa.float64()),
            "trailing_silence_s": pa.array([2.0, None], pa.float64()),
        }
    )
    out = trimmed(batch, pad=0.2).to_pylist()
    cut, rate2 = sf.read(io.BytesIO(out[0]["audio_bytes"]))
    assert rate2 == rate and len(cut) / rate == pytest.approx(2.4, abs=1e-3)
    assert (out[0]["trim_start_s"], out[0]["trim_end_s"], out[0]["duration_s"]) == pytest.approx((0.8, 3.2, 2.4))
    assert out[1]["audio_bytes"] == buf.getvalue() and out[1]["trim_start_s"] is None  # not measured: whole
    # The exported bytes' own hash and size, not the untrimmed audio's.
    import hashlib

    for row in out:
        assert row["audio_sha256"] == hashlib.sha256(row["audio_bytes"]).hexdigest()
        assert row["audio_size"] == len(row["audio_bytes"])
