"""What ``curate run`` shows a person: progress and a summary, with engine logs in a file.

Ray, vLLM and CTranslate2 write to the process's file descriptors from C++ and from worker
processes, so quiet mode moves fds 1 and 2 to a log file before any engine starts (children inherit
them) and keeps duplicates of the real ones for the console.  ``--verbose`` leaves everything as it
was.  The log ends up in ``OUTPUT/_logs/`` when the output is local, or stays where the console says.
"""

from __future__ import annotations

import contextlib
import os
import re
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


# Ray Data operator names (as they appear in errors) to the pipeline's stage names (``Stage.name``;
# a unit test keeps the two vocabularies one).  More specific markers come first.
_STAGE_OF = (
    ("decode_audio", "decode"),
    ("measure_quality", "quality"),
    ("Dnsmos", "dnsmos"),
    ("WhisperFeatures", "features"),
    ("HFWhisperTranscriber", "generate"),
    ("Whisper", "transcribe"),
    ("vLLM", "judge"),
    ("ChatTemplate", "judge"),
    ("Tokenize", "judge"),
    ("finalize_judgement", "judge"),
    ("unjudged", "judge"),
    ("apply_gates", "gates"),
    ("TableSink", "write"),
    ("Write", "write"),
    ("Read", "read"),
)
_ERROR_LINE = re.compile(r"\b([A-Z]\w*(?:Error|Exception)): (.+)")
# Wrappers that say "something failed" without saying what.
_GENERIC = ("Engine core initialization failed", "The actor died", "ray::", "See root cause", "Traceback")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def stage_of(text: str) -> str | None:
    for marker, stage in _STAGE_OF:
        if marker in text:
            return stage
    return None


# The processes each stage runs in, as Ray names them on the lines it forwards: "(MapWorker(MapBatches(
# vLLMEngineStageUDF)) pid=23330) ValueError: …".  The judge's engine runs inside its actor.
STAGE_PROCESSES = {
    "judge": ("vLLMEngineStage", "EngineCore", "vLLM"),
    "transcribe": ("Whisper",),
    "features": ("WhisperFeatures",),
    "generate": ("HFWhisperTranscriber",),
    "decode": ("decode_audio",),
    "quality": ("measure_quality",),
    "dnsmos": ("Dnsmos",),
    "read": ("Read", "CommonVoiceRelease"),
    "gates": ("apply_gates",),
    "write": ("Write", "TableSink"),
}
_PROCESS = re.compile(r"^\(([^)]*(?:\)[^)]*)*) pid=\d+")


def root_cause(log_path: Path | None, stage: str | None = None) -> str | None:
    """The engine's own error from the log: vLLM reports its real cause in its own process, and the
    driver only sees "Engine core initialization failed".  The failed stage's processes are asked
    first, so an unrelated line that came earlier (a Ray GCS "RpcError: Socket closed" under load) is
    not mistaken for the cause; otherwise the first specific error in the log."""
    if log_path is None or not log_path.exists():
        return None
    first = None
    markers = STAGE_PROCESSES.get(stage or "", ())
    with log_path.open(errors="replace") as f:
        for raw in f:
            line = ANSI.sub("", raw)
            m = _ERROR_LINE.search(line)
            if not m or any(g in m.group(2) for g in _GENERIC) or "Warning" in m.group(1):
                continue
            cause = f"{m.group(1)}: {m.group(2).strip()[:300]}"
            proc = _PROCESS.match(line)
            if markers and proc and any(marker in proc.group(1) for marker in markers):
                return cause
            first = first or cause
    return first


def explain_failure(exc: BaseException, log_path: Path | None, waiting_stage: str | None = None) -> str:
    """One readable paragraph: which stage failed, the engine's own root cause, where the log is."""
    text = ANSI.sub("", f"{type(exc).__name__}: {exc}")
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    stage = stage_of(text) or waiting_stage
    if "ExecutionTimeoutError" in text or "no progress" in text.lower():
        head = f"no stage moved a row for stall_timeout_s; the {waiting_stage or 'pipeline'} stage never got going"
    else:
        head = f"the {stage} stage failed" if stage else "the run failed"
    lines = [f"curate: failed: {head}: {first}"]
    cause = root_cause(log_path, stage)
    if cause and cause not in first:
        lines.append(f"  root cause: {cause}")
    if log_path:
        lines.append(f"  full log: {log_path}")
    return "\n".join(lines)
