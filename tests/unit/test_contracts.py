"""The typed contracts: stage columns checked at build time, the run result, the launcher seam."""

from __future__ import annotations

import pytest

from pipeline.columns import AUDIO, DECODE, GATES, ID, JUDGE, SINK, TRANSCRIBE, ColumnContractError, check_stages
from pipeline.config import build_config
from pipeline.dag import stage_columns
from pipeline.manifest import Counts, LocaleResult, RunResult, Tally, combine
from tasks.launchers import ChildProcessLauncher, InClusterLauncher, RayJobLauncher, launcher_for


def test_every_profile_and_backend_satisfies_the_column_contract():
    for overrides in ([], ["transcriber.backend=transformers"]):
        cfg = build_config(overrides=overrides)
        for dnsmos in (False, True):
            cfg.quality.dnsmos = dnsmos
            out = check_stages([ID, AUDIO, "sentence"], stage_columns(cfg, ["sentence"]))
            assert {"kept", "score", "transcription", "error", "snr_db"} <= out and "arr" not in out
            assert ("dnsmos_ovrl" in out) == dnsmos


def test_a_column_added_before_the_judge_is_declared_or_fails_at_build_time():
    import dataclasses

    from pipeline.columns import MEASURE

    cfg = build_config()
    stages = stage_columns(cfg, ["sentence"])
    # A throwaway stage writes a column before the judge that the judge's projection does not keep.
    extra = dataclasses.replace(MEASURE, name="measure_hum", writes=("hum_db",))
    with pytest.raises(ColumnContractError, match=r"add_judge_stage keeps only .*\['hum_db'\] would vanish"):
        check_stages([ID, AUDIO, "sentence"], [*stages[:2], extra, *stages[2:]])
    # Dropped by name before the judge, it is fine.
    dropped = dataclasses.replace(extra, drops=("hum_db",))
    check_stages([ID, AUDIO, "sentence"], [*stages[:2], dropped, *stages[2:]])


def test_a_stage_reading_an_unwritten_column_fails_with_its_name():
    with pytest.raises(ColumnContractError, match=r"add_judge_stage reads \['transcription'\]"):
        check_stages([ID, AUDIO], [DECODE, JUDGE, GATES, SINK])
    with pytest.raises(ColumnContractError, match="decode_audio"):
        check_stages([ID], [DECODE, TRANSCRIBE])


def test_manifest_round_trips_and_tallies_add_up():
    t1 = Tally(counts=Counts(in_=3, kept=1, rejected=1, quarantined=1), audio_seconds=2.5)
    t1.histogram.score["4"] = 2
    t1.histogram.score_expected[5].count = 2
    t2 = Tally(counts=Counts(in_=2, kept=2), audio_seconds=1.0)
    t2.histogram.score["5"] = 2
    total = combine([t1, t2])
    assert total.counts.model_dump(by_alias=True) == {"in": 5, "kept": 3, "rejected": 1, "quarantined": 1}
    assert total.audio_seconds == 3.5 and total.histogram.score["4"] == 2 and total.histogram.score["5"] == 2
    assert sum(b.count for b in total.histogram.score_expected) == 2
    loc = LocaleResult(locale="en", table="curate.en_clips", audio_table="curate.en_audio", tally=total, snapshot_id=7)
    m = RunResult(
        run_id="r",
        created_at="now",
        output="out",
        catalog="sqlite:///out/catalog.db",
        form="parquet",
        sources=["s"],
        locales=[loc, LocaleResult(locale="es", table="t", audio_table="a", nothing_to_do=True)],
        wall_time_s=1,
        models={},
        config={},
    )
    again = RunResult.from_json(m.to_json())
    assert again == m and '"in": 5' in m.to_json()
    assert again.tally == total and not again.nothing_to_do


def test_one_place_picks_the_launcher():
    assert launcher_for(None) == ChildProcessLauncher()
    assert launcher_for("auto") == InClusterLauncher()
    assert launcher_for("http://head:8265") == RayJobLauncher("http://head:8265")
    assert launcher_for("10.0.0.5:6379") == ChildProcessLauncher("10.0.0.5:6379")
    with pytest.raises(ValueError, match="ray:// client connections"):
        launcher_for("ray://head:10001")


def test_the_commit_checks_ids_not_just_counts():
    from collections import Counter

    from pipeline.run import RowAccountingError, check_ids

    inp = Counter({"a": 1, "b": 1, "c": 1})
    check_ids(inp, Counter({"a": 1, "b": 1, "c": 1}))
    with pytest.raises(RowAccountingError, match=r"1 lost \(e.g. \['b'\]\), 1 extra \(e.g. \['a2'\]\)"):
        check_ids(inp, Counter({"a": 1, "a2": 1, "c": 1}))  # same count, wrong ids
    with pytest.raises(RowAccountingError, match="1 extra"):
        check_ids(inp, Counter({"a": 2, "b": 1, "c": 1}))  # a doubled id


def test_every_entry_point_refuses_a_secret_with_one_rule(tmp_path):
    """Overrides at the flow's edge and the CLI, a config handed to any launcher, the run itself: the same
    rule, naming the keys, never the values."""
    import logging

    from pipeline.config import SecretInConfigError, build_config, refuse_secrets, secret_overrides
    from pipeline.run import run_curation
    from pipeline.shards import plan_shards

    assert secret_overrides(["judge.engine_env.HF_TOKEN=hf_abc", "judge.batch_size=8", "storage.aws_secret=x"]) == [
        "judge.engine_env.HF_TOKEN",
        "storage.aws_secret",
    ]
    assert secret_overrides(["judge.engine_env.RAY_AUTH_MODE=token"]) == []  # a mode, not a secret
    (spec,) = plan_shards([str(tmp_path / "in.parquet")], str(tmp_path / "out"), "dev")
    cfg = build_config(overrides=["judge.engine_env={HF_TOKEN: hf_abc}"])
    for launcher in (RayJobLauncher("http://127.0.0.1:1"), ChildProcessLauncher(), InClusterLauncher()):
        with pytest.raises(SecretInConfigError, match=r"refused judge\.engine_env\.HF_TOKEN") as err:
            launcher.launch(spec, cfg, logging.getLogger("test"), run_id="r")
        assert "hf_abc" not in str(err.value) and "Secret block" in str(err.value)
    with pytest.raises(SecretInConfigError):
        run_curation(cfg, [str(tmp_path / "in.parquet")], str(tmp_path / "out"))
    with pytest.raises(SecretInConfigError, match="PGPASSWORD"):
        refuse_secrets(build_config(overrides=["table.catalog_uri=postgresql://u:pw@db/cat"]))
