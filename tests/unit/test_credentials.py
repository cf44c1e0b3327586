"""Secret-block credentials, against Prefect's real (ephemeral) API."""

from __future__ import annotations

import os

import pytest
from prefect.blocks.system import Secret
from prefect.testing.utilities import prefect_test_harness

from tasks.credentials import apply_credentials_block


@pytest.fixture(scope="module")
def prefect_api():
    # None: the suite's PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (tests/conftest.py), not the harness's
    # own 30 s, which a 2-core AVX2-only EPYC running two other test workers missed.
    with prefect_test_harness(server_startup_timeout=None):
        yield


def test_secret_block_sets_only_credential_env(prefect_api, monkeypatch):
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    Secret(value={"AWS_ACCESS_KEY_ID": "id-1", "AWS_SECRET_ACCESS_KEY": "planted-s3cret"}).save(
        "cv-creds", overwrite=True
    )
    names = apply_credentials_block("cv-creds")
    assert names == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]  # names only, never values
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == "planted-s3cret"


def test_secret_block_cannot_set_arbitrary_env(prefect_api):
    Secret(value={"PATH": "/evil", "AWS_REGION": "x"}).save("bad-creds", overwrite=True)
    with pytest.raises(ValueError, match="PATH"):
        apply_credentials_block("bad-creds")
    assert os.environ.get("PATH") != "/evil"
