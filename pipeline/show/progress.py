"""Per-stage counters, counted where the rows are, and the progress a person reads from them.

Each stage's UDF is wrapped (``track``, by ``Stage.apply``) so that after every batch it adds to a
small named Ray actor its rows in and out, the rows it quarantined and the seconds it took, datatrove's
way (``stat_update``): counted as the rows pass, never rebuilt from them afterwards.  The run keeps
the totals in its result; the driver polls the actor and draws one line per counted stage: a live bar
on a terminal, a line per stage every ``period_s`` seconds otherwise (a log file, a CI job, a Prefect
run).  Engines never see any of this; without a counter actor, ``track`` returns the UDF as is.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import uuid
from typing import IO, Any

import ray

from pipeline.result import add_stats


@ray.remote(num_cpus=0)
class ProgressCounter:
    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    def add(self, stage: str, rows_in: int, rows_out: int, quarantined: int, seconds: float) -> None:
        add_stats(
            self.stages, stage, **{"in": rows_in, "out": rows_out, "quarantined": quarantined, "seconds": seconds}
        )

    def snapshot(self) -> dict[str, int]:
        """Rows out per stage: what the progress lines show."""
        return {stage: int(t["out"]) for stage, t in self.stages.items()}

    def stats(self) -> dict[str, dict[str, float]]:
        return {stage: dict(t) for stage, t in self.stages.items()}


_handles: dict[str, Any] = {}
# A counter that does not answer in this long is not waited for again by that batch.
REPORT_TIMEOUT_S = 10.0


def _report(name: str, stage: str, batch: Any, out: Any, seconds: float) -> None:
    if not ray.is_initialized():  # never start a Ray just to count (Ray workers are always initialised)
        return
    try:
        if name not in _handles:
            _handles[name] = ray.get_actor(name)
        rows_in = _rows(batch) if batch is not None else _rows(out)
        # Waited for (a millisecond or so a batch): sent and forgotten, a batch's count could still be on its
        # way when the run read the totals, and a stage went missing from the summary.
        ray.get(
            _handles[name].add.remote(stage, rows_in, _rows(out), _quarantined_by(out, stage), seconds),
            timeout=REPORT_TIMEOUT_S,
        )
    except Exception:  # counting is best effort; it must never fail a batch
        pass


def _rows(out: Any) -> int:
    return getattr(out, "num_rows", None) or (1 if isinstance(out, dict) else len(out))


def _quarantined_by(out: Any, stage: str) -> int:
    """Rows of ``out`` that ``stage`` itself quarantined: a row's ``stage`` names the stage that failed it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipeline.columns import STAGE

    if not isinstance(out, pa.Table) or STAGE not in out.column_names:
        return 0
    return int(pc.sum(pc.equal(out.column(STAGE), stage)).as_py() or 0)


def track(udf: Any, stage: str, counter: str | None, timed: bool = True) -> Any:
    """``udf`` (a function or a callable class) reporting each batch's rows in and out, the rows it
    quarantined and (``timed``) its seconds to ``counter`` as ``stage``."""
    if counter is None:
        return udf
    if isinstance(udf, type):

        class Tracked(udf):  # type: ignore[misc, valid-type]
            def __call__(self, batch):
                t0 = time.perf_counter()
                out = super().__call__(batch)
                _report(counter, stage, batch, out, time.perf_counter() - t0)
                return out

        Tracked.__name__ = Tracked.__qualname__ = udf.__name__
        return Tracked

    @functools.wraps(udf if not isinstance(udf, functools.partial) else udf.func)
    def tracked(batch):
        t0 = time.perf_counter()
        out = udf(batch)
        _report(counter, stage, batch, out, time.perf_counter() - t0 if timed else 0.0)
        return out

    return tracked


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else f"{seconds // 60}:{seconds % 60:02d}"
    )


def remaining_s(done: int, total: int, rate: float | None, upstream_s: float = 0.0) -> float | None:
    """Seconds until a stage has every row: at its own rate, but never before the stage feeding it (the judge
    passing rows faster than decode reads them still waits for decode's last row)."""
    if not rate or done >= total:
        return None
    return max((total - done) / rate, upstream_s)


def stage_line(stage: str, done: int, total: int, rate: float | None, width: int = 24, upstream_s: float = 0.0) -> str:
    """``decode      12/40     ███████░░░  8.1 rows/s  ETA 0:03``"""
    frac = min(done / total, 1.0) if total else 0.0
    filled = round(width * frac)
    bar = "█" * filled + "░" * (width - filled)
    left = remaining_s(done, total, rate, upstream_s)
    if total and done >= total:
        eta = "done"
    elif left is not None:
        eta = f"ETA {_clock(left)}"
    else:
        eta = "starting" if done == 0 else ""
    speed = (f"{rate:7.1f}" if rate >= 1 else f"{rate:7.2f}") + " rows/s" if rate else " " * 14
    return f"{stage:<11}{done:>7}/{total:<7} {bar} {speed}  {eta}".rstrip()


def start_line(clips: int, inputs: dict[str, Any], locale: str, table: str, width: int = 100) -> str:
    """The line a locale's progress starts with: how many clips, from where (``inputs.describe()``'s sources
    of this locale, as many as fit in ``width`` characters, then how many more), into which table."""
    # A folder of several locales: this locale's releases, not every one of them.
    sources = [r["uri"] for r in inputs.get("releases", []) if r["locale"] == locale] or inputs["inputs"]
    shown: list[str] = []
    for i, uri in enumerate(sources):
        if shown and len(", ".join([*shown, uri])) > width:
            return f"curating {clips} clips from {', '.join(shown)} and {len(sources) - i} more into {table}"
        shown.append(uri)
    return f"curating {clips} clips from {', '.join(shown)} into {table}"


class ConsoleProgress:
    """Polls the counter and draws the stage lines until ``stop()``."""

    def __init__(self, counter, stages: list[str], total: int, out: IO[str], tty: bool, period_s: float = 10.0):
        """``stages``: the names of the counted stages, in DAG order (one line each)."""
        self.counter, self.stages, self.total, self.out, self.tty = counter, stages, total, out, tty
        self.period_s = 0.5 if tty else period_s
        self.started = time.time()
        self._stop = threading.Event()
        self._drawn = 0
        self._last: dict[str, int] | None = None  # None: nothing printed yet, so the first tick prints
        self._first: dict[str, tuple[float, int]] = {}  # when each stage first showed rows, and how many
        self._finished: dict[str, float] = {}  # when each stage reached its last row
        self._thread = threading.Thread(target=self._run, daemon=True, name="curate-progress")

    def start(self) -> ConsoleProgress:
        self._draw({})
        self._thread.start()
        return self

    def _lines(self, counts: dict[str, int]) -> list[str]:
        now, lines, upstream_s = time.time(), [], 0.0
        for s in self.stages:
            done = counts.get(s, 0)
            if done and s not in self._first:
                self._first[s] = (now, done)
            # The rate counts from the stage's first rows, so it is the stage's own, not its engine's
            # start-up; the first batch arrives all at once and is left out of it.
            t0, n0 = self._first.get(s, (now, done))
            if done >= self.total and s not in self._finished:
                self._finished[s] = now  # the rate stops at the stage's last row, not the run's
            end = self._finished.get(s, now)
            rate = (done - n0) / (end - t0) if end - t0 >= 1.0 and done > n0 else None
            if rate is None and s in self._finished and end - self.started >= 1.0:
                # Its rows all came in one poll (a log's 10 s period): the rate since the run started.
                rate = done / (end - self.started)
            lines.append(stage_line(s, done, self.total, rate, upstream_s=upstream_s))
            upstream_s = remaining_s(done, self.total, rate, upstream_s) or upstream_s
        return lines

    def _draw(self, counts: dict[str, int], final: bool = False) -> None:
        lines = self._lines(counts)
        if self.tty:
            up = f"\x1b[{self._drawn}F" if self._drawn else ""
            self.out.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
            self._drawn = len(lines)
        elif counts != self._last or final:
            stamp = f"[{_clock(time.time() - self.started)}]"
            self.out.write("".join(f"{stamp} {line}\n" for line in lines))
        self._last = counts
        self.out.flush()

    def _snapshot(self) -> dict[str, int]:
        try:
            return ray.get(self.counter.snapshot.remote(), timeout=5)
        except Exception:
            return self._last or {}

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self._draw(self._snapshot())

    def first_unfinished(self) -> str | None:
        """The earliest stage that has not passed on every row (where a stalled run waits)."""
        counts = self._last or {}
        return next((s for s in self.stages if counts.get(s, 0) < self.total), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._draw(self._snapshot(), final=True)


def start_counter(run_id: str) -> tuple[Any, str]:
    """A fresh counter actor for one run (a run always has one); its name is what ``track`` reports to.

    Unique per call: the locales of one ``curate run`` share its run id, and a worker that counted for the
    first keeps a handle to that counter, which is stopped; a second counter of the same name lost the
    counts of every stage such a worker ran (a Persian table's summary had no judge or gates line)."""
    name = f"curate-progress-{run_id}-{uuid.uuid4().hex[:8]}"
    return ProgressCounter.options(name=name).remote(), name


def stage_stats(counter: Any) -> dict[str, dict[str, float]]:
    """The counter's totals per stage (empty if it cannot be read: counting never fails a run)."""
    try:
        return ray.get(counter.stats.remote(), timeout=30)
    except Exception:
        return {}


def stop_counter(counter: Any) -> None:
    with contextlib.suppress(Exception):
        ray.kill(counter)


def stage_words(t: dict[str, float], sep: str = ",") -> str:
    """One stage's own counts: rows in and out, quarantined, busy seconds (summed over its workers)."""
    busy = f"{t['seconds']:.1f}" if t.get("seconds") else "-"
    if sep == "|":
        return f"{int(t['in'])} | {int(t['out'])} | {int(t['quarantined'])} | {busy}"
    busy = f"busy {busy} s" if t.get("seconds") else "busy: its engine's"
    return f"{int(t['in'])} in, {int(t['out'])} out, {int(t['quarantined'])} quarantined, {busy}"


def why_quarantined(kinds: dict[str, int], shown: int = 3) -> str:
    """A stage's commonest kinds of quarantine reason, with their rows: ``empty transcript (2)``."""
    ranked = sorted(kinds.items(), key=lambda kv: -kv[1])
    said = "; ".join(f"{kind or 'no reason given'} ({n})" for kind, n in ranked[:shown])
    return said + ("; …" if len(ranked) > shown else "")
