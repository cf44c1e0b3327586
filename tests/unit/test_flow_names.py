"""A night's run name carries the night as its deployment's schedule sees it, not UTC's date."""

from datetime import UTC, datetime

import pytest

from flows.publish import night_of, source_label


def test_a_night_is_named_for_the_schedules_local_date():
    late = datetime(2026, 12, 5, 4, 30, tzinfo=UTC)  # 23:30 on the 4th in New York
    assert night_of(late, "America/New_York") == "2026-12-04"
    assert night_of(late, "Asia/Tokyo") == "2026-12-05"
    assert night_of(late, None) == "2026-12-05"  # a schedule without a zone is UTC's
    assert night_of(late, "Not/A_Zone") == "2026-12-05"  # a zone this host lacks falls back to UTC


def test_a_release_source_is_labelled_by_its_locale():
    assert source_label("s3://b/cv-corpus-21.0-2025-03-14-es.tar.gz", "x") == "es"
    assert source_label("/data/cv-corpus-21.0-2025-03-14/fr", "x") == "fr"
    assert source_label("/data/mirror", "mirror") == "mirror"


def test_a_deployment_of_a_root_no_reader_speaks_is_refused_before_it_is_applied(capsys):
    """``deployments.deploy --source gs://…`` applied the deployment; the first night then failed."""
    from deployments.deploy import main

    with pytest.raises(SystemExit) as stop:
        main(["--source", "gs://bucket/cv-corpus-23.0-2025-09-05/en"])
    assert stop.value.code == 2
    assert "gs://bucket/cv-corpus-23.0-2025-09-05/en: only local paths and s3:// are read" in capsys.readouterr().err
