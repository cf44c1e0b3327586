"""Shards and the keys of work: what decides who does a clip, and whether it is done already.  Pure:
no Prefect, no Ray.

Every shard reads the same sources and plans against the same table, keeping only the clips whose id
hashes to it (``shard_of``; the plan's SQL computes the same, ``pipeline.table.plan.shard_sql``), so each
clip is processed by exactly one shard whatever the releases hold, and a clip that two cumulative
releases both list is never done twice.  Each shard commits its own snapshot; the ledger counts a unit
of work applied once every shard of it has.  The embedded default runs one shard (one engine
start-up); a cluster runs several in parallel.

The keys: ``engine_key`` (what a clip's scores are a function of besides its audio), ``settings_key``
(what a unit of work's result is a function of besides its input) and ``agreement_key`` (what a stored
WER/CER was measured under).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.config import CurationConfig
    from pipeline.dag import Models


def shard_of(rid: str, count: int) -> int:
    return int(hashlib.sha1(rid.encode()).hexdigest()[:8], 16) % count


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:20]


def engine_key(cfg: CurationConfig, models: Models) -> str:
    """What a clip's scores are a function of besides its audio: the models, their revisions, the settings
    that change what they output.  Rows scored under another key are scored again."""
    content = cfg.content_settings()
    return _digest(
        {
            "audio": content["audio"],
            "quality": content["quality"],
            "transcriber": content["transcriber"],
            "judge": content["judge"],
            "revisions": [models.transcriber.revision, models.judge.revision],
        }
    )


def settings_key(cfg: CurationConfig, models: Models, split: str | None) -> str:
    """What a unit of work's result is a function of besides its input: engines, gates, split, limit."""
    return _digest({"engine": engine_key(cfg, models), "content": cfg.content_settings(), "split": split})


def agreement_key(cfg: CurationConfig) -> str:
    return _digest(agreement_parts(cfg))


def agreement_parts(cfg: CurationConfig) -> dict[str, Any]:
    """What a stored WER/CER is a function of besides the transcript and the sentence: Whisper's normaliser
    (the transformers release that ships it), accent folding, and the default language."""
    from importlib.metadata import version

    from pipeline.commonvoice.languages import (
        DOTLESS_I,
        FOLDED_SCRIPT,
        FORMAT_MARKED,
        GEMINATE_L,
        SPACING_VARIES,
        by_characters,
    )
    from pipeline.metrics import is_english
    from pipeline.numbers import spells_numbers

    parts: dict[str, Any] = {
        "normaliser": version("transformers"),
        "fold_diacritics": cfg.gates.fold_diacritics,
        "language": cfg.transcriber.language,
    }
    language = cfg.transcriber.language
    if (
        language is None
        or by_characters(language)
        or language in FORMAT_MARKED
        or not (cfg.gates.fold_diacritics or is_english(language))
    ):
        # Rules 2 (a language Whisper lacks no longer normalised as English, nan-tw in characters, full-width
        # brackets dropped) changed unsupported locales and unspaced scripts; rules 3 (a mark stays with its
        # letter: Indic and Southeast Asian vowel signs always, every accent when accents are not folded)
        # those and the Indic scripts and unfolded languages; rules 4 (invisible format characters dropped:
        # zero-width joiners, bidi marks) those and the scripts that hold them.  Only these tables measure
        # again (an English one of 2 M clips spends about 4 minutes on it on two cores: docs/benchmarks.md).
        parts["rules"] = 4
    if language is None or language in {*FOLDED_SCRIPT, *SPACING_VARIES, *DOTLESS_I, *GEMINATE_L}:
        # Rules 5: Chinese folded to Simplified, Serbian to Latin letters, Persian's and Urdu's yeh and kaf to
        # theirs on both sides (and Taiwanese Hokkien, written like Chinese, among the locales Whisper lacks);
        # Korean measured in characters, spaces left out; Turkish and Azerbaijani's ı folded to i; Catalan's
        # l·l read as ll.
        parts["rules"] = 5
    if language is None or spells_numbers(language):
        # Rules 6: numbers spelled out in the language on both sides (pipeline.numbers): "10" is "zehn"
        # (and Taiwanese Hokkien, written like Chinese, among the locales Whisper lacks).
        parts["rules"] = 6
    if FOLDED_SCRIPT.get(language or "") == "Hira":
        parts["rules"] = 7  # Rules 7: Japanese's katakana read as hiragana on both sides.
    if FOLDED_SCRIPT.get(language or "", "").startswith("Arab"):
        # Rules 8: Arabic's ة and ى read as ه and ي on both sides, and the tatweel dropped (Persian, Urdu too).
        parts["rules"] = 8
    return parts


@dataclass(frozen=True)
class ShardSpec:
    sources: tuple[str, ...]
    split: str
    index: int
    count: int
    output: str

    @property
    def shard_id(self) -> str:
        return f"shard-{self.index + 1}-of-{self.count}"

    def to_dict(self) -> dict:
        return {**asdict(self), "sources": list(self.sources), "shard_id": self.shard_id}

    def run_id(self, flow_run_id: str) -> str:
        """This shard's run id under a flow run: the same for every retry of it (a Ray Job's submission id
        is derived from it), distinct for each split, input set and output one flow run curates."""
        what = hashlib.sha1(json.dumps([self.split, list(self.sources), self.output]).encode()).hexdigest()[:6]
        return f"{flow_run_id[:8]}-{what}-{self.index + 1}of{self.count}"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def plan_shards(sources: list[str], output: str, split: str, count: int | None = None) -> list[ShardSpec]:
    """``count`` shards (default 1) over the same sources."""
    if not sources:
        raise ValueError("no input sources")
    n = max(1, count or 1)
    return [ShardSpec(tuple(sorted(sources)), split, i, n, output) for i in range(n)]


def discover_splits(source_root: str, storage=None) -> dict[str, str]:
    """``<root>/<split>/*.parquet`` -> {split: its folder}.  Files directly under the root are ignored."""
    from pipeline.runtime.storage import list_parquet_files, locate

    where = locate(source_root, storage)
    root = where.at(where.path).uri.rstrip("/")
    splits: dict[str, str] = {}
    for f in list_parquet_files(where):
        parts = f.uri[len(root) :].lstrip("/").split("/")
        if len(parts) >= 2:
            splits.setdefault(parts[0], f"{root}/{parts[0]}")
    return splits
