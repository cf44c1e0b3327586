"""The multilingual transcriber on espeak-ng speech: WER (accents kept and folded), CER where agreement
is gated on characters (unspaced and Indic scripts; ``--locales hi ta bn th mr ml``), detected language,
clips/s; the language rule's genuine recall, before and after agreement counted as evidence of the
language; and English on the bundled sample with tiny.en and base.

Genuine recall: the share of a locale's own clips (its speech reading its sentence, decoded forced in
its language, as the product does) that the agreement gates and the language gate both keep, with the
language gate as it was (detection alone) and as it is (detection outweighed by a transcript that
agrees with the sentence).  The same for English speech planted in the locale: the share rejected.

    .venv/bin/python -m bench.multilingual_eval

Runs the pipeline's own Whisper engine (``BatchedWhisper``, batched as in the DAG) in one process, no
Ray; each locale decoded both ways (detect the language, or force the locale's).  Results:
bench/results/multilingual-eval-<UTC>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import pyarrow as pa
import pyarrow.parquet as pq

from bench import multilingual_set
from bench.common import write_results
from pipeline.commonvoice.languages import by_characters, whisper_language
from pipeline.config import AudioConfig, build_config
from pipeline.engines.whisper import BatchedWhisper
from pipeline.metrics import agreement, corpus_wer
from pipeline.models import resolve_model
from pipeline.runtime.hardware import cpu_flags
from pipeline.stages.decode import decode_clip
from pipeline.stages.gate_rules import LanguageMismatch, build_gates
from pipeline.stages.gates import apply_gates
from scripts.make_cv_release import SAMPLE

LOCALES = ("es", "fr", "de", "zh-CN", "ja")
# Scripts whose vowels are marks, gated on characters (``languages.by_characters``): opt in with --locales.
INDIC = ("hi", "ta", "bn", "th", "mr", "ml")
# A language written in two scripts (``languages.FOLDED_SCRIPT``): opt in with --locales.
TWO_SCRIPTS = ("sr",)


def transcribe(engine: BatchedWhisper, clips: list, languages: list) -> tuple[list, float]:
    t0 = time.perf_counter()
    out = engine.transcribe(clips, batch_size=8, min_window_s=10.0, languages=languages)
    return out, time.perf_counter() - t0


def kept_by_language_rules(locale: str, sentences: list[str], got: list) -> dict[str, list[bool]]:
    """Per rule (``before``: detection alone; ``after``: agreement outweighs it), whether each clip passes
    the agreement gates and the language gate, through the product's own gates."""
    cfg = build_config()
    rows = pa.Table.from_pylist(
        [{"locale": locale, "sentence": s, "transcription": t.text, "detected_language": t.detected_language,
          "detected_language_prob": t.detected_language_prob} for s, t in zip(sentences, got, strict=True)]
    )  # fmt: skip
    gates = [g for g in build_gates(cfg) if g.code in ("wer_above", "cer_above")]
    g = cfg.gates
    rules = {
        "before": LanguageMismatch(cfg.transcriber.language, g.min_language_prob),
        "after": LanguageMismatch(cfg.transcriber.language, g.min_language_prob, g.language_agree_wer,
                                  g.language_agree_cer),
    }  # fmt: skip
    return {name: apply_gates(rows, [*gates, rule], language=cfg.transcriber.language).column("kept").to_pylist()
            for name, rule in rules.items()}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--locales", nargs="+", default=list(LOCALES), choices=LOCALES + INDIC + TWO_SCRIPTS)
    ap.add_argument("--no-english", action="store_true", help="skip English on the bundled sample")
    args = ap.parse_args(argv)
    locales = args.locales
    audio_cfg = AudioConfig()
    base = BatchedWhisper(resolve_model("bundled:whisper-base").path, language=None)
    record: dict = {
        "when": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": sorted(cpu_flags())},
        "locales": {},
    }
    sample = pq.read_table(SAMPLE, columns=["audio_bytes", "sentence"]).to_pylist()
    planted = [decode_clip(r["audio_bytes"], audio_cfg) for r in sample[:8]]
    for locale in locales:
        items = multilingual_set.clips(locale)
        clips = [decode_clip(data, audio_cfg) for data, *_ in items]
        lang = whisper_language(locale)
        row: dict = {"clips": len(clips)}
        forced: list = []
        for mode, langs in (("detect", [None] * len(clips)), ("force", [lang] * len(clips))):
            got, seconds = transcribe(base, clips, langs)
            if mode == "force":
                forced = got
            pairs = [(s, t.text) for (_, s, _, _), t in zip(items, got, strict=True)]
            m = {
                "clips_per_s": len(clips) / seconds,
                "detected_right": sum(t.detected_language == lang for t in got) / len(got),
                "texts": [t.text for t in got],
            }
            if by_characters(lang):
                m["cer"] = sum(agreement(s, h, lang, fold_diacritics=True)[1] for s, h in pairs) / len(pairs)
            else:
                m["wer"] = corpus_wer(pairs, lang)
                m["wer_folded"] = corpus_wer(pairs, lang, fold_diacritics=True)
            row[mode] = m
        # The language rule, as the product decodes (forced); English planted under the locale's sentences.
        said = [s for _, s, _, _ in items]
        genuine = kept_by_language_rules(locale, said, forced)
        n = min(len(planted), len(said))  # as many English clips as the locale has sentences (zh-CN: 4)
        english, _ = transcribe(base, planted[:n], [lang] * n)
        foreign = kept_by_language_rules(locale, said[:n], english)
        row["language_rule"] = {
            rule: {"genuine_recall": sum(genuine[rule]) / len(said), "english_rejected": 1 - sum(foreign[rule]) / n}
            for rule in ("before", "after")
        }  # fmt: skip
        record["locales"][locale] = row
        print(locale, json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "texts"} if isinstance(v, dict) else v
                                  for k, v in row.items()}), flush=True)  # fmt: skip
    # English: tiny.en (today's default) against base, on the bundled sample's 40 clips.
    clips = [decode_clip(r["audio_bytes"], audio_cfg) for r in sample]
    english = {}
    for ref in () if args.no_english else ("bundled:whisper-tiny.en", "bundled:whisper-base"):
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
