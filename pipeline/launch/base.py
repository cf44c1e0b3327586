"""What every launcher shares: its errors, its interface, the child's command line and its result line."""

from __future__ import annotations

import logging
import re
from typing import Protocol

from pipeline.cli import RESULT_MARK
from pipeline.config import CurationConfig
from pipeline.result import RunResult
from pipeline.shards import ShardSpec

# "… INFO pipeline: committed …" (pipeline/cli.py's log format) or "curate: error: …".
OUR_LINE = re.compile(r"\b(?:INFO|WARNING|ERROR) pipeline[\w.]*: |^curate: ")


class ShardFailed(RuntimeError):
    pass


class RayJobFailed(ShardFailed):
    pass


class JobTimedOut(RayJobFailed):
    pass


class ShardTimedOut(ShardFailed):
    pass


class ShardRefused(ShardFailed):
    """The shard's input or output was refused before any work (``curate run`` exit 2): retrying
    cannot help, so Prefect does not."""


class ShardLauncher(Protocol):
    def launch(
        self, spec: ShardSpec, cfg: CurationConfig, log: logging.Logger, run_id: str, force: bool = False
    ) -> RunResult: ...


def shard_cli_args(
    spec: ShardSpec, cfg: CurationConfig, run_id: str, force: bool = False, verbose: bool = False, stdin: bool = False
) -> list[str]:
    """``curate run`` arguments for one shard: the one entrypoint of child processes and Ray Jobs.

    With ``stdin`` the config goes on the child's stdin, not in argv (``ps`` and ``/proc/*/cmdline`` show
    argv to every user of the machine).  A Ray Job has no stdin: its entrypoint carries the config,
    which the flow's ``refuse_secrets`` has checked holds nothing secret.
    """
    args = [
        "run",
        *(["--verbose"] if verbose else []),
        *(["--force"] if force else []),
        "--emit-result",
        "--output",
        spec.output,
        "--config-json",
        "-" if stdin else cfg.model_dump_json(),
        "--split",
        spec.split,
        "--shard",
        f"{spec.index + 1}/{spec.count}",
        "--run-id",
        run_id,
    ]
    for f in spec.sources:
        args += ["--input", f]
    return args


def parse_result(lines: list[str], what: str) -> RunResult:
    for line in reversed(lines):
        if line.startswith(f"{RESULT_MARK} "):
            return RunResult.model_validate_json(line[len(RESULT_MARK) + 1 :])
    raise ShardFailed(f"{what} ended well but printed no {RESULT_MARK} line")
