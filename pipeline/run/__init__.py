"""Run the curation once: per locale, plan against the dataset's table, run the engines only on the clips
that need them, check every id came out once, and commit one snapshot.

Every input problem, an output that is not a table root, and an unreachable catalog are raised before
Ray or a model starts.  A run whose every unit of work the table has applied already does nothing:
no Ray, no engine, no snapshot.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pipeline.commonvoice.languages import hears_every_language, transcriber_for, whisper_language
from pipeline.config import CurationConfig, refuse_secrets
from pipeline.dag import Models
from pipeline.io.inputs import open_inputs
from pipeline.models import resolve_model
from pipeline.result import RunResult
from pipeline.run.context import RunContext, model_info
from pipeline.run.locale import curate_locale
from pipeline.table.catalog import check_output_root, table_root

if TYPE_CHECKING:
    from pipeline.show.console import Console

log = logging.getLogger("pipeline")


def resolve_models(cfg: CurationConfig) -> Models:
    return Models(transcriber=resolve_model(cfg.transcriber.model), judge=resolve_model(cfg.judge.model))


def locale_setups(cfg: CurationConfig, models: Models, locales: list[str]) -> dict[str, tuple[CurationConfig, Models]]:
    """Per locale: the config its clips run under (its Whisper, told its language) and the models."""
    t = cfg.transcriber
    main_hears_all = hears_every_language(t.model, models.transcriber.path)
    resolved = {t.model: models.transcriber}
    out = {}
    for locale in locales:
        ref = transcriber_for(locale, t.model, main_hears_all, t.multilingual_model)
        if ref not in resolved:
            resolved[ref] = resolve_model(ref)
        language = whisper_language(locale)
        if language is None:
            log.warning("%s: Whisper has no language for this locale; its clips are gated on agreement alone "
                        "(language_check: unsupported)", locale)  # fmt: skip
        off = cfg.judge.off_for(locale)
        judged = off is None
        if off == "judge.locales":
            log.info("%s: the judge scores only %s (judge.locales); the gates decide alone", locale,
                     ", ".join(cfg.judge.locales))  # fmt: skip
        local = cfg.model_copy(
            update={
                "transcriber": t.model_copy(update={"model": ref, "language": language}),
                "judge": cfg.judge.model_copy(update={"enabled": judged}),
            }
        )
        out[locale] = (local, Models(transcriber=resolved[ref], judge=models.judge))
    return out


def run_curation(
    cfg: CurationConfig,
    sources: list[str],
    output: str,
    *,
    split: str | None = None,
    run_id: str | None = None,
    shard: tuple[int, int] = (0, 1),
    force: bool = False,
    console: Console | None = None,
) -> RunResult:
    """Curate ``sources`` (releases or Parquet) into the dataset's tables at ``output``."""
    started = time.time()
    run_id = run_id or uuid.uuid4().hex[:12]
    refuse_secrets(cfg, where="curate run")  # engine_env becomes Ray actors' runtime env: no secrets
    cfg, hardware = cfg.for_this_machine()
    log.info("hardware: %s", hardware)
    check_output_root(output)
    root = table_root(output, cfg)
    if not root.fresh:
        root.catalog()  # an unreachable catalog fails here, before any input is read or engine started
    inputs = open_inputs(
        sources,
        cfg.storage,
        split=split,
        default_locale=cfg.table.locale or cfg.transcriber.language or "en",
        max_tsv_bytes=cfg.reader.max_tsv_bytes,
    )
    models = resolve_models(cfg)
    # Every locale's Whisper is chosen (and resolved) before any work: one that cannot be heard stops here.
    per_locale = locale_setups(cfg, models, sorted(inputs.locales()))
    split = getattr(inputs, "split", split)
    root.preflight(cfg.storage)
    for note in inputs.notes:  # a copy of a release not read twice, a table's files left out: said on screen
        log.warning("%s", note)
        if console is not None:
            console.say(f"note: {note}")
    results = []
    for locale, (locale_cfg, locale_models) in per_locale.items():
        ctx = RunContext(locale_cfg, root, inputs, locale_models, split, run_id, shard, force, console)
        results.append(curate_locale(ctx, locale))
    return RunResult(
        run_id=run_id,
        created_at=datetime.now(UTC).isoformat(),
        output=output,
        catalog=root.catalog_uri,
        form=inputs.form,
        split=split,
        sources=list(sources),
        notes=list(inputs.notes),
        locales=results,
        wall_time_s=round(time.time() - started, 2),
        models=model_info(cfg, models),
        config=cfg.public_dict(),
        hardware=hardware,
        shard={"index": shard[0], "count": shard[1]} if shard[1] > 1 else None,
    )
