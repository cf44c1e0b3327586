"""Common Voice releases on S3 (a real moto server on 127.0.0.1): discovery, tarball streaming and
parallel folder reads through Ray Data's read tasks; and the dataset's tables with their warehouse on
S3 beside a SQLite catalog on local disk."""

from __future__ import annotations

import boto3
import pytest
import ray

from pipeline.commonvoice.datasource import absent_clips
from pipeline.commonvoice.reader import MISSING_CLIP
from pipeline.config import StorageConfig, build_config
from pipeline.io.inputs import ReleaseInputs, open_inputs, view_table
from scripts.make_cv_release import build_release
from tests.services import moto_s3

pytestmark = pytest.mark.slow


def _upload(s3, bucket: str, local_root, prefix: str) -> None:
    for path in sorted(p for p in local_root.rglob("*") if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(local_root)}", Body=path.read_bytes())


def test_releases_on_s3_read_every_row_once(tmp_path, monkeypatch):
    local = tmp_path / "releases"
    full = build_release(local, clips=6)  # tarball
    delta = build_release(
        local, clips=5, delta=True, version="24.0", date="2025-12-05", folder=True, start_id=42_000_000
    )
    with moto_s3(tmp_path) as endpoint:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="cv-releases")
        _upload(s3, "cv-releases", local, "mdc")
        storage = StorageConfig(s3_endpoint_url=endpoint)

        inputs = open_inputs(["s3://cv-releases/mdc/"], storage)
        assert isinstance(inputs, ReleaseInputs)
        assert [(r.form, r.release) for r in inputs.releases] == [
            ("tarball", "cv-corpus-23.0-2025-09-05"),
            ("folder", "cv-corpus-24.0-delta-2025-12-05"),
        ]
        view = view_table(inputs, "en", inputs.units("en"))
        assert view.num_rows == 11
        # The folder's absent clip is known from one listing of its clips/ prefix; the tarball's once read.
        absent = absent_clips(view, inputs.releases, storage, list_from=0)
        assert view.filter(absent).column("id").to_pylist() == [delta.missing]

        cfg = build_config(overrides=[f"storage.s3_endpoint_url={endpoint}", "reader.clips_per_task=2"])
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
        try:
            rows = inputs.dataset(view, cfg).take_all()
        finally:
            ray.shutdown()
        expected = [r["path"] for r in full.rows + delta.rows]
        assert sorted(r["id"] for r in rows) == sorted(expected)
        errors = {r["id"]: r["read_error"] for r in rows}
        assert errors[full.missing] == MISSING_CLIP and errors[delta.missing] == MISSING_CLIP
        assert all(r["audio_bytes"] for r in rows if r["id"] not in (full.missing, delta.missing))


def test_the_tables_with_their_warehouse_on_s3(tmp_path, monkeypatch):
    """A SQLite catalog on local disk, the warehouse on a real S3 server: commits, audio, orphans."""
    import pyarrow as pa
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    from pipeline.runtime.storage import resolve_filesystem
    from pipeline.table import audio as audio_table
    from pipeline.table import commit as commits
    from pipeline.table import upkeep as table_upkeep
    from pipeline.table.catalog import load_or_create, table_root
    from pipeline.table.schema import AUDIO_TABLE

    with moto_s3(tmp_path) as endpoint:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="curated")
        cfg = build_config(
            overrides=[f"storage.s3_endpoint_url={endpoint}", f"table.catalog_uri=sqlite:///{tmp_path}/catalog.db"]
        )
        root = table_root("s3://curated/cv", cfg)
        assert root.catalog_kwargs["warehouse"] == "s3://curated/cv/warehouse"
        catalog = root.catalog()
        schema = pa.schema([pa.field("id", pa.string(), nullable=False), pa.field("v", pa.int64())])
        t = load_or_create(catalog, "curate.en_clips", schema)
        assert t.location().startswith("s3://curated/cv/warehouse/")

        def upsert(**values):
            t = catalog.load_table("curate.en_clips")
            rows = pa.table({"id": list(values), "v": list(values.values())}).cast(schema_to_pyarrow(t.schema()))
            commits.upsert(lambda: catalog.load_table("curate.en_clips"), commits.write_rows(t, rows), rows["id"], {})

        upsert(a=1, b=2)
        upsert(b=3, c=4)
        got = catalog.load_table("curate.en_clips").scan().to_arrow().to_pylist()
        assert sorted((r["id"], r["v"]) for r in got) == [("a", 1), ("b", 3), ("c", 4)]

        audio = load_or_create(catalog, "curate.en_audio", AUDIO_TABLE)
        batch = pa.table({"audio_sha256": ["s1"], "id": ["a"], "size": [3], "audio_bytes": [b"abc"]})
        files = commits.write_rows(audio, batch.cast(schema_to_pyarrow(audio.schema())))
        audio_table.append_audio(lambda: catalog.load_table("curate.en_audio"), files, {})
        assert catalog.load_table("curate.en_audio").scan().to_arrow().column("audio_bytes").to_pylist() == [b"abc"]

        t = catalog.load_table("curate.en_clips")
        orphan = commits.write_rows(t, pa.table({"id": ["z"], "v": [0]}).cast(schema_to_pyarrow(t.schema())))
        gone = table_upkeep.remove_orphans(t, 0, lambda uri: resolve_filesystem(uri, cfg.storage))
        assert gone == [f.file_path for f in orphan]
        # With no minimum age, the sweep took the orphan and nothing the table references: all reads back.
        got = catalog.load_table("curate.en_clips").scan().to_arrow().to_pylist()
        assert sorted((r["id"], r["v"]) for r in got) == [("a", 1), ("b", 3), ("c", 4)]
        assert catalog.load_table("curate.en_audio").scan().to_arrow().num_rows == 1

        # curate query on an S3 table: its data files are copied into the workspace, which the query may read
        # once external access is off; nothing else.
        import io

        from pipeline.table.query import QueryError, query

        out = io.StringIO()
        query(
            "s3://curated/cv", "select string_agg(id, '' order by id) ids, sum(v) v from clips", cfg, fmt="csv", out=out
        )
        assert out.getvalue().splitlines() == ['"ids","v"', '"abc",8']
        (tmp_path / "private.csv").write_text("x\nsecret\n")
        with pytest.raises(QueryError, match="reads the view clips and nothing else"):
            query("s3://curated/cv", f"select * from read_csv('{tmp_path}/private.csv')", cfg, out=io.StringIO())
