import re
import sys

import pytest

from pipeline.config import SEED_SYSTEM_PROMPT, build_config, parse_override


def test_local_profile_is_cpu_with_bundled_models():
    cfg = build_config("local")
    assert cfg.transcriber.backend == "ctranslate2" and cfg.transcriber.model.startswith("bundled:")
    assert cfg.judge.model.startswith("bundled:") and cfg.judge.num_gpus_per_actor == 0
    assert cfg.threshold == 3 and cfg.judge.system_prompt == SEED_SYSTEM_PROMPT


def test_cluster_profile_uses_seed_models_on_gpus():
    cfg = build_config("cluster")
    assert cfg.transcriber.model == "openai/whisper-large-v3-turbo"
    assert cfg.transcriber.backend == "transformers" and cfg.transcriber.dtype == "float16"
    assert cfg.judge.model == "unsloth/Meta-Llama-3.1-8B-Instruct"
    assert cfg.transcriber.num_gpus_per_actor == 1 and cfg.judge.num_gpus_per_actor == 1


def test_override_order_profile_then_file_then_set_then_fields(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("judge:\n  batch_size: 7\n  system_prompt: custom\nthreshold: 2\n")
    cfg = build_config("cluster", file=f, overrides=["judge.batch_size=9"], threshold=4.5)
    assert cfg.judge.batch_size == 9
    assert cfg.judge.system_prompt == "custom"
    assert cfg.threshold == 4.5
    assert cfg.judge.model == "unsloth/Meta-Llama-3.1-8B-Instruct"  # untouched profile default


def test_toml_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[transcriber]\nbackend = "transformers"\n')
    assert build_config(file=f).transcriber.backend == "transformers"


def test_a_config_file_parameter_reads_only_config_files_and_never_quotes_them(tmp_path):
    """A flow's ``config_file`` is a parameter anyone with the UI can set: it cannot make the worker read
    (and log) an arbitrary file, and a broken file's error names the place, not the text."""
    secret = tmp_path / "id_rsa"
    secret.write_text("-----BEGIN PRIVATE KEY----- hunter2\n")
    with pytest.raises(ValueError, match=r"a config file is \.yaml, \.yml, \.toml"):
        build_config(file=secret)
    broken = tmp_path / "c.yaml"
    broken.write_text("judge:\n  batch_size: [hunter2\n")
    with pytest.raises(ValueError, match="not valid YAML at line") as err:
        build_config(file=broken)
    assert "hunter2" not in str(err.value) and "hunter2" not in repr(err.value.__cause__)
    bad_toml = tmp_path / "c.toml"
    bad_toml.write_text("x = hunter2\n")
    with pytest.raises(ValueError, match="not valid TOML") as err:
        build_config(file=bad_toml)
    assert "hunter2" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        build_config(file=tmp_path / "missing.yaml")


def test_a_config_file_that_is_not_there_is_one_line_from_every_command(tmp_path, capsys):
    """``curate run|config|backfill --config missing.yaml`` ended in a traceback (FileNotFoundError)."""
    from flows.cli import main

    missing = tmp_path / "missing.yaml"
    for argv in (
        ["run", "--output", str(tmp_path / "out")],
        ["config"],
        ["backfill", "--source-root", str(tmp_path), "--output-root", str(tmp_path / "out")],
    ):
        assert main([*argv, "--config", str(missing)]) == 2
        assert capsys.readouterr().err.strip() == f"curate: error: {missing}: no such config file", argv
    assert list(tmp_path.iterdir()) == []


def test_parse_override_types_values():
    assert parse_override("judge.engine_kwargs.enforce_eager=true") == {
        "judge": {"engine_kwargs": {"enforce_eager": True}}
    }
    assert parse_override("limit=5") == {"limit": 5}


def test_unknown_fields_are_errors_not_silently_ignored():
    with pytest.raises(ValueError, match=r"judge\.batchsize: Extra inputs are not permitted"):
        build_config(overrides=["judge.batchsize=3"])
    with pytest.raises(ValueError):
        parse_override("novalue")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(limit=0), r"limit: Input should be greater than or equal to 1"),
        (dict(limit=-3), r"limit: Input should be greater than or equal to 1"),
        (dict(threshold=7), r"threshold: Input should be less than or equal to 5"),
        (dict(threshold=0.4, threshold_on="score_expected"), r"threshold: Input should be greater than or equal to 1"),
    ],
)
def test_a_limit_or_threshold_that_would_curate_nothing_is_an_error(fields, message):
    # --limit 0 reported a fresh table "already up to date"; -3 failed inside DuckDB after Ray started; a
    # threshold past the judge's 1..5 rejected every clip for judge_below.
    with pytest.raises(ValueError, match=message):
        build_config(**fields)


@pytest.mark.parametrize(
    "override",
    [
        "transcriber.batch_size=0",
        "transcriber.num_actors=0",
        "transcriber.beam_size=0",
        "transcriber.max_new_tokens=-1",
        "transcriber.num_gpus_per_actor=-1",
        "judge.batch_size=0",
        "judge.concurrency=0",
        "judge.gpu_memory_utilization=0",
        "judge.gpu_memory_utilization=1.5",
        "judge.top_logprobs=0",
        "audio.decode_batch_size=0",
        "audio.max_duration_s=0",
    ],
)
def test_an_engine_setting_no_engine_can_run_with_is_an_error(override):
    """``--set transcriber.batch_size=0`` was taken, and the run failed in Ray ("Batch size can't be negative
    or 0") after creating the table root and a log; now it is an invalid config, exit 2, before any work."""
    section_field = override.split("=")[0]
    with pytest.raises(ValueError, match=re.escape(section_field)):
        build_config(overrides=[override])


def test_judge_engine_kwargs_per_profile():
    from pipeline.stages.judge import vllm_engine_kwargs

    local = vllm_engine_kwargs(build_config("local").judge)
    # CPU: a fixed KV cache (no warm-up, no 9 GiB allocation) and blocks short enough to cache the prompt.
    assert local["kv_cache_memory_bytes"] == 256 << 20 and local["block_size"] == 32
    assert local["enable_prefix_caching"] is True and local["enforce_eager"] is True
    cluster = vllm_engine_kwargs(build_config("cluster").judge)
    # GPU: vLLM sizes the cache from gpu_memory_utilization and keeps its own block size.
    assert "kv_cache_memory_bytes" not in cluster and "block_size" not in cluster
    assert cluster["gpu_memory_utilization"] == 0.9
    # Raw engine_kwargs have the last word.
    tuned = vllm_engine_kwargs(build_config("local", overrides=["judge.engine_kwargs={block_size: 64}"]).judge)
    assert tuned["block_size"] == 64


def test_judge_engine_env_per_profile(monkeypatch):
    from pipeline.stages.judge import engine_runtime_env

    monkeypatch.setattr(sys, "executable", "/opt/curate/.venv/bin/python")  # paths with nothing to quote
    monkeypatch.setattr(sys, "prefix", "/opt/curate/.venv")
    # CPU: vLLM's model worker in the engine-core process (one process fewer to start).
    local = engine_runtime_env(build_config("local").judge)
    assert local == {"env_vars": {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}}
    # GPU: vLLM's defaults, and no runtime env at all, so the engine actors reuse the job's.
    assert engine_runtime_env(build_config("cluster").judge) is None
    assert engine_runtime_env(build_config("local", overrides=["judge.engine_env={}"]).judge) is None
    override = "judge.engine_env={VLLM_CPU_OMP_THREADS_BIND: '0'}"
    extra = engine_runtime_env(build_config("local", overrides=[override]).judge)
    assert extra == {"env_vars": {"VLLM_CPU_OMP_THREADS_BIND": "0"}}
    # A run's own temp folder (ray_init.engine_scratch), under what the config sets; the config wins.
    assert engine_runtime_env(build_config("cluster").judge, "/s") == {"env_vars": {"TMPDIR": "/s"}}
    mine = engine_runtime_env(build_config("local", overrides=["judge.engine_env={TMPDIR: /mine}"]).judge, "/s")
    assert mine == {"env_vars": {"TMPDIR": "/mine"}}
    # From a checkout under a folder with a space, Ray's shell gets the interpreter quoted (the engine
    # actor starting from there: tests/integration/test_spaced_install_path.py).
    # On CPU, torch's compiler cannot build from there either: the engine runs eager.
    monkeypatch.setattr(sys, "executable", "/home/Jo Smith/audio-curate/.venv/bin/python")
    monkeypatch.setattr(sys, "prefix", "/home/Jo Smith/audio-curate/.venv")
    spaced = engine_runtime_env(build_config("local").judge, "/s")
    assert spaced == {
        "env_vars": {"TORCHDYNAMO_DISABLE": "1", "TMPDIR": "/s", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"},
        "py_executable": "'/home/Jo Smith/audio-curate/.venv/bin/python'",
    }
    # GPU engines keep their compiled graphs: their kernels are Triton's (not tried from such a path here).
    gpu = engine_runtime_env(build_config("cluster").judge, "/s")
    assert gpu == {"env_vars": {"TMPDIR": "/s"}, "py_executable": "'/home/Jo Smith/audio-curate/.venv/bin/python'"}


def test_a_killed_run_s_engine_temp_folder_is_removed_and_a_live_one_is_not(tmp_path):
    """The folder's ``.owner`` is flock-ed by its run: free means the run is gone (SIGKILL, the OOM killer).
    Folders without one (the plan's, anyone's) and young ones are left alone."""
    import fcntl
    import os

    from pipeline.runtime.scratch import OWNER, sweep_scratch

    def folder(name, age_s=120.0, owner=True):
        d = tmp_path / name
        d.mkdir()
        if owner:
            (d / OWNER).touch()
            os.utime(d / OWNER, (os.path.getmtime(d / OWNER) - age_s,) * 2)
        return d

    dead, live, young = folder("curate-dead0000"), folder("curate-live0000"), folder("curate-young000", age_s=0)
    plan, other = folder("curate-plan-vm-1-abc", owner=False), folder("photos", owner=True)
    held = os.open(live / OWNER, os.O_RDWR)
    fcntl.flock(held, fcntl.LOCK_EX)  # a run at work (here this process; a lock is per open file)
    try:
        assert sweep_scratch(str(tmp_path)) == [str(dead)]
    finally:
        os.close(held)
    assert not dead.exists() and all(d.exists() for d in (live, young, plan, other))


def test_the_engines_temp_folder_leaves_room_for_vllm_s_socket_names():
    """A socket's path holds 107 characters, and vLLM adds 37 to its temp folder: under a long TMPDIR (a
    test's nested one) the engine could not start.  The scratch folder then goes to /tmp."""
    from pipeline.runtime.scratch import SCRATCH_PREFIX, scratch_base

    short, deep = (
        "/tmp/pytest-of-root/pytest-72/gw1/e2e0/tmp",
        "/tmp/pytest-of-root/pytest-72/popen-gw1/test_a_long_name0/tmp",
    )
    assert scratch_base(short) == short and scratch_base(deep) == "/tmp"
    for base in (short, "/tmp"):
        assert len(f"{base}/{SCRATCH_PREFIX}abcdefgh/{'b6f47f45-9770-4ab3-90ef-2be4ac00e96a'}") <= 107


def test_transcriber_batching_settings_are_validated():
    cfg = build_config("local")
    assert cfg.transcriber.batched and cfg.transcriber.min_window_s == 10.0
    with pytest.raises(ValueError):
        build_config("local", overrides=["transcriber.min_window_s=45"])
    with pytest.raises(ValueError):
        build_config("local", overrides=["block_rows=-1"])


def test_config_json_is_a_base_that_flags_and_overrides_still_change():
    import argparse

    from pipeline.cli import _build, build_parser

    parser, _ = build_parser()
    base = build_config("cluster", limit=5).model_dump_json()
    args = parser.parse_args(
        ["run", "--output", "o", "--config-json", base, "--threshold", "4", "--set", "judge.batch_size=7"]
    )
    assert isinstance(args, argparse.Namespace)
    cfg = _build(args)
    assert cfg.profile == "cluster" and cfg.limit == 5  # from the base
    assert cfg.threshold == 4 and cfg.judge.batch_size == 7  # no longer silently ignored


def test_secrets_in_free_form_engine_settings_are_redacted_in_what_we_write():
    cfg = build_config(
        overrides=[
            "judge.engine_env={HF_TOKEN: hf_abc, VLLM_ENABLE_V1_MULTIPROCESSING: '0'}",
            "judge.engine_kwargs={api_key: sk-123, hf_overrides: {auth_header: x, rope: 1}}",
        ]
    )
    public = cfg.public_dict()
    assert public["judge"]["engine_env"] == {"HF_TOKEN": "***", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    assert public["judge"]["engine_kwargs"] == {"api_key": "***", "hf_overrides": {"auth_header": "***", "rope": 1}}
    assert "hf_abc" not in str(public) and "sk-123" not in str(public)
    assert cfg.judge.engine_env["HF_TOKEN"] == "hf_abc"  # the engine itself still gets it


def test_a_bundled_whisper_is_read_in_its_backend_s_form():
    """``--set transcriber.backend=transformers`` alone handed the CTranslate2 folder of the default
    ``bundled:whisper-tiny.en`` to transformers, and the run failed ("Can't load feature extractor")."""
    hf = build_config(overrides=["transcriber.backend=transformers"]).transcriber
    assert (hf.model, hf.multilingual_model) == ("bundled:whisper-tiny.en-hf", "bundled:whisper-base-hf")
    ct2 = build_config(overrides=["transcriber.model=bundled:whisper-base-hf"]).transcriber
    assert ct2.backend == "ctranslate2" and ct2.model == "bundled:whisper-base"
    # A hub id or a path is the user's: left as given, in either backend.
    hub = build_config("cluster", overrides=["transcriber.model=openai/whisper-small"]).transcriber
    assert hub.model == "openai/whisper-small"
    assert (
        build_config(
            overrides=["transcriber.backend=transformers", "transcriber.multilingual_model=null"]
        ).transcriber.multilingual_model
        is None
    )


def test_every_bundled_whisper_form_is_a_bundled_model():
    """The bundled models are listed once (``models.resolve.BUNDLED``): the backends' forms the config maps
    between, and what ``curate prepare-models`` builds, are names from that list."""
    from pipeline.models.resolve import BUNDLED, BUNDLED_PREFIX, WHISPER_FORMS

    for ref in (*WHISPER_FORMS, *WHISPER_FORMS.values()):
        assert ref.startswith(BUNDLED_PREFIX) and ref.removeprefix(BUNDLED_PREFIX) in BUNDLED
    assert build_config().transcriber.model.removeprefix(BUNDLED_PREFIX) in BUNDLED
    assert build_config().judge.model.removeprefix(BUNDLED_PREFIX) in BUNDLED
