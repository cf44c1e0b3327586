"""Input and output on a real S3-compatible server (moto's server mode on 127.0.0.1).

The S3 secret key is a planted marker: it must appear in no log line, manifest or output object.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import boto3
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO
from tests.services import moto_s3

pytestmark = pytest.mark.slow

SECRET = "planted-Secret-7f3c9a1e-do-not-leak"


def test_curate_from_s3_to_s3_without_leaking_credentials(tmp_path, sample_table):
    with moto_s3(tmp_path) as endpoint:
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "curate-test",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_REGION": "us-east-1",
            "HF_HUB_OFFLINE": "1",
        }
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="curate-test",
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket="cv")
        for i in range(2):
            buf = io.BytesIO()
            pq.write_table(sample_table.slice(i * 3, 3), buf)
            s3.put_object(Bucket="cv", Key=f"cv-corpus/en/dev/part-{i}.parquet", Body=buf.getvalue())

        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "run",
                "--input",
                "s3://cv/cv-corpus/en/dev/",
                "--output",
                "s3://cv/curated/dev",
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]

        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="cv", Prefix="curated/dev/")["Contents"]]
        manifest = json.loads(s3.get_object(Bucket="cv", Key="curated/dev/manifest.json")["Body"].read())
        assert manifest["counts"]["in"] == 6
        assert manifest["inputs"] == [f"s3://cv/cv-corpus/en/dev/part-{i}.parquet" for i in range(2)]
        data_keys = {k.removeprefix("curated/dev/") for k in keys if k.endswith(".parquet")}
        assert data_keys == {f["path"] for f in manifest["files"]}
        assert not any("_staging" in k for k in keys)
        ids = []
        for k in sorted(data_keys):
            if k.startswith(("scores/", "quarantine/")):
                body = s3.get_object(Bucket="cv", Key=f"curated/dev/{k}")["Body"].read()
                ids += pq.read_table(io.BytesIO(body)).column("id").to_pylist()
        assert sorted(ids) == sorted(sample_table.slice(0, 6).column("id").to_pylist())

        everything = proc.stdout + proc.stderr + json.dumps(manifest)
        for k in keys:
            everything += s3.get_object(Bucket="cv", Key=k)["Body"].read().decode("latin-1")
    assert SECRET not in everything
