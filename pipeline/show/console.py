"""What ``curate run`` shows a person: progress and a summary, with engine logs in a file.

Ray, vLLM and CTranslate2 write to the process's file descriptors from C++ and from worker
processes, so quiet mode moves fds 1 and 2 to a log file before any engine starts (children inherit
them) and keeps duplicates of the real ones for the console.  ``--verbose`` leaves everything as it
was.  The log ends up in ``OUTPUT/_logs/``, on local disk or S3; if it cannot get there it stays in
the temp folder, and the console says where.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

from pipeline.config import StorageConfig
from pipeline.result import RunResult
from pipeline.runtime.storage import locate
from pipeline.show.progress import stage_words, why_quarantined
from pipeline.show.report import changes_words, language_words
from pipeline.stages.gate_rules import REASON_NAMES


class Console:
    def __init__(self, out: IO[str], err: IO[str], log_path: Path | None):
        self.out, self.err, self.log_path = out, err, log_path
        self.kept_at: str | None = None  # where keep_log put the log
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

    def keep_log(self, output: str, storage: StorageConfig | None = None) -> str | None:
        """Put the log in ``OUTPUT/_logs/`` and say where it is now.  A local output gets it moved; an
        ``s3://`` output gets it uploaded and the temp copy removed (a nightly job left one in the
        temp folder each night).  When neither works, the log stays where it is, and that is said."""
        if self.log_path is None:
            return self.kept_at
        sys.stdout.flush()
        sys.stderr.flush()
        # The temp name's random part keeps two runs started in the same second (shards) apart.
        name = f"curate-run-{time.strftime('%Y%m%dT%H%M%S')}-{self.log_path.stem.rsplit('-', 1)[-1]}.log"
        if output.startswith("s3://"):
            try:
                where = locate(f"{output.rstrip('/')}/_logs/{name}", storage)
                with self.log_path.open("rb") as src, where.fs.open_output_stream(where.path) as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
            except Exception:  # the store may be what failed the run: the local log is still there
                return str(self.log_path)
            self.log_path.unlink(missing_ok=True)
            self.log_path, self.kept_at = None, where.uri
        elif "://" not in output and Path(output).is_dir():
            target = Path(output) / "_logs" / name
            target.parent.mkdir(exist_ok=True)
            with contextlib.suppress(OSError):
                shutil.move(str(self.log_path), target)
                self.log_path, self.kept_at = None, str(target)
        return self.kept_at or (str(self.log_path) if self.log_path else None)

    def drop_log(self) -> None:
        """Remove the log of a run refused before any engine started: the one line said it all, and
        such logs piled up in the temp folder (hundreds of a few bytes each)."""
        if self.log_path is not None:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
            self.log_path = None


def interrupted_text(log_path: str | None, committing: bool = False) -> str:
    """What a person reads after Ctrl-C: what the tables hold, and how to finish."""
    lines = (
        [
            "curate: interrupted while a commit was in the catalog's hands: it may have landed, so its files are kept.",
            "  Run the same command again to finish: it finds what landed and does only the rest.",
        ]
        if committing
        else [
            "curate: interrupted. A commit is all or nothing: the clips tables hold what earlier commits put there,",
            "  and no clip of the locale that was running (files it wrote are removed now, or by a later run's sweep).",
            "  Run the same command again to finish: what is committed is not done twice.",
        ]
    )
    return "\n".join(lines) + full_log_line(log_path)


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
    """One readable paragraph: which stage failed and the engine's own root cause, read from the log
    before ``keep_log`` moves it (the caller adds where the log went)."""
    text = ANSI.sub("", f"{type(exc).__name__}: {exc}")
    first = text.splitlines()[0][:300] if text else type(exc).__name__
    building = getattr(exc, "building_stage", None)
    stage = building or stage_of(text) or waiting_stage
    if building:
        head = f"setting up the {building} stage failed, on this machine before any clip ran"
    elif "ExecutionTimeoutError" in text or "no progress" in text.lower():
        head = f"no stage moved a row for stall_timeout_s; the {waiting_stage or 'pipeline'} stage never got going"
    else:
        head = f"the {stage} stage failed" if stage else "the run failed"
    lines = [f"curate: failed: {head}: {first}"]
    cause = root_cause(log_path, stage)
    if cause and cause not in first:
        lines.append(f"  root cause: {cause}")
    return "\n".join(lines)


def full_log_line(where: str | None) -> str:
    return f"\n  full log: {where}" if where else ""


def _table_lines(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def console_summary(result: RunResult, log: str | None = None) -> str:
    """The summary a person reads when ``curate run`` ends: per locale, the table and its snapshot, what
    changed, the counts with reasons, and copy-paste lines to open the curated clips.  The flow's
    artifact (``summary_markdown``) says the same of a whole run, with the same words."""
    blocks = []
    for r in result.locales:
        if r.nothing_to_do:
            blocks.append(_table_lines([("table", r.table), ("nothing to do", "every input is already applied")]))
            continue
        c, ch = r.tally.counts, r.changes
        total = c.in_ or 1
        rows = [
            ("table", f"{r.table}  (snapshot {r.snapshot_id}, tag {r.tag})"),
            *([("transcriber", r.transcriber)] if r.transcriber else []),
            *([("language", language_words(r))] if r.language_check else []),
            *([("judge", r.judge)] if r.judge else []),
            ("this run", changes_words(ch)),
            ("in", f"{c.in_}"),
            ("kept", f"{c.kept} ({100 * c.kept / total:.0f}%)"),
            ("rejected", f"{c.rejected}"),
        ]
        for code, n in sorted(r.tally.reasons.items(), key=lambda kv: -kv[1]):
            rows.append((f"  {code}", f"{n}  {REASON_NAMES.get(code, '')}".rstrip()))
        rows.append(("quarantined", f"{c.quarantined}"))
        for stage, n in sorted(r.tally.quarantined_by_stage.items()):
            why = why_quarantined(r.tally.quarantined_why.get(stage, {}))
            rows.append((f"  at {stage}", f"{n}  {why}".rstrip()))
        if r.stages:
            rows.append(("stages", "as each counted itself"))
            rows += [(f"  {stage}", stage_words(t)) for stage, t in r.stages.items()]
        hours = r.tally.audio_seconds / 3600
        rows.append(("audio", f"{r.tally.audio_seconds:.0f} s" if hours < 0.1 else f"{hours:.2f} h"))
        rows.append(("table now", f"{r.table_rows} clips, {r.table_kept} kept"))
        blocks.append(_table_lines(rows))
    tail = [("wall time", f"{result.wall_time_s:.0f} s"), ("catalog", result.catalog)]
    if log:
        tail.append(("log", log))
    text = "\n\n".join([*blocks, _table_lines(tail)])
    opened = [r for r in result.locales if not r.nothing_to_do] or result.locales
    if opened:
        text += "\n\nOpen the curated clips:\n" + "\n".join(f"  {line}" for line in open_lines(result, opened[0].table))
    return text


def open_lines(result: RunResult, table: str) -> list[str]:
    """Copy-paste lines that open ``table``'s curated clips in DuckDB and in Hugging Face ``datasets``, quoted
    for a shell (an output path may hold spaces or quotes).  An export is written locally: beside a local
    output, or in the current folder for an ``s3://`` one."""
    out = result.output.rstrip("/")
    locale = next((r.locale for r in result.locales if r.table == table), "en")
    local = out.removeprefix("file://")
    hf = f"{local}-hf" if "://" not in local else f"{local.rsplit('/', 1)[-1]}-hf"
    data_dir = json.dumps(hf, ensure_ascii=False)  # a Python string literal, in double quotes
    load = f'import datasets; print(datasets.load_dataset("parquet", data_dir={data_dir}))'
    query = ["curate", "query", "--output", out, "--locale", locale]
    export = ["curate", "export", "--output", out, "--locale", locale, "--format", "hf", "--to", hf]
    return [
        f"DuckDB:    {shlex.join(query)} "
        + shlex.quote("select id, transcription, score from clips where kept limit 5"),
        f"datasets:  {shlex.join(export)} && {shlex.join(['python', '-c', load])}",
    ]
