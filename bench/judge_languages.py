"""Does the bundled judge still rank clips outside English?  Educational against chit-chat sentences in
en, es, fr and de (``bench.multilingual_set``; English from the same topics), scored by the embedded
default's judge with vLLM's offline ``LLM``, no Ray.

    .venv/bin/python -m bench.judge_languages

Per language, for the argmax ``score`` and for ``score_expected``: the mean of each kind, and the
ranking AUC, the chance that an educational sentence scores above a chit-chat one (ties count half; 0.5
is no ranking).  Results:
bench/results/judge-languages-<UTC>.json.  The judge reads the transcript; the sentences stand in for
perfect transcripts here, so this measures the judge alone.
"""

from __future__ import annotations

import platform
import time

from bench.common import time_offline_judge, write_results
from bench.multilingual_set import SENTENCES
from pipeline.config import build_config
from pipeline.hardware import cpu_flags
from pipeline.models import resolve_model
from pipeline.stages.judge import vllm_engine_kwargs

# The same topics in English, for a baseline the judge is known to rank.
ENGLISH = {
    "educational": [
        "Photosynthesis turns sunlight into chemical energy.",
        "The heart pumps blood through the whole body.",
        "Water boils at one hundred degrees at sea level.",
        "Volcanoes form where magma rises to the surface.",
        "The Earth takes one year to go around the Sun.",
        "Bees pollinate many of the plants we eat.",
        "Copper conducts electricity better than iron.",
        "Muscles need oxygen to produce energy.",
    ],
    "chitchat": [
        "Haha, see you tomorrow at the party.",
        "How was your weekend, all good?",
        "I love that song, I play it all the time.",
        "Hey, shall we order a pizza tonight?",
        "It is so hot today, I can't stand it.",
        "My cat fell asleep on the sofa again.",
        "Okay, I'll call you later, bye.",
        "So glad you came, we had a great time!",
    ],
}
LANGUAGES = {"en": ENGLISH, **{k: SENTENCES[k] for k in ("es", "fr", "de")}}


def auc(high: list[float], low: list[float]) -> float:
    """P(a score from ``high`` > one from ``low``), ties counted half."""
    pairs = [(h > lo) + 0.5 * (h == lo) for h in high for lo in low]
    return sum(pairs) / len(pairs)


def main() -> None:
    j = build_config("local").judge
    kwargs = {**vllm_engine_kwargs(j), "model": resolve_model(j.model).path}
    texts, index = [], []
    for lang, kinds in LANGUAGES.items():
        for kind, sentences in kinds.items():
            texts += sentences
            index += [(lang, kind)] * len(sentences)
    got = time_offline_judge(kwargs, texts, j)
    record = {
        "when": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
        "machine": {"cpu": platform.processor() or platform.machine(), "flags": sorted(cpu_flags())},
        "judge": j.model,
        "rows_per_s": got["rows_per_s"],
        "languages": {},
    }
    for lang in LANGUAGES:
        row = {}
        for measure in ("scores", "expected"):  # the argmax (threshold_on=score), and score_expected
            by_kind = {
                kind: [s for (lg, k), s in zip(index, got[measure], strict=True) if lg == lang and k == kind]
                for kind in ("educational", "chitchat")
            }
            edu, chat = by_kind["educational"], by_kind["chitchat"]
            row[measure] = {
                "mean_educational": sum(edu) / len(edu),
                "mean_chitchat": sum(chat) / len(chat),
                "auc": auc(edu, chat),
                "values": by_kind,
            }
        record["languages"][lang] = row
        e, a = row["expected"], row["scores"]
        print(f"{lang}: score_expected educational {e['mean_educational']:.2f}, chit-chat {e['mean_chitchat']:.2f}, "
              f"AUC {e['auc']:.2f}; argmax AUC {a['auc']:.2f}", flush=True)  # fmt: skip
    print(f"wrote {write_results('judge-languages-', record)}")


if __name__ == "__main__":
    main()
