"""What ``curate run`` shows a person: progress and a summary, with engine logs in a file.

Ray, vLLM and CTranslate2 write to the process's file descriptors from C++ and from worker
processes, so quiet mode moves fds 1 and 2 to a log file before any engine starts (children inherit
them) and keeps duplicates of the real ones for the console.  ``--verbose`` leaves everything as it
was.  The log ends up in ``OUTPUT/_logs/`` when the output is local, or stays where the console says.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO


class Console:
    def __init__(self, out: IO[str], err: IO[str], log_path: Path | None):
        self.out, self.err, self.log_path = out, err, log_path
        self.tty = out.isatty()

    @classmethod
    def open(cls, verbose: bool) -> Console:
        if verbose:
            return cls(sys.stdout, sys.stderr, None)
        sys.stdout.flush()
        sys.stderr.flush()
        out = os.fdopen(os.dup(1), "w", buffering=1)
        err = os.fdopen(os.dup(2), "w", buffering=1)
        fd, path = tempfile.mkstemp(prefix="curate-run-", suffix=".log")
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        return cls(out, err, Path(path))

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def error(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def keep_log(self, output: str) -> Path | None:
        """Move the log into ``OUTPUT/_logs/`` when the output is a local folder that exists."""
        if self.log_path is None:
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        if "://" not in output and Path(output).is_dir():
            target = Path(output) / "_logs" / f"curate-run-{time.strftime('%Y%m%dT%H%M%S')}.log"
            target.parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.move(str(self.log_path), target)
                self.log_path = target
        return self.log_path
