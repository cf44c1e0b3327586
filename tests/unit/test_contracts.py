"""The typed contracts: stage columns checked at build time, the run result, the launcher seam."""

from __future__ import annotations

import json

import pytest

from pipeline.cli import result_line
from pipeline.config import build_config
from pipeline.dag import Models, check_curation, curation_stages
from pipeline.launch import ChildProcessLauncher, InClusterLauncher, RayJobLauncher, launcher_for, parse_result
from pipeline.models import ResolvedModel
from pipeline.result import Counts, LocaleResult, RunResult, Tally, combine
from pipeline.stage import READ, WRITE, ColumnContractError, Stage, check_stages

# Building the stages loads nothing: models load in the actors' setup, the judge's engine when added.
MODELS = Models(ResolvedModel("w", "/models/w", "r1"), ResolvedModel("j", "/models/j", "r1"))
VARIANTS = [
    [],
    ["transcriber.backend=transformers"],
    ["quality.dnsmos=true"],
    ["quality.enabled=false"],
    ["judge.enabled=false"],
]


def test_every_profile_and_backend_satisfies_the_column_contract():
    for overrides in VARIANTS:
        cfg = build_config(overrides=overrides)
        out = check_curation(["sentence"], curation_stages(cfg, MODELS, ["sentence"]))
        assert {"kept", "score", "transcription", "error"} <= out and "arr" not in out
        assert ("snr_db" in out) == cfg.quality.enabled
        assert ("dnsmos_ovrl" in out) == cfg.quality.dnsmos


def test_a_column_added_before_the_judge_is_declared_or_fails_at_build_time():
    import dataclasses

    stages = curation_stages(build_config(), MODELS, ["sentence"])
    # A throwaway stage writes a column before the judge that the judge's projection does not keep.
    hum = Stage("hum", reads=("arr",), writes=("hum_db",), call=lambda batch: batch)
    with pytest.raises(ColumnContractError, match=r"judge keeps only .*\['hum_db'\] would vanish"):
        check_curation(["sentence"], [*stages[:2], hum, *stages[2:]])
    # Dropped by name before the judge, it is fine.
    check_curation(["sentence"], [*stages[:2], dataclasses.replace(hum, drops=("hum_db",)), *stages[2:]])


def test_a_stage_reading_an_unwritten_column_fails_with_its_name():
    decode, _quality, transcribe, judge, gates = curation_stages(build_config(), MODELS, [])
    with pytest.raises(ColumnContractError, match=r"judge reads \['transcription'\]"):
        check_curation([], [decode, judge, gates])
    with pytest.raises(ColumnContractError, match="decode reads"):
        check_stages(["id"], [decode, transcribe])


def test_one_name_per_stage_in_contracts_errors_progress_and_failures():
    """A stage's name is what a quarantined row's ``stage`` says, what the progress line shows, and what
    a failed run names: the console's map of Ray's operator names speaks the same vocabulary."""
    from pipeline.show.console import _STAGE_OF, STAGE_PROCESSES
    from pipeline.stages import decode, judge, transcribe

    names = {READ, WRITE}
    for overrides in VARIANTS:
        stages = curation_stages(build_config(overrides=overrides), MODELS, [])
        names |= {s.name for s in stages}
        assert len({s.name for s in stages}) == len(stages)  # one name, one stage
        assert next(s.name for s in stages if s.counted) == "decode" and stages[-1].counted
    assert names == {stage for _, stage in _STAGE_OF} == set(STAGE_PROCESSES)
    # The names a quarantined row can carry are stage names.
    assert {decode.NAME, judge.NAME, transcribe.NAME, transcribe.FEATURES_STAGE} <= names


def test_each_stage_declares_where_it_runs():
    cfg = build_config(overrides=["transcriber.num_actors=3", "transcriber.batch_size=7"])
    by_name = {s.name: s for s in curation_stages(cfg, MODELS, [])}
    whisper = by_name["transcribe"]
    assert whisper.actors == 3 and whisper.batch_size == 7 and whisper.setup == (cfg.transcriber, "/models/w")
    assert by_name["decode"].num_cpus == cfg.audio.decode_num_cpus and not isinstance(by_name["decode"].call, type)
    assert by_name["judge"].build is not None and by_name["judge"].keeps is not None


def test_a_stage_is_added_with_exactly_the_resources_it_declares():
    """What ``apply`` hands Ray Data.  ``num_cpus=0`` is a request (Whisper alone on a node with no CPUs
    for anything else, as the node-loss test runs it), not "unset": dropped, Ray would ask for 1 CPU and
    the actor would never be placed."""

    class Recorder:
        def map_batches(self, fn, **kwargs):
            self.fn, self.kwargs = fn, kwargs
            return self

    cfg = build_config(overrides=["transcriber.num_cpus_per_actor=0", "transcriber.resources={whisper: 1}"])
    stages = {s.name: s for s in curation_stages(cfg, MODELS, [])}
    got = stages["transcribe"].apply(Recorder()).kwargs
    assert got["num_cpus"] == 0 and got["num_gpus"] == 0 and got["resources"] == {"whisper": 1}
    assert (
        got["fn_constructor_args"] == (cfg.transcriber, "/models/w") and got["batch_size"] == cfg.transcriber.batch_size
    )
    assert got["compute"].min_size == got["compute"].max_size == cfg.transcriber.num_actors
    gates = stages["gates"].apply(Recorder()).kwargs
    assert "compute" not in gates and "num_cpus" not in gates and "resources" not in gates  # plain tasks, defaults


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
    # As a shard hands it to its launcher: one line printed, parsed back.
    line = result_line(m)
    again = parse_result(["other output", line, ""], "shard")
    assert again == m and '"in":5' in line
    assert again.tally == total and not again.nothing_to_do


def test_one_place_picks_the_launcher():
    assert launcher_for(None) == ChildProcessLauncher()
    assert launcher_for("auto") == InClusterLauncher()
    assert launcher_for("http://head:8265") == RayJobLauncher("http://head:8265")
    assert launcher_for("10.0.0.5:6379") == ChildProcessLauncher("10.0.0.5:6379")
    with pytest.raises(ValueError, match="ray:// client connections"):
        launcher_for("ray://head:10001")


def test_the_commit_checks_ids_not_just_counts():
    import pyarrow as pa

    from pipeline.run.engines import RowAccountingError, check_ids

    inp = pa.array(["a", "b", "c"])
    check_ids(inp, pa.chunked_array([["c", "a"], ["b"]]))
    with pytest.raises(RowAccountingError, match=r"1 lost \(e.g. \['b'\]\), 1 extra \(e.g. \['a2'\]\)"):
        check_ids(inp, pa.array(["a", "a2", "c"]))  # same count, wrong ids
    with pytest.raises(RowAccountingError, match=r"0 lost \(e.g. \[\]\), 1 extra \(e.g. \['a'\]\)"):
        check_ids(inp, pa.array(["a", "b", "c", "a"]))  # a doubled id
    with pytest.raises(RowAccountingError, match=r"3 lost"):
        check_ids(inp, pa.array([], pa.string()))
    check_ids(pa.array([], pa.string()), pa.chunked_array([], pa.string()))
    # Same length, every id present, one doubled and one lost: the sorted lists differ, so it is counted.
    with pytest.raises(RowAccountingError, match=r"1 lost \(e.g. \['a'\]\), 1 extra \(e.g. \['b'\]\)"):
        check_ids(pa.array(["a", "a", "b"]), pa.array(["b", "a", "b"]))
    check_ids(pa.array(["a", "a", "b"]), pa.chunked_array([pa.array(["b", "a"], pa.large_string()), ["a"]]))


def test_what_the_engines_changed_is_counted_by_id_columnar():
    """Added (new to the table), re-decided (kept moved) and withdrawn (kept before, not now), from (id, kept)
    tables: a first night's engine rows are every clip of the release."""
    import pyarrow as pa

    from pipeline.run.engines import kept_changes

    before = pa.table({"id": pa.array(["k", "r", "s"], pa.large_string()), "kept": [True, False, True]})
    now = pa.table({"id": ["n1", "n2", "k", "r", "s"], "kept": [True, None, False, True, True]})
    assert kept_changes(before, now) == {"added": 2, "redecided": 2, "withdrawn": 1}
    assert kept_changes(before.slice(0, 0), now.slice(0, 0)) == {"added": 0, "redecided": 0, "withdrawn": 0}


def test_every_entry_point_refuses_a_secret_with_one_rule(tmp_path):
    """Overrides at the flow's edge and the CLI, a config handed to any launcher, the run itself: the same
    rule, naming the keys, never the values."""
    import logging

    from flows.curation import flow_config
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
    # The run is the pipeline's boundary (a CLI run, a shard's child, a Ray Job's driver and an in-cluster
    # shard all go through it); the flows refuse before any launcher is handed the config.
    with pytest.raises(SecretInConfigError, match=r"refused judge\.engine_env\.HF_TOKEN") as err:
        InClusterLauncher().launch(spec, cfg, logging.getLogger("test"), run_id="r")
    assert "hf_abc" not in str(err.value) and "Secret block" in str(err.value)
    with pytest.raises(SecretInConfigError):
        run_curation(cfg, [str(tmp_path / "in.parquet")], str(tmp_path / "out"))
    with pytest.raises(SecretInConfigError, match=r"curate_dataset: refused judge\.engine_env\.HF_TOKEN"):
        flow_config("curate_dataset", config_overrides=["judge.engine_env={HF_TOKEN: hf_abc}"])
    with pytest.raises(SecretInConfigError, match="PGPASSWORD"):
        refuse_secrets(build_config(overrides=["table.catalog_uri=postgresql://u:pw@db/cat"]))


def test_nested_keys_and_urls_with_credentials_are_refused_and_never_shown():
    """A secret under a nested engine key, or as a URL's password anywhere in the config (#31)."""
    from pipeline.config import SecretInConfigError, build_config, redact, refuse_secrets

    nested = build_config(overrides=["judge.engine_kwargs={hf_overrides: {api_key: s3cr3t-nested}}"])
    with pytest.raises(SecretInConfigError, match=r"refused judge\.engine_kwargs\.hf_overrides\.api_key") as err:
        refuse_secrets(nested)
    assert "s3cr3t-nested" not in str(err.value)
    url = build_config(overrides=["storage.s3_endpoint_url=http://curate:s3cr3t-url@127.0.0.1:9000"])
    with pytest.raises(SecretInConfigError, match=r"refused storage\.s3_endpoint_url") as err:
        refuse_secrets(url)
    assert "s3cr3t-url" not in str(err.value)
    # Wherever a config is shown (the run's log, the artifacts), a URL's password is redacted.
    shown = json.dumps(url.public_dict()) + json.dumps(redact(url.model_dump()))
    assert "s3cr3t-url" not in shown and "http://curate:***@127.0.0.1:9000" in shown
    # A password-less URL, or a key that only looks like one, is no secret.
    refuse_secrets(build_config(overrides=["storage.s3_endpoint_url=http://127.0.0.1:9000"]))


def test_a_typed_setting_is_never_taken_for_a_secret_by_its_name():
    """``transcriber.max_new_tokens`` holds "token": ``curate config`` and ``curate backfill`` refused it as an
    override, the flows did too, and every shown config (``curate config``, the run's log, the artifacts)
    printed it as "***"."""
    from flows.curation import flow_config
    from pipeline.config import build_config, redact, refuse_secrets, secret_overrides

    assert secret_overrides(["transcriber.max_new_tokens=64"]) == []
    cfg = build_config(overrides=["transcriber.max_new_tokens=64"])
    refuse_secrets(cfg, ["transcriber.max_new_tokens=64"])
    assert redact(cfg.model_dump())["transcriber"]["max_new_tokens"] == 64
    assert cfg.public_dict()["transcriber"]["max_new_tokens"] == 64
    assert (
        flow_config("curate_dataset", config_overrides=["transcriber.max_new_tokens=64"]).transcriber.max_new_tokens
        == 64
    )
    # A free-form engine key is still judged by its name, and so is a key the config does not declare.
    assert secret_overrides(["judge.engine_env.HF_TOKEN=x", "storage.auth_token=x"]) == [
        "judge.engine_env.HF_TOKEN",
        "storage.auth_token",
    ]
    assert redact({"engine_env": {"HF_TOKEN": "hf_x"}}) == {"engine_env": {"HF_TOKEN": "***"}}


def test_a_ray_job_s_lines_its_log_tail_missed_are_forwarded_from_the_whole_log():
    """The Jobs API's websocket closed as a job ended (code 1006, seen in CI-AM): its last lines, the
    "committed …" one among them, never reached the Prefect run's log."""
    from pipeline.launch.ray_jobs import LogTail

    class BrokenTail:  # the Jobs API client's tail, closing after two chunks
        async def tail_job_logs(self, job_id):
            yield "2026 INFO pipeline: view took 0.0 s\n2026 INFO pipe"
            yield "line: plan took 0.1 s\n"
            raise ConnectionError("WebSocket closed with close code 1006")

    tail = LogTail(BrokenTail(), "job")
    tail.thread.join(timeout=10)
    assert tail.drain() == ["2026 INFO pipeline: view took 0.0 s", "2026 INFO pipeline: plan took 0.1 s"]
    whole = (
        "2026 INFO pipeline: view took 0.0 s\n2026 INFO pipeline: plan took 0.1 s\n"
        "2026 INFO pipeline: committed curate.en_clips snapshot 1\nCURATE-RESULT {}\n"
    )
    assert tail.rest(whole) == ["2026 INFO pipeline: committed curate.en_clips snapshot 1", "CURATE-RESULT {}"]
    assert tail.rest(whole.rstrip("\n")) == tail.rest(whole)  # with or without a last newline
