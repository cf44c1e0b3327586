"""Run the curation DAG once over a set of input files into one committed output root."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import ray
from ray.data import DataContext

from pipeline.config import CurationConfig
from pipeline.dag import Models, build_curation_dataset
from pipeline.io import commit as commits
from pipeline.io.inputs import open_inputs
from pipeline.io.lease import Lease
from pipeline.io.sink import CurationSink, output_schemas
from pipeline.io.storage import resolve_filesystem
from pipeline.languages import check_model_hears
from pipeline.manifest import Manifest, ModelInfo, OutputFile, combine
from pipeline.models import resolve_model
from pipeline.progress import ConsoleProgress, start_counter, stop_counter
from pipeline.shards import request_key
from pipeline.stages.decode import MISSING_ID_PREFIX

if TYPE_CHECKING:
    from pipeline.console import Console

log = logging.getLogger("pipeline")


class RowAccountingError(RuntimeError):
    """Rows out did not equal rows in: something was lost or duplicated."""


def ensure_ray(cfg: CurationConfig) -> None:
    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Logical CPUs above the core count: the Whisper and vLLM actors sit on theirs while the
        # decode tasks and vLLM's tokenizer stages still need slots, or the stream deadlocks.
        # Loopback only: an embedded Ray serves this process, never the network.
        # address="local": a new Ray for this process even if `ray start` left a cluster on this
        # machine, which ray.init() would otherwise join.
        ray.init(
            address="local", num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False, _node_ip_address="127.0.0.1"
        )


def resolve_models(cfg: CurationConfig) -> Models:
    return Models(transcriber=resolve_model(cfg.transcriber.model), judge=resolve_model(cfg.judge.model))


def staged_ids(staging: str, files: list[OutputFile], cfg: CurationConfig) -> Counter:
    """Every id in the staged scores/ and quarantine/ files (a fallback id counts as "no id")."""
    fs, base = resolve_filesystem(staging, cfg.storage)
    ids: Counter = Counter()
    for f in files:
        if f.kind in ("scores", "quarantine"):
            col = pq.read_table(f"{base}/{f.path}", columns=["id"], filesystem=fs).column("id").to_pylist()
            ids.update(None if i.startswith(MISSING_ID_PREFIX) else i for i in col)
    return ids


def check_ids(expected: Counter | None, written: Counter) -> None:
    """Every input id exactly as often in scores/ + quarantine/ as in the input: none lost, none doubled."""
    if expected is None:  # a Parquet limit: Ray picks the rows; still no id may repeat beyond the input's
        doubled = [i for i, n in written.items() if n > 1 and i is not None]
        if doubled:
            raise RowAccountingError(f"ids written more than once: {doubled[:5]}")
        return
    if expected != written:
        lost, extra = expected - written, written - expected
        raise RowAccountingError(
            f"ids out differ from ids in: {sum(lost.values())} lost (e.g. {list(lost)[:5]}), "
            f"{sum(extra.values())} extra (e.g. {list(extra)[:5]})"
        )


def run_curation(
    cfg: CurationConfig,
    sources: list[str],
    output: str,
    *,
    split: str | None = None,
    run_id: str | None = None,
    extra_manifest: dict[str, Any] | None = None,
    console: Console | None = None,
) -> Manifest:
    """Curate ``sources`` (releases or Parquet; for releases, their ``split``) into ``output``.

    Returns the committed manifest.  Every input problem is raised before Ray or a model starts.
    """
    started = time.time()
    run_id = run_id or uuid.uuid4().hex[:12]
    requested = cfg  # the key is of the request, before settings are resolved for this machine
    cfg, hardware = cfg.for_this_machine()
    log.info("hardware: %s", hardware)
    inputs = open_inputs(sources, cfg.storage, split=split, limit=cfg.limit)
    key = request_key(requested, sources, getattr(inputs, "split", split))
    layout, input_schema, total_rows = inputs.layout, inputs.schema, inputs.total_rows
    expected_in = total_rows if cfg.limit is None else min(cfg.limit, total_rows)
    models = resolve_models(cfg)
    check_model_hears(inputs.locales(), cfg.transcriber.model, models.transcriber.path, cfg.transcriber.language)
    # One writer per output: taken before staging is touched, checked again right before commit.
    with Lease(output, run_id, cfg.storage) as lease:
        commits.clear_staging(output, cfg.storage)
        commits.preflight(output, run_id, cfg.storage)
        duplicates = inputs.duplicate_ids()
        if duplicates:
            log.warning("%d ids occur more than once; all their rows go to quarantine", len(duplicates))
        ensure_ray(cfg)

        sink = CurationSink(
            commits.staging_uri(output, run_id),
            cfg.storage,
            output_schemas(input_schema, layout.passthrough, layout.has_sentence, cfg.keep_audio),
        )
        counter, display = None, None
        if console is not None:
            counter, name = start_counter(run_id)
            console.say(f"curating {expected_in} clips from {', '.join(sources)[:100]} into {output}")
            display = ConsoleProgress(counter, expected_in, console.out, console.tty).start()
        # Bounded: an engine that cannot start (or an actor that cannot be placed) fails the run.
        DataContext.get_current().execution_no_progress_timeout_s = cfg.stall_timeout_s
        try:
            build_curation_dataset(inputs, cfg, models, duplicates, progress=name if counter else None).write_datasink(
                sink
            )
        except Exception as exc:
            if display is not None:
                exc.waiting_stage = display.first_unfinished()  # type: ignore[attr-defined]
            raise
        finally:
            if display is not None:
                display.stop()
                stop_counter(counter)

        tally = combine(sink.tallies)
        if tally.counts.in_ != expected_in:
            raise RowAccountingError(f"read {expected_in} rows but accounted for {tally.counts.in_}")
        check_ids(inputs.expected_ids(cfg.limit), staged_ids(commits.staging_uri(output, run_id), sink.files, cfg))
        wall = time.time() - started
        manifest = Manifest(
            run_id=run_id,
            created_at=datetime.now(UTC).isoformat(),
            source=sources[0],
            **inputs.describe(),
            **tally.model_dump(),
            files=sorted(sink.files, key=lambda f: f.path),
            wall_time_s=round(wall, 2),
            throughput={
                "clips_per_s": round(expected_in / wall, 3) if wall else None,
                "audio_s_per_s": round(tally.audio_seconds / wall, 3) if wall else None,
            },
            models={
                "transcriber": ModelInfo(
                    backend=cfg.transcriber.backend, ref=models.transcriber.ref, revision=models.transcriber.revision
                ),
                "judge": ModelInfo(ref=models.judge.ref, revision=models.judge.revision, engine="vllm"),
            },
            config=cfg.public_dict(),
            hardware=hardware,
            request_key=key,
            **(extra_manifest or {}),
        )
        lease.check()  # a run that lost its lease (a straggler, a crashed flow's child) never commits
        commits.commit(output, run_id, manifest, cfg.storage)
        log.info("committed %s: %s", output, manifest.counts.model_dump(by_alias=True))
        return manifest
