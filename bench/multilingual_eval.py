"""The multilingual transcriber on espeak-ng speech: WER (accents kept and folded), CER for unspaced
scripts, detected language, clips/s; and English on the bundled sample with tiny.en and base.

    .venv/bin/python -m bench.multilingual_eval

Runs the pipeline's own Whisper engine (``BatchedWhisper``, batched as in the DAG) in one process, no
Ray; each locale decoded both ways (detect the language, or force the locale's).  Results:
bench/results/multilingual-eval-<UTC>.json.
"""

from __future__ import annotations

import json
import platform
import time

import pyarrow.parquet as pq

from bench import multilingual_set
from bench.common import write_results
from pipeline.config import AudioConfig
from pipeline.engines.whisper import BatchedWhisper
from pipeline.hardware import cpu_flags
from pipeline.languages import unspaced, whisper_language
from pipeline.metrics import agreement, corpus_wer
from pipeline.models import resolve_model
from pipeline.stages.decode import decode_clip
from scripts.make_cv_release import SAMPLE

LOCALES = ("es", "fr", "de", "zh-CN", "ja")


def transcribe(engine: BatchedWhisper, clips: list, languages: list) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = engine.transcribe(clips, batch_size=8, min_window_s=10.0, languages=languages)
    return out, time.perf_counter() - t0


def main() -> None:
    audio_cfg = AudioConfig()
    base = BatchedWhisper(resolve_model("bundled:whisper-base").path, language=None)
    record: dict = {
        "when": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": sorted(cpu_flags())},
        "locales": {},
    }
    for locale in LOCALES:
        items = multilingual_set.clips(locale)
        clips = [decode_clip(data, audio_cfg) for data, *_ in items]
        lang = whisper_language(locale)
        row: dict = {"clips": len(clips)}
        for mode, langs in (("detect", [None] * len(clips)), ("force", [lang] * len(clips))):
            got, seconds = transcribe(base, clips, langs)
            pairs = [(s, t.text) for (_, s, _, _), t in zip(items, got, strict=True)]
            m = {
                "clips_per_s": len(clips) / seconds,
                "detected_right": sum(t.language == lang for t in got) / len(got),
                "texts": [t.text for t in got],
            }
            if unspaced(lang):
                m["cer"] = sum(agreement(s, h, lang)[1] for s, h in pairs) / len(pairs)
            else:
                m["wer"] = corpus_wer(pairs, lang)
                m["wer_folded"] = corpus_wer(pairs, lang, fold_diacritics=True)
            row[mode] = m
        record["locales"][locale] = row
        print(locale, json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "texts"} if isinstance(v, dict) else v
                                  for k, v in row.items()}), flush=True)  # fmt: skip
    # English: tiny.en (today's default) against base, on the bundled sample's 40 clips.
    sample = pq.read_table(SAMPLE, columns=["audio_bytes", "sentence"]).to_pylist()
    clips = [decode_clip(r["audio_bytes"], audio_cfg) for r in sample]
    english = {}
    for ref in ("bundled:whisper-tiny.en", "bundled:whisper-base"):
        engine = BatchedWhisper(resolve_model(ref).path, language="en")
        transcribe(engine, clips[:8], ["en"] * 8)  # warm-up
        got, seconds = transcribe(engine, clips, ["en"] * len(clips))
        english[ref] = {
            "wer": corpus_wer([(r["sentence"], t.text) for r, t in zip(sample, got, strict=True)]),
            "clips_per_s": len(clips) / seconds,
        }
        print(ref, english[ref], flush=True)
    record["english"] = english
    print(f"wrote {write_results('multilingual-eval-', record)}")


if __name__ == "__main__":
    main()
