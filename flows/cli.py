"""``curate``: the product's command line.  ``run``/``config``/``prepare-models`` come from
``pipeline.cli`` (no Prefect there); this module adds ``backfill``, which runs the Prefect flow.

``curate backfill`` uses Prefect's ephemeral mode (a temporary server, ``flows.temporary_server``)
unless a Prefect API URL is set.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from pipeline import cli as pipeline_cli

# A busy 2-core machine can take longer than Prefect's default 20 s to start its ephemeral API server.
EPHEMERAL_STARTUP_TIMEOUT_S = "180"


def build_parser():
    """``pipeline.cli``'s parser, plus ``backfill``, whose config flags are ``pipeline.cli.config_args``."""
    parser, sub = pipeline_cli.build_parser()
    bf = sub.add_parser("backfill", help="curate every release (or split) under a root that is not yet committed")
    bf.add_argument(
        "--source-root", required=True, help="folder or s3:// prefix holding releases (tarballs or folders)"
    )
    bf.add_argument("--output-root", required=True, help="output folder or s3:// prefix")
    bf.add_argument(
        "--split", action="append", dest="splits", help="clip list(s) to curate; repeatable (default: validated)"
    )
    pipeline_cli.config_args(bf)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd != "backfill":
        return pipeline_cli.run_command(args)
    return backfill_command(args)


def flow_overrides(args) -> list[str]:
    """``--set`` items, then the shortcut flags as overrides after them, as ``curate run`` applies them."""
    return [*args.overrides, *(f"{k}={v}" for k, v in pipeline_cli.shortcuts(args).items() if v is not None)]


def stop_on_ctrl_c() -> None:
    """Ctrl-C reaches Prefect's temporary server too (one process group), and the flow engine, left
    without its API, hung past every further Ctrl-C.  The first one now stops the running shard (its child
    and everything it started; a commit cut short leaves nothing), then the server, says what the tables
    hold, and exits 130."""

    def stop(signum, frame) -> None:
        from pipeline.launch.process import RUNNING, stop_shard

        print(
            "\ncurate: interrupted. Each locale's table holds what its run committed; a run cut short left "
            "nothing. Run the same command again to finish.",
            file=sys.stderr,
            flush=True,
        )
        for pid in list(RUNNING):
            stop_shard(pid, deadline_s=10)
        with contextlib.suppress(Exception):
            from prefect.server.api.server import SubprocessASGIServer

            for server in list(SubprocessASGIServer._instances.values()):
                server.stop()
        os._exit(130)

    signal.signal(signal.SIGINT, stop)


def backfill_command(args) -> int:
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", EPHEMERAL_STARTUP_TIMEOUT_S)
    # The temporary server is ours, not the user's: it sends no usage telemetry from their data machine, and
    # offline it no longer opens the run with "ERROR ... Failed to send telemetry".  Set it to opt in.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Nor does Prefect's client, which on a new machine opened an interactive backfill with "Prefect collects
    # anonymous usage data…" (it reads DO_NOT_TRACK when imported, below).  DO_NOT_TRACK=0 opts in.
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from flows.backfill import BackfillIncomplete, backfill
    from pipeline.config import SecretInConfigError, build_config, refuse_secrets
    from pipeline.io.schema import InputSchemaError
    from pipeline.runtime.storage import locate
    from pipeline.table.catalog import TableError

    overrides = flow_overrides(args)
    try:  # checked before any flow run exists: a bad config is the caller's to fix, not a run to retry
        cfg = build_config(args.profile, file=args.config, overrides=overrides)
        refuse_secrets(cfg, overrides=overrides, where="curate backfill")
        for root in (args.source_root, args.output_root):  # a scheme nothing here reads (gs://, https://)
            locate(root, cfg.storage)
    except (ValueError, OSError) as exc:  # SecretInConfigError included (names keys, never values); OSError: --config
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url is None and not settings.server.ephemeral.enabled:
        print("curate: error: no Prefect server: set PREFECT_API_URL, or allow Prefect's temporary server "
              "(PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=true)", file=sys.stderr)  # fmt: skip
        return 2
    if settings.api.url is None:
        # Prefect's temporary server: ours to stop, however this process ends.
        from flows.temporary_server import start_temporary_server

        stop_on_ctrl_c()
        start_temporary_server()
    failed = None
    try:
        result = backfill(
            source_root=args.source_root,
            output_root=args.output_root,
            splits=args.splits,
            profile=args.profile,
            config_overrides=overrides or None,
            config_file=args.config,
        )
    except (InputSchemaError, FileNotFoundError, TableError, SecretInConfigError) as exc:
        print(f"curate: error: {exc}", file=sys.stderr)
        return 2
    except BackfillIncomplete as exc:  # what the other locales committed is said first, then what failed
        result, failed = exc.result, exc.failed
    print()
    print(f"found: {len(result['found'])} ({', '.join(result['found']) or 'none'})")
    for t in result["tables"]:
        if t["nothing_to_do"]:
            print(f"  {t['table']} ({t['split']}): nothing to do")
        else:
            print(f"  {t['table']} ({t['split']}): snapshot {t['snapshot']}, tag {t['tag']}")
    if all(t["nothing_to_do"] for t in result["tables"]) and not failed:
        print("nothing to do: every input is already in the tables")
    print(f"output: {args.output_root}")
    for line in failed or []:
        print(f"curate: failed: {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
