"""Common Voice releases on S3 (a real moto server on 127.0.0.1): discovery, tarball streaming and
parallel folder reads through Ray Data's read tasks."""

from __future__ import annotations

import boto3
import pytest
import ray

from pipeline.config import StorageConfig, build_config
from pipeline.io.cv_release import MISSING_CLIP
from pipeline.io.inputs import ReleaseInputs, open_inputs
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
        assert inputs.total_rows == 11

        cfg = build_config(overrides=[f"storage.s3_endpoint_url={endpoint}", "reader.clips_per_task=2"])
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
        try:
            rows = inputs.dataset(cfg).take_all()
        finally:
            ray.shutdown()
        expected = [r["path"] for r in full.rows + delta.rows]
        assert sorted(r["id"] for r in rows) == sorted(expected)
        errors = {r["id"]: r["read_error"] for r in rows}
        assert errors[full.missing] == MISSING_CLIP and errors[delta.missing] == MISSING_CLIP
        assert all(r["audio_bytes"] for r in rows if r["id"] not in (full.missing, delta.missing))
