"""Backfill: curate whatever a source root holds that the dataset's tables do not yet.

Two kinds of root:
- Common Voice releases (tarballs and extracted locale folders, full and delta, local or S3): every
  locale's releases go to its own table in one run of that locale, in release order, so a clip that
  cumulative releases list again is scored once and takes the newest release's status, split and votes.
  A locale whose run fails (a download cut short) fails alone: the others are curated, and the backfill
  fails at the end naming it.
- Parquet mirrors laid out as ``<root>/<split>/*.parquet``: each split's folder is one run.

The tables' snapshots are the ledger: a release already applied (same content, same engines and
gates) is not read again, and a root with nothing new does nothing: no engine, no snapshot.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, State

from flows.curation import curate_dataset, flow_config
from pipeline.commonvoice.reader import discover_releases
from pipeline.config import Profile
from pipeline.runtime.storage import locate
from pipeline.shards import discover_splits, slug

DEFAULT_RELEASE_SPLITS = ("validated",)


class BackfillIncomplete(RuntimeError):
    """Some locales' runs failed; ``result`` is what the others committed (``found``, ``tables``)."""

    def __init__(self, result: dict, failed: list[str]):
        super().__init__(f"{len(failed)} run(s) failed, the rest committed: {'; '.join(failed)}")
        self.result, self.failed = result, failed


def run_name() -> str:
    """``backfill-mdc-2026-12-02``: the source root's name and the day the run was scheduled for."""
    root = flow_run.parameters["source_root"].rstrip("/").rsplit("/", 1)[-1]
    return f"backfill-{slug(root)}-{flow_run.scheduled_start_time:%Y-%m-%d}"


@flow(name="backfill-common-voice", flow_run_name=run_name, log_prints=True)
def backfill(
    source_root: str,
    output_root: str,
    dataset: str = "common-voice",
    splits: list[str] | None = None,
    num_shards: int | None = None,
    limit: int | None = None,
    threshold: float | None = None,
    profile: Profile = "local",
    ray_address: str | None = None,
    config_overrides: list[str] | None = None,
    config_file: str | None = None,
    credentials_block: str | None = None,
) -> State:
    """Curate what ``source_root`` holds that the tables lack.

    For releases, ``splits`` names the clip lists to curate (default ``validated``); for Parquet
    mirrors it filters the ``<split>/`` folders (default: all).  The config is built once, here, from
    ``profile``, ``config_file``, ``config_overrides`` and the shortcuts, and every curation run gets it built.
    """
    logger = get_run_logger()
    # Built once, here; every curation run below gets it as it is.
    cfg = flow_config(
        "backfill",
        profile,
        config_file,
        config_overrides,
        credentials_block,
        threshold=threshold,
        limit=limit,
        ray_address=ray_address,
    )
    common = dict(
        output_root=output_root,
        dataset=dataset,
        num_shards=num_shards,
        config=cfg,
        credentials_block=credentials_block,
    )
    storage = cfg.storage
    runs: list[tuple[str, dict]] = []
    failed: list[str] = []
    releases = discover_releases(locate(source_root, storage))
    if releases:
        names = sorted({f"{r.release}/{r.locale}" for r in releases})
        logger.info("found %d release(s) under %s: %s", len(names), source_root, ", ".join(names))
        by_locale: dict[str, list[str]] = {}
        for r in releases:
            by_locale.setdefault(r.locale, []).append(r.uri)
        for locale, uris in sorted(by_locale.items()):
            for split in splits or DEFAULT_RELEASE_SPLITS:
                # Each locale its own run, and its own artifacts and trend (``common-voice-de-validated-*``):
                # a download of one cut short stops none of the others.
                mine = {**common, "dataset": f"{dataset}-{locale}"}
                try:
                    runs.append((split, curate_dataset(source=sorted(uris), split=split, **mine)))
                except Exception as exc:
                    failed.append(f"{locale} ({split}): {str(exc).splitlines()[0][:300]}")
                    logger.error("%s (%s) failed; the other locales go on: %s", locale, split, failed[-1])
    else:
        found = discover_splits(source_root, storage)
        names = sorted(found)
        for split in sorted(found):
            if splits and split not in splits:
                continue
            runs.append((split, curate_dataset(source=found[split], split=split, **common)))
    tables = [{"split": split, **t} for split, summary in runs for t in summary["tables"]]
    result = {"found": names, "tables": tables}
    if failed:
        raise BackfillIncomplete(result, failed)
    applied = [t for t in tables if not t["nothing_to_do"]]
    done = f"{len(applied)} table(s) updated" if applied else "nothing to do"
    return Completed(message=f"{done}; {len(names)} source(s) found", data=result)
