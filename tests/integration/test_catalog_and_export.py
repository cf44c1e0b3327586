"""The cluster profile's catalog and what trainers load.

A real run with its catalog on a real PostgreSQL (started here on 127.0.0.1, password from PGPASSWORD,
never in the URI), then every export format read back by its consumer's own library: pyarrow for
Parquet, ``datasets`` for the Hugging Face export (its ``Audio`` column decodes), ``webdataset`` for
the tar shards, and NeMo's manifest format (NeMo itself is not installed: each line is checked against
its documented fields, and every audio file decodes), plus the README's DuckDB and Polars lines.
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
import subprocess
import sys

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from tests.conftest import REPO
from tests.integration.test_pipeline_e2e import run_cli
from tests.services import postgres
from tests.table import rows

pytestmark = [pytest.mark.slow, pytest.mark.judge]


def _renamed(rid: str) -> str:
    return f"speaker.{rid}"


@pytest.fixture(scope="module")
def on_postgres(tmp_path_factory, sample_table):
    tmp = tmp_path_factory.mktemp("pg")
    try:
        server = postgres()
        pg = server.__enter__()
    except (FileNotFoundError, subprocess.CalledProcessError) as exc:
        print(f"\nSKIP reason: PostgreSQL could not be started here: {exc}")
        pytest.skip(f"PostgreSQL could not be started here: {exc}")
    uri = f"postgresql+psycopg2://{pg['user']}@127.0.0.1:{pg['port']}/{pg['database']}"
    os.environ["PGPASSWORD"] = pg["password"]
    out, src = tmp / "out", tmp / "ids-with-dots.parquet"
    # The sample under ids a Parquet input may carry: with a dot, where WebDataset's key ends.
    renamed = pa.array([_renamed(i) for i in sample_table["id"].to_pylist()])
    pq.write_table(sample_table.set_column(0, "id", renamed), src)
    try:
        run_cli(
            "run", "--input", str(src), "--output", str(out), "--limit", "6", "--set", f"table.catalog_uri={uri}",
            "--emit-result",
        )  # fmt: skip
        yield tmp, out, uri, pg
    finally:
        os.environ.pop("PGPASSWORD", None)
        server.__exit__(None, None, None)


def test_the_catalog_is_in_postgres_and_holds_no_password(on_postgres):
    import sqlalchemy

    _, out, uri, pg = on_postgres
    got = rows(out, overrides=[f"table.catalog_uri={uri}"])
    assert len(got) == 6
    assert not (out / "catalog.db").exists()  # no SQLite beside it: the catalog is the database
    engine = sqlalchemy.create_engine(uri)
    with engine.connect() as c:
        listed = c.execute(sqlalchemy.text("select table_namespace, table_name from iceberg_tables")).fetchall()
    assert sorted(listed) == [("curate", "en_audio"), ("curate", "en_clips")]
    # The password reached the driver from PGPASSWORD only: no file the run wrote holds it.
    for path in out.rglob("*"):
        if path.is_file():
            assert pg["password"].encode() not in path.read_bytes(), path


def _export(out, uri, fmt, to, *extra, code=0):
    return run_cli(
        "export", "--output", str(out), "--set", f"table.catalog_uri={uri}", "--format", fmt, "--to", str(to), *extra,
        code=code,
    )  # fmt: skip


def test_every_export_loads_in_its_consumers_library(on_postgres, sample_table):
    """Every format written, then moved elsewhere (as a team copies a dataset to its training machines),
    and loaded there by its consumer's own library."""
    tmp, out, uri, _ = on_postgres
    written = tmp / "written"
    for fmt in ("parquet", "hf", "webdataset", "nemo"):
        _export(out, uri, fmt, written / fmt)
    shutil.move(written, tmp / "moved")
    moved = tmp / "moved"
    got = rows(out, overrides=[f"table.catalog_uri={uri}"])
    kept = {rid for rid, r in got.items() if r["kept"]}
    ids = map(_renamed, sample_table.column("id").to_pylist())
    originals = dict(zip(ids, sample_table.column("audio_bytes").to_pylist(), strict=True))

    # Parquet: curated/ with audio byte for byte, scores/ and quarantine/ holding every id once.
    pq_dir = moved / "parquet"
    curated = pads.dataset(pq_dir / "curated").to_table().to_pylist()
    assert {r["id"] for r in curated} == kept
    assert all(r["audio_bytes"] == originals[r["id"]] for r in curated)
    scores = pads.dataset(pq_dir / "scores").to_table().column("id").to_pylist()
    quarantine = (
        pads.dataset(pq_dir / "quarantine").to_table().column("id").to_pylist()
        if (pq_dir / "quarantine").exists() and any((pq_dir / "quarantine").iterdir())
        else []
    )
    assert sorted(scores + quarantine) == sorted(got)

    # Hugging Face: datasets itself loads it, and the Audio column decodes.
    code = (
        "import datasets, json, sys\n"
        f"d = datasets.load_dataset('parquet', data_dir={str(moved / 'hf')!r})['train']\n"
        "a = d[0]['audio']\n"
        "print(json.dumps({'n': len(d), 'ids': sorted(d['id']), 'rate': a['sampling_rate'], 'len': len(a['array']),"
        " 'feature': type(d.features['audio']).__name__}))\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp / "hf-home")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    hf = json.loads(proc.stdout.strip().splitlines()[-1])
    assert hf["feature"] == "Audio" and hf["ids"] == sorted(kept) and hf["rate"] == 48_000 and hf["len"] > 48_000

    # WebDataset: tar shards read by the webdataset library.
    import webdataset as wds

    shards = sorted(str(p) for p in (moved / "webdataset").glob("*.tar"))
    samples = list(wds.WebDataset(shards, shardshuffle=False))
    assert sorted(json.loads(s["json"])["id"] for s in samples) == sorted(kept)
    assert len({s["__key__"] for s in samples}) == len(kept)  # "speaker.<id>" was sample "speaker" for every id
    for s in samples:
        audio, rate = sf.read(io.BytesIO(s["flac"]))
        assert rate == 48_000 and len(audio) > 48_000

    # NeMo: manifest.jsonl with audio_filepath (relative to it), duration, text; the files decode, that long.
    lines = [json.loads(x) for x in (moved / "nemo" / "manifest.jsonl").read_text().splitlines()]
    assert sorted(x["id"] for x in lines) == sorted(kept)
    for x in lines:
        assert not x["audio_filepath"].startswith("/")
        info = sf.info(moved / "nemo" / x["audio_filepath"])
        assert abs(info.duration - x["duration"]) < 0.05 and x["text"] == got[x["id"]]["sentence"]

    # A used folder is refused; --overwrite replaces it whole: one copy of each clip, never two.
    again = _export(out, uri, "webdataset", moved / "webdataset", code=2)
    assert "not empty" in again.stderr and "--overwrite" in again.stderr
    # A killed export's work folder (its owner lock free) is swept by the next export to the same place; one
    # whose export still runs (its lock held here) and one of no known owner are left alone.
    from pipeline.runtime.owner import OWNER, hold

    killed, running, unknown = (moved / f".webdataset.partial-{n}" for n in ("killed00", "running0", "unknown0"))
    for folder in (killed, running, unknown):
        (folder / "shard-000000.tar").parent.mkdir(parents=True)
        (folder / "shard-000000.tar").write_bytes(b"half")
    (killed / OWNER).touch()
    lock = hold(str(running))
    _export(out, uri, "webdataset", moved / "webdataset", "--overwrite")
    assert not killed.exists() and running.exists() and unknown.exists()
    os.close(lock)
    shutil.rmtree(running), shutil.rmtree(unknown)
    shards = sorted(str(p) for p in (moved / "webdataset").glob("*.tar"))
    assert sorted(json.loads(s["json"])["id"] for s in wds.WebDataset(shards, shardshuffle=False)) == sorted(kept)
    assert not [p for p in moved.iterdir() if p.name.startswith(".")]  # no partial or old copy left beside it

    # The README's DuckDB and Polars lines, as written there.
    readme = (REPO / "README.md").read_text()
    for tool in ("duckdb", "polars"):
        (line,) = [ln for ln in readme.splitlines() if ln.startswith(f'.venv/bin/python -c "import {tool}')]
        line = line.replace("sqlite:///output/demo/catalog.db", uri).replace(
            ".venv/bin/python", shlex.quote(sys.executable), 1
        )
        proc = subprocess.run(
            ["bash", "-c", line], cwd=REPO, env=os.environ, capture_output=True, text=True, timeout=120
        )
        assert proc.returncode == 0 and str(len(kept)) in proc.stdout, (tool, line, proc.stdout, proc.stderr[-2000:])
