"""S3 against a real S3-compatible server (moto, 127.0.0.1) behind a proxy we can cut.

The transient test is also the S3 input/output test (the table's warehouse on S3, its SQLite catalog
on local disk), and its S3 secret key is a planted marker that must appear in no log line, snapshot,
catalog or stored object.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time

import boto3
import pyarrow.parquet as pq
import pytest

from tests.conftest import NO_JUDGE_ARGS, REPO
from tests.services import FlakyProxy, moto_s3
from tests.table import rows, tables

pytestmark = pytest.mark.slow

SECRET = "planted-Secret-7f3c9a1e-do-not-leak"


def _s3(endpoint):
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="k", aws_secret_access_key=SECRET, region_name="us-east-1"
    )


def _env(endpoint):
    return {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "HF_HUB_OFFLINE": "1",
    }


def test_transient_outage_is_retried_and_output_is_complete(tmp_path, sample_table):
    with moto_s3(tmp_path) as endpoint:
        s3 = _s3(endpoint)
        s3.create_bucket(Bucket="cv-data")
        for i in range(2):  # a prefix of two files, listed and read lazily from S3
            buf = io.BytesIO()
            pq.write_table(sample_table.slice(2 * i, 2), buf)
            s3.put_object(Bucket="cv-data", Key=f"in/part-{i}.parquet", Body=buf.getvalue())
        proxy = FlakyProxy(int(endpoint.rsplit(":", 1)[1])).start()
        proxy_url = f"http://127.0.0.1:{proxy.port}"

        def outage_when_writing_starts():
            # Cut the store as soon as the run writes its first data file, and keep it cut until a
            # request of the run has met the outage, then 4 s more.  A fixed 4 s cut missed the run on
            # a busy machine: it made no request for longer than that after its first file.
            deadline = time.time() + 600
            while time.time() < deadline:
                listed = s3.list_objects_v2(Bucket="cv-data", Prefix="out/warehouse/").get("Contents", [])
                if any(o["Key"].endswith(".parquet") for o in listed):
                    proxy.cut()
                    met_by = time.time() + 300  # the run must still commit, so it will come
                    while proxy.refused_during_cut == 0 and time.time() < met_by:
                        time.sleep(0.1)
                    time.sleep(4)
                    proxy.restore()
                    return
                time.sleep(0.2)

        cutter = threading.Thread(target=outage_when_writing_starts, daemon=True)
        cutter.start()
        catalog, own_tmp = tmp_path / "catalog.db", tmp_path / "tmp"
        own_tmp.mkdir()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "run",
                "--input",
                "s3://cv-data/in/",
                "--output",
                "s3://cv-data/out",
                "--set",
                f"table.catalog_uri=sqlite:///{catalog}",
                *NO_JUDGE_ARGS,
            ],
            cwd=REPO,
            env={**_env(proxy_url), "TMPDIR": str(own_tmp), "RAY_TMPDIR": "/tmp"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        cutter.join(timeout=5)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert proxy.cuts == 1, "the outage never happened; the test exercised nothing"
        # A request of the run hit the outage (a new connection refused while cut) and was retried.
        assert proxy.refused_during_cut > 0, "no request of the run reached the outage"

        overrides = [f"table.catalog_uri=sqlite:///{catalog}", f"storage.s3_endpoint_url={endpoint}"]
        os.environ.update({"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"})
        try:
            got = rows("s3://cv-data/out", overrides=overrides)
            clips, _ = tables("s3://cv-data/out", overrides=overrides)
            assert clips.location().startswith("s3://cv-data/out/warehouse/")
        finally:
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
                os.environ.pop(k, None)
        assert sorted(got) == sorted(sample_table.slice(0, 4).column("id").to_pylist())
        everything = proc.stdout + proc.stderr + catalog.read_bytes().decode("latin-1")
        # The engines' full output went to the run's log, uploaded beside the table (a nightly job used to
        # leave one in the temp folder each night), and no copy stayed behind.
        (log_line,) = [line for line in proc.stdout.splitlines() if line.strip().startswith("log ")]
        log_uri = log_line.split(None, 1)[1]
        assert log_uri.startswith("s3://cv-data/out/_logs/curate-run-") and log_uri.endswith(".log"), log_line
        log_text = s3.get_object(Bucket="cv-data", Key=log_uri.removeprefix("s3://cv-data/"))["Body"].read().decode()
        assert "Started a local Ray instance" in log_text  # the engines' output, not an empty file
        assert not list(own_tmp.glob("curate-run-*.log"))
        for o in s3.list_objects_v2(Bucket="cv-data", Prefix="out/")["Contents"]:
            everything += s3.get_object(Bucket="cv-data", Key=o["Key"])["Body"].read().decode("latin-1")
        assert SECRET not in everything
        proxy.stop()


def test_permanent_errors_fail_clearly_before_any_work(tmp_path, sample_table):
    with moto_s3(tmp_path) as endpoint:
        s3 = _s3(endpoint)
        s3.create_bucket(Bucket="cv-data")
        buf = io.BytesIO()
        pq.write_table(sample_table.slice(0, 2), buf)
        s3.put_object(Bucket="cv-data", Key="in/part-0.parquet", Body=buf.getvalue())
        env = _env(endpoint)

        def run(*args):
            t0 = time.time()
            p = subprocess.run(
                [sys.executable, "-m", "pipeline.cli", "run", *args],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            return p, time.time() - t0

        local_catalog = f"table.catalog_uri=sqlite:///{tmp_path}/catalog.db"
        missing_bucket, _ = run(
            "--input", "s3://cv-data/in/", "--output", "s3://no-such-bucket/out", "--set", local_catalog
        )
        assert missing_bucket.returncode == 2
        assert "cannot write to the warehouse s3://no-such-bucket/out/warehouse" in missing_bucket.stderr
        assert "Started a local Ray instance" not in missing_bucket.stderr

        missing_input, _ = run(
            "--input", "s3://cv-data/nothing-here/", "--output", "s3://cv-data/out", "--set", local_catalog
        )
        assert missing_input.returncode == 2 and "does not exist" in missing_input.stderr
