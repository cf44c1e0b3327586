"""``curate``: the product's command line.  ``run``/``config``/``prepare-models`` come from
``pipeline.cli`` (no Prefect there); this module adds ``backfill``, which runs the Prefect flow.

``curate backfill`` uses Prefect's ephemeral mode (no server) unless ``PREFECT_API_URL`` is set.
"""

from __future__ import annotations

import os
import sys

from pipeline import cli as pipeline_cli

# A busy 2-core machine can take longer than Prefect's default 20 s to start its ephemeral API server.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


def main(argv: list[str] | None = None) -> int:
    parser, sub = pipeline_cli.build_parser()
    bf = sub.add_parser("backfill", help="curate every release (or split) under a root that is not yet committed")
    bf.add_argument(
        "--source-root", required=True, help="folder or s3:// prefix holding releases (tarballs or folders)"
    )
    bf.add_argument("--output-root", required=True, help="output folder or s3:// prefix")
    bf.add_argument(
        "--split", action="append", dest="splits", help="clip list(s) to curate; repeatable (default: validated)"
    )
    bf.add_argument("--profile", choices=["local", "cluster"], default="local")
    bf.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    bf.add_argument("--threshold", type=float)
    bf.add_argument("--limit", type=int, help="clips per shard (a limited shard is redone by a later full run)")
    bf.add_argument("--ray-address", help="default: a local Ray per shard")
    args = parser.parse_args(argv)
    if args.cmd != "backfill":
        return pipeline_cli.run_command(args)
    return backfill_command(args)


def backfill_command(args) -> int:
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    from flows.backfill import backfill
    from pipeline.io.schema import InputSchemaError

    try:
        result = backfill(
            source_root=args.source_root,
            output_root=args.output_root,
            splits=args.splits,
            limit=args.limit,
            threshold=args.threshold,
            profile=args.profile,
            ray_address=args.ray_address,
            config_overrides=args.overrides or None,
        )
    except (InputSchemaError, FileNotFoundError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    print()
    if "releases_found" in result:
        print(f"releases found: {len(result['releases_found'])} ({', '.join(result['releases_found']) or 'none'})")
        if result["shards_committed"]:
            print(f"committed {len(result['shards_committed'])} shard(s):")
            for s in result["shards_committed"]:
                print(f"  {s}")
        else:
            print(f"nothing to do: all {result['shards_planned']} shard(s) are already committed")
    else:
        print(f"splits found: {', '.join(result['splits_found']) or 'none'}")
        processed = result["splits_processed"]
        print(f"curated: {', '.join(processed)}" if processed else "nothing to do: every split is already committed")
    print(f"output: {args.output_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
