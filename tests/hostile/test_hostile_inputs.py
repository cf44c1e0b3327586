"""Hostile releases (built by ``tests/hostile/make_hostile.py``): paths that escape the release, a
directory, an empty path, a 3 GiB sparse file, a link to /dev/zero, a 256 MiB tar member of zeros,
a non-UTF-8 TSV.  Genuine clips are curated; every hostile row is quarantined with its reason, nothing
outside the release is ever read, and a read task's memory stays bounded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import NO_JUDGE_ARGS, REPO
from tests.hostile.make_hostile import build
from tests.integration.test_pipeline_e2e import run_cli
from tests.table import rows

MAX_CLIP = 20 * 1024 * 1024  # the default max_clip_bytes

PROBE = """
import json, resource, sys
from pipeline.config import StorageConfig
from pipeline.commonvoice.datasource import read_folder_chunk, read_tarball
from pipeline.io.inputs import open_inputs, view_table
import duckdb, pyarrow.compute, soundfile  # loaded before the baseline: the bound is on what reading holds
duckdb.connect().execute("SELECT 1").fetchall()
st = StorageConfig()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = {}
for source in sys.argv[1:]:
    inputs = open_inputs([source], st)
    (locale,) = inputs.locales()
    view = view_table(inputs, locale, inputs.units(locale))
    held = {r["id"]: r["_hold"] for r in view.to_pylist() if r["_hold"]}
    readable = view.filter(__import__("pyarrow.compute").compute.is_null(view.column("_hold")))
    read = read_tarball if source.endswith(".tar.gz") else read_folder_chunk
    for block in read(source, readable, st, 4, 20 * 1024 * 1024):
        for r in block.select(["id", "read_error", "audio_bytes"]).to_pylist():
            out[r["id"]] = {"error": r["read_error"], "bytes": len(r["audio_bytes"] or b"")}
    out.update({rid: {"error": why, "bytes": 0, "held": True} for rid, why in held.items()})
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"baseline_kib": base, "peak_kib": peak, "rows": out}))
"""


# A clip of max_clip_bytes read and copied once, and the allocator's slack: the refused files (256 MiB, 3 GiB,
# /dev/zero) are far above.  Growth measured at 33-35 MiB here (it was 39-41 MiB, over a bare 2 x 20 MiB,
# while duckdb still loaded after the baseline).
BOUND = 2 * MAX_CLIP + (16 << 20)


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build(tmp_path_factory.mktemp("hostile"))


@pytest.mark.process
def test_hostile_rows_are_held_or_refused_before_any_read_and_memory_stays_bounded(hostile):
    """The read tasks' own code, in a process of its own whose peak RSS is measured."""
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, hostile["folder"], hostile["tarball"]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    by_id = got["rows"]
    for rid in hostile["genuine"]:
        assert by_id[rid]["error"] is None and by_id[rid]["bytes"] > 10_000, rid
    for rid, reason in hostile["hostile"].items():
        assert by_id[rid]["error"].startswith(reason), (rid, by_id[rid])
        assert by_id[rid]["bytes"] == 0
    # Escaping paths never reach a reader at all: held when the TSV is read.
    for rid in ("../../../outside/secret.mp3", hostile["secret"], "", "../escape.mp3"):
        assert by_id[rid].get("held"), rid
    # The 3 GiB file and the 256 MiB member were refused by their size, unread; /dev/zero by where it leads.
    growth = (got["peak_kib"] - got["baseline_kib"]) * 1024
    print(f"\nread tasks over the hostile releases: baseline {got['baseline_kib'] / 1024:.0f} MiB, "
          f"peak {got['peak_kib'] / 1024:.0f} MiB, growth {growth / 2**20:.0f} MiB "
          f"(bound: 2 x max_clip_bytes + 16 MiB = {BOUND / 2**20:.0f} MiB)")  # fmt: skip
    assert growth < BOUND


@pytest.mark.slow
def test_a_run_over_hostile_releases_curates_the_genuine_clips_and_leaks_nothing(hostile, tmp_path):
    out = tmp_path / "out"
    proc = run_cli("run", "--input", str(Path(hostile["folder"]).parents[2] / "releases"), "--output", str(out),
                   *NO_JUDGE_ARGS)  # fmt: skip
    got = rows(out)
    assert set(got) == set(hostile["genuine"]) | set(hostile["hostile"])
    for rid in hostile["genuine"]:
        assert got[rid]["error"] is None and got[rid]["transcription"], rid
    assert any(got[rid]["kept"] for rid in hostile["genuine"])
    for rid, reason in hostile["hostile"].items():
        assert got[rid]["error"].startswith(reason) and got[rid]["stage"] == "read", (rid, got[rid]["error"])
        assert not got[rid]["transcription"] and got[rid]["audio_sha256"] is None  # never read, never heard
    # The secret MP3's words are nowhere: not in the table's rows or files, the catalog, the logs, the console.
    # Parquet pages are compressed, so the rows are searched decoded too; a digit word in a data file's raw
    # bytes, or inside a longer number (a snapshot id "…1739175…" held "7391"), is chance, not a leak.
    text = proc.stdout + proc.stderr + json.dumps(list(got.values()), default=str, ensure_ascii=False)
    raw = ""
    for path in out.rglob("*"):
        if path.is_file():
            content = path.read_bytes().decode("latin-1")
            raw += content
            text += "" if path.suffix == ".parquet" else content
    for words in hostile["secret_words"]:
        where = raw + text if not words.isdigit() else text
        leak = re.search(rf"(?<![0-9a-z]){re.escape(words)}(?![0-9a-z])", where.lower())
        assert leak is None, (words, where[max(0, leak.start() - 80) : leak.end() + 80])


@pytest.mark.process
def test_a_non_utf8_tsv_stops_the_run_naming_file_and_line(hostile, tmp_path):
    proc = run_cli("run", "--input", hostile["non_utf8"], "--output", str(tmp_path / "out"), code=2)
    assert "curate: error:" in proc.stderr and "validated.tsv: line 1 is not UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    assert os.path.exists(hostile["non_utf8"])
