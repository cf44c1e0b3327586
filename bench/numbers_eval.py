"""Sentences with numbers in them, read by espeak-ng and transcribed by the bundled base (forced in the
locale's language, as the product decodes): WER with digits compared as they are written, and with numbers
spelled out in the language (``pipeline.numbers``), and how many clips the WER gate keeps either way.

    .venv/bin/python -m bench.numbers_eval

Common Voice's sentences spell numbers out; Whisper writes digits.  Results:
bench/results/numbers-eval-<UTC>.json.
"""

from __future__ import annotations

import platform

import jiwer

from bench import multilingual_set
from bench.common import write_results
from pipeline.config import AudioConfig, build_config
from pipeline.engines.whisper import BatchedWhisper
from pipeline.metrics import agreement, normalize_text
from pipeline.models import resolve_model
from pipeline.runtime.hardware import cpu_flags
from pipeline.stages.decode import decode_clip

# Six sentences a locale, four or more with a number spelled out as Common Voice's sentences are.
SENTENCES = {
    "de": ["Ich habe fünf Äpfel und drei Birnen gekauft.", "Der Zug fährt um zehn Uhr ab.",
           "Wir waren zwanzig Leute im Raum.", "Sie ist achtzehn Jahre alt.", "Drei, zwei, eins, los!",
           "Das Haus hat vier Zimmer."],
    "es": ["Tengo cinco manzanas y tres peras.", "El tren sale a las diez.", "Éramos veinte personas en la sala.",
           "Ella tiene dieciocho años.", "Tres, dos, uno, ya.", "La casa tiene cuatro habitaciones."],
    "fr": ["J'ai acheté cinq pommes et trois poires.", "Le train part à dix heures.",
           "Nous étions vingt personnes dans la salle.", "Elle a dix-huit ans.", "Trois, deux, un, partez !",
           "La maison a quatre chambres."],
    "it": ["Ho comprato cinque mele e tre pere.", "Il treno parte alle dieci.", "Eravamo venti persone nella stanza.",
           "Lei ha diciotto anni.", "Tre, due, uno, via!", "La casa ha quattro stanze."],
}  # fmt: skip


def as_written(sentence: str, heard: str, language: str) -> float:
    """WER with the digits left as Whisper wrote them (the rule before numbers were spelled out)."""
    ref = " ".join(normalize_text(sentence, language, True))
    return jiwer.wer(ref, " ".join(normalize_text(heard, language, True)) or "<empty>")


def main() -> None:
    base = BatchedWhisper(resolve_model("bundled:whisper-base").path, language=None)
    max_wer = build_config().gates.max_wer
    record = {"host": platform.node(), "cpu_flags": sorted(cpu_flags()), "max_wer": max_wer, "locales": {}}
    for locale, said in SENTENCES.items():
        clips = [decode_clip(multilingual_set.speak(s, locale)[0], AudioConfig()) for s in said]
        got = base.transcribe(clips, batch_size=8, min_window_s=10.0, languages=[locale] * len(clips))
        rows = [
            {"sentence": s, "transcript": t.text, "digits": any(c.isdigit() for c in t.text),
             "wer_as_written": as_written(s, t.text, locale), "wer_spelled": agreement(s, t.text, locale, True)[0]}
            for s, t in zip(said, got, strict=True)
        ]  # fmt: skip
        n = len(rows)
        summary = {
            "clips": n,
            "transcripts_with_digits": sum(r["digits"] for r in rows),
            "mean_wer_as_written": sum(r["wer_as_written"] for r in rows) / n,
            "mean_wer_spelled": sum(r["wer_spelled"] for r in rows) / n,
            "kept_as_written": sum(r["wer_as_written"] <= max_wer for r in rows),
            "kept_spelled": sum(r["wer_spelled"] <= max_wer for r in rows),
        }
        record["locales"][locale] = {**summary, "rows": rows}
        print(locale, summary, flush=True)
    print(f"wrote {write_results('numbers-eval-', record)}")


if __name__ == "__main__":
    main()
