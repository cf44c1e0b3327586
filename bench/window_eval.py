"""Whisper's encoder window, 30 s against ``auto``, on CPU with real weights, through the transformers backend's
own stages (features, generate, token decoding; no Ray): WER (CER for unspaced scripts), the stage's
seconds, and whether the odds the gates use stay calibrated: "no speech" on speech and on non-speech,
Whisper's confidence, and the detected language.

    .venv/bin/python -m bench.window_eval [--english 100] [--models tiny.en base]

Sets:
- ``sample``: the bundled Common Voice sample (40 clips of real speech, CV-shaped; the fixtures' source);
- ``english``: the benchmark's English clips (espeak-ng, 2-10 s, ``bench/data.py``), the first ``--english``;
- ``multilingual``: espeak-ng speech in es, fr, de, zh-CN, ja (``bench/multilingual_set.py``), base only;
- ``non_speech``: the labelled set's music, noise, hiss and silence (``bench/labelled_set.py``): their
  "no speech" odds, which the ``no_speech`` gate reads.

The rule (issue #32): ``auto`` becomes the cluster default only if WER rises by at most 0.5 points on every
set.  Results: bench/results/window-eval-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from bench import labelled_set, multilingual_set
from bench.common import write_results
from pipeline.commonvoice.languages import unspaced, whisper_language
from pipeline.config import build_config
from pipeline.metrics import agreement, corpus_wer
from pipeline.models import resolve_model
from pipeline.runtime.hardware import cpu_flags, describe
from pipeline.stages.decode import decode_audio
from pipeline.stages.transcribe import HFWhisperTranscriber, WhisperFeatures, WhisperTokenDecoder
from scripts.make_cv_release import SAMPLE

MODELS = {"tiny.en": "bundled:whisper-tiny.en-hf", "base": "bundled:whisper-base-hf"}
WINDOWS = (30, "auto")
BATCH = 16


def english_sets(n: int) -> dict[str, pa.Table]:
    from bench.data import REPO, build

    sample = pq.read_table(SAMPLE, columns=["id", "audio_bytes", "sentence"])
    path = build(1000, REPO / "bench" / "data" / "clips-1000.parquet")
    english = pq.read_table(path, columns=["id", "audio_bytes", "sentence"]).slice(0, n)
    return {"sample": sample.append_column("locale", pa.array(["en"] * len(sample))),
            "english": english.append_column("locale", pa.array(["en"] * len(english)))}  # fmt: skip


def multilingual() -> pa.Table:
    rows = []
    for locale in ("es", "fr", "de", "zh-CN", "ja"):
        for i, (data, sentence, _, _) in enumerate(multilingual_set.clips(locale)):
            rows.append({"id": f"{locale}-{i}", "audio_bytes": data, "sentence": sentence, "locale": locale})
    return pa.Table.from_pylist(rows)


def non_speech() -> pa.Table:
    t = labelled_set.build()
    keep = [
        i for i, label in enumerate(t.column("label").to_pylist()) if label in ("music", "noise", "hiss", "silence")
    ]
    t = t.take(pa.array(keep))
    return pa.table({"id": t.column("id"), "audio_bytes": t.column("audio_bytes"), "sentence": t.column("sentence"),
                     "locale": pa.array(["en"] * len(t))})  # fmt: skip


def transcribe(model_path: str, window, rows: pa.Table) -> tuple[pa.Table, float]:
    """The three stages over ``rows`` in batches; seconds in the generate stage (the encoder's and decoder's)."""
    # Each row decoded forced in its locale's language, as the product does.
    cfg = build_config(overrides=["transcriber.backend=transformers", f"transcriber.window={window}"]).transcriber
    features, decoder = WhisperFeatures(cfg, model_path), WhisperTokenDecoder(cfg, model_path)
    generate = HFWhisperTranscriber(cfg, model_path)
    audio = decode_audio(rows, build_config().audio)
    generate(features(audio.slice(0, 2)))  # warm-up
    out, seconds = [], 0.0
    for start in range(0, audio.num_rows, BATCH):
        feats = features(audio.slice(start, BATCH))
        t0 = time.perf_counter()
        tokens = generate(feats)
        seconds += time.perf_counter() - t0
        out.append(decoder(tokens))
    return pa.concat_tables(out), seconds


def measure(got: pa.Table, speech: bool) -> dict:
    rows = got.to_pylist()
    ok = [r for r in rows if not r["error"]]
    m: dict = {"clips": len(rows), "errors": len(rows) - len(ok)}
    ns = np.array([r["no_speech_prob"] for r in ok if r["no_speech_prob"] is not None], dtype=float)
    if ns.size:
        m["no_speech_mean"] = float(ns.mean())
        m["no_speech_over_0.6"] = float((ns > 0.6).mean())
    # An empty transcript (no speech heard) is a healthy row now, whose decode may have no log-prob.
    lp = np.array([r["avg_logprob"] for r in ok if r["avg_logprob"] is not None], dtype=float)
    if lp.size:
        m["avg_logprob_mean"] = float(lp.mean())
    if not speech:
        return m
    by_locale: dict[str, list] = {}
    for r in rows:
        by_locale.setdefault(r["locale"], []).append(r)
    for locale, rs in by_locale.items():
        lang = whisper_language(locale)
        pairs = [(r["sentence"], r["transcription"] or "") for r in rs]
        if unspaced(lang):
            m[f"cer_{locale}"] = sum(agreement(s, h, lang)[1] for s, h in pairs) / len(pairs)
        else:
            m[f"wer_{locale}"] = corpus_wer(pairs, lang)
        detected = [r["detected_language"] for r in rs if r["detected_language"]]
        if detected:
            m[f"detected_right_{locale}"] = sum(d == lang for d in detected) / len(detected)
            m[f"detected_prob_{locale}"] = float(np.mean([r["detected_language_prob"] for r in rs]))
    return m


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--english", type=int, default=100, help="clips of the benchmark's English set")
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    args = ap.parse_args(argv)
    sets = english_sets(args.english)
    sets["non_speech"] = non_speech()
    record: dict = {"created": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                    "hardware": describe(cpu_flags(), {}), "models": {}}  # fmt: skip
    path = None
    for name in args.models:
        model = resolve_model(MODELS[name])
        multi = name != "tiny.en"
        todo = dict(sets) | ({"multilingual": multilingual()} if multi else {})
        record["models"][name] = {"revision": model.revision, "sets": {}}
        for set_name, rows in todo.items():
            per: dict = {}
            for window in WINDOWS:
                got, seconds = transcribe(model.path, window, rows)
                per[str(window)] = {"generate_s": round(seconds, 2), **measure(got, set_name != "non_speech")}
                per[str(window)]["texts"] = got.column("transcription").to_pylist()
            record["models"][name]["sets"][set_name] = per
            brief = {w: {k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items() if k != "texts"}
                     for w, m in per.items()}  # fmt: skip
            print(name, set_name, json.dumps(brief), flush=True)
            path = write_results("window-eval-", record, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
