"""A table's WER/CER measured again across worker processes: the same numbers as one row at a time, and
never lost when the workers die."""

from __future__ import annotations

import multiprocessing
import os

import numpy as np
import pyarrow as pa
import pytest

from pipeline.metrics import agreement
from pipeline.runtime import cores
from pipeline.stages import gates
from pipeline.stages.gates import agreement_columns

pytestmark = pytest.mark.process  # the pool's workers are processes

SENTENCES = [
    ("en", "Plants use sunlight to turn water and carbon dioxide into sugar."),
    ("en", "He said \"the sun is a star\" and it's ten o'clock."),
    ("de", "Die Sonne ist ein Stern, und das ist wahr."),
    ("es", "La fotosíntesis convierte la luz del sol en energía química."),
    ("zh-CN", "我们喜欢在下午喝茶。"),
    ("hi", "मैं आज बाज़ार जा रहा हूँ।"),
]


def _table(copies: int) -> pa.Table:
    """Rows of every locale, each sentence under several transcripts, repeated (so some rows are alike)."""
    rows = []
    for k in range(copies):
        for loc, s in SENTENCES:
            for hyp in (s, s.lower(), s.split()[0] if " " in s else s[:3], "", None, f"{s} extra {k}"):
                rows.append({"locale": loc, "sentence": s, "transcription": hyp, "wer": 9.0, "cer": 9.0})
    rows.append({"locale": "en", "sentence": None, "transcription": "anything", "wer": 9.0, "cer": 9.0})
    return pa.Table.from_pylist(rows)


def _one_at_a_time(t: pa.Table, only: np.ndarray) -> tuple[list, list]:
    from pipeline.commonvoice.languages import written_as

    wer, cer = [], []
    for row, todo in zip(t.to_pylist(), only, strict=True):
        if not todo:
            wer.append(row["wer"])
            cer.append(row["cer"])
            continue
        w, c = agreement(row["sentence"], row["transcription"] or "", written_as(row["locale"]) or "en", True)
        wer.append(w)
        cer.append(c)
    return wer, cer


def test_worker_processes_measure_what_one_process_measures(monkeypatch):
    """Through the pool (a threshold of 5 distinct rows, chunks of 7), every row gets the WER/CER that
    ``agreement`` gives it alone, rows left out keep theirs, and an undefined rate stays null."""
    monkeypatch.setattr(gates, "PARALLEL_MIN", 5)
    monkeypatch.setattr(gates, "CHUNK", 7)
    monkeypatch.setattr(cores, "_workers", lambda: 2)
    t = _table(copies=3)
    only = np.ones(t.num_rows, bool)
    only[::5] = False
    spawned = []
    real = cores._get_pool
    monkeypatch.setattr(cores, "_get_pool", lambda: spawned.append(1) or real())
    try:
        assert agreement_columns(t, "en", fold_diacritics=True, only=only) is not None and not spawned  # a stage's call
        wer, cer = agreement_columns(t, "en", fold_diacritics=True, only=only, processes=True)
    finally:
        cores.shutdown()
    assert spawned, "the pool was not used"
    want_wer, want_cer = _one_at_a_time(t, only)
    assert wer.to_pylist() == want_wer and cer.to_pylist() == want_cer
    assert wer.to_pylist()[-1] is None  # no sentence: no rate, never 0
    assert wer.to_pylist()[0] == 9.0  # left out: its stored value


def _dies_in_a_worker(piece: list[int]) -> list[int]:
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # a worker killed mid-chunk (the OOM killer)
    return [x * 2 for x in piece]


def test_a_broken_pool_leaves_the_work_to_this_process(monkeypatch, caplog):
    monkeypatch.setattr(cores, "_workers", lambda: 2)
    try:
        assert cores.map_chunks(_dies_in_a_worker, list(range(10)), 3) == [x * 2 for x in range(10)]
    finally:
        cores.shutdown()
    assert "measuring in this process" in caplog.text
    assert cores._pool is None  # the broken pool is gone; the next call starts a new one


def test_the_workers_of_a_driver_killed_outright_exit(tmp_path):
    """SIGKILL leaves no atexit to stop the pool: its workers see their parent gone and exit."""
    import signal
    import subprocess
    import sys

    import psutil

    script = tmp_path / "driver.py"
    script.write_text(
        "import time\n"
        "from pipeline.runtime import cores\n"
        "from tests.unit.test_cores import _double\n"
        "if __name__ == '__main__':\n"
        "    cores._workers = lambda: 2\n"
        "    print(cores.map_chunks(_double, list(range(4)), 2), flush=True)\n"
        "    time.sleep(600)\n"
    )
    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    driver = subprocess.Popen([sys.executable, str(script)], cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().strip() == "[0, 2, 4, 6]"
        workers = [p for p in psutil.Process(driver.pid).children() if "spawn_main" in " ".join(p.cmdline())]
        assert len(workers) == 2
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their driver: {[p.pid for p in alive]}"
    finally:
        driver.kill()
        for p in psutil.Process().children(recursive=True):
            if "spawn_main" in " ".join(p.cmdline()):
                p.kill()


def _double(piece: list[int]) -> list[int]:
    return [x * 2 for x in piece]
