"""``curate``: the command line.  ``curate run`` is the product's main job."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import build_config
from pipeline.progress import render_summary

SAMPLE = Path(__file__).parent / "sample_data" / "common_voice_sample.parquet"


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=["local", "cluster"], default="local")
    p.add_argument("--config", help="YAML or TOML file of config overrides")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    p.add_argument("--threshold", type=float)
    p.add_argument("--threshold-on", choices=["score", "score_expected"])
    p.add_argument("--limit", type=int)
    p.add_argument("--ray-address", help="Ray address; default: a local Ray on this machine")
    p.add_argument("--no-audio", action="store_true", help="leave audio_bytes out of curated/")


def _build(args: argparse.Namespace):
    # --config-json (how shards get the flow's config) is a base; the other flags still apply on top.
    base = json.loads(args.config_json) if getattr(args, "config_json", None) else None
    return build_config(
        args.profile,
        base=base,
        file=args.config,
        overrides=args.overrides,
        threshold=args.threshold,
        threshold_on=args.threshold_on,
        limit=args.limit,
        ray_address=args.ray_address,
        keep_audio=False if args.no_audio else None,
    )


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(prog="curate", description="Curate Common Voice audio into Parquet.")
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
    run.add_argument("--config-json", help="a whole resolved config as JSON (used by Ray Jobs)")
    run.add_argument("--manifest-extra", help="JSON object merged into manifest.json (e.g. shard identity)")
    run.add_argument("--output", required=True, help="output directory or s3:// URI")
    run.add_argument(
        "--verbose", action="store_true", help="stream Ray's and vLLM's logs here instead of OUTPUT/_logs/"
    )
    _config_args(run)

    show = sub.add_parser("config", help="print the resolved config as JSON")
    _config_args(show)

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

        for ref in ("bundled:whisper-tiny.en", "bundled:whisper-tiny.en-hf", "bundled:qwen2.5-coder-0.5b-instruct"):
            print(ref, "->", resolve_model(ref).path)
        return 0

    cfg = _build(args)
    if args.cmd == "config":
        print(json.dumps(cfg.public_dict(), indent=2))
        return 0

    from pipeline.console import Console, explain_failure
    from pipeline.io.commit import OutputNotWritableError
    from pipeline.io.lease import LeaseHeldError
    from pipeline.io.schema import InputSchemaError
    from pipeline.languages import LanguageNotSupportedError
    from pipeline.models import ModelUnavailableError
    from pipeline.report import REASON_NAMES
    from pipeline.run import run_curation

    console = Console.open(verbose=args.verbose)
    sources = args.input or [str(SAMPLE)]
    try:
        extra = json.loads(args.manifest_extra) if args.manifest_extra else None
        manifest = run_curation(
            cfg, sources, args.output, split=args.split, extra_manifest=extra, console=None if args.verbose else console
        )
    except (
        InputSchemaError,
        FileNotFoundError,
        ModelUnavailableError,
        OutputNotWritableError,
        LanguageNotSupportedError,
        LeaseHeldError,
    ) as exc:
        # User-fixable problems: one clear line, no traceback, nothing started.
        console.error(f"curate: error: {exc}")
        return 2
    except Exception as exc:
        logging.getLogger("pipeline").exception("run failed")
        log = console.keep_log(args.output)
        console.error(explain_failure(exc, log, getattr(exc, "waiting_stage", None)))
        return 1
    log = console.keep_log(args.output)
    console.say()
    console.say(
        render_summary(
            manifest.counts.model_dump(by_alias=True),
            manifest.reasons,
            manifest.quarantined_by_stage,
            manifest.audio_seconds,
            manifest.wall_time_s,
            f"{args.output}  (manifest.json, curated/, scores/, quarantine/)",
            describe=lambda code: REASON_NAMES.get(code, ""),
            log=str(log) if log else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
