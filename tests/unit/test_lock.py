"""The lock (constraints.txt): what the install checks, and that this venv is what it says."""

from __future__ import annotations

import importlib.util
from importlib import metadata

from tests.conftest import REPO

spec = importlib.util.spec_from_file_location("check_lock", REPO / "scripts" / "check_lock.py")
check_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_lock)


def test_an_unlocked_or_moved_package_is_a_difference():
    locked = {"prefect": "3.7.7", "sqlalchemy": "2.0.58"}
    have = {"prefect": "3.7.7", "sqlalchemy": "2.1.9", "newdep": "1.0", "audio-curate": "0.1.0", "pip": "23.2"}
    problems = check_lock.differences(locked, have)
    assert problems == [
        "newdep==1.0 is installed but not in the lock",
        "sqlalchemy==2.1.9 is installed, the lock says 2.0.58",
    ]
    # An image that installs fewer extras installs a subset: nothing missing is a difference.
    assert check_lock.differences(locked, {"prefect": "3.7.7"}) == []


def test_this_venv_is_exactly_the_lock_and_the_lock_keeps_the_scheduler_working(tmp_path):
    import setuptools  # noqa: F401  (it appends its _vendor copies to sys.path, as torch's inductor makes it)

    lock = check_lock.read_lock(REPO / "constraints.txt")
    assert check_lock.differences(lock, check_lock.installed()) == []
    # Prefect 3.7.7's scheduler creates no run with SQLAlchemy 2.1 (test_prefect_deployment.py).
    major, minor = (int(x) for x in lock["sqlalchemy"].split(".")[:2])
    assert (major, minor) < (2, 1) and metadata.version("sqlalchemy") == lock["sqlalchemy"]
    bad = tmp_path / "bad.txt"
    bad.write_text("prefect>=3\n")
    try:
        check_lock.read_lock(bad)
    except SystemExit as exc:
        assert "NAME==VERSION" in str(exc)
    else:
        raise AssertionError("a range in the lock must be refused")
