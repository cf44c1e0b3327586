"""One secret planted through every entry point, then looked for everywhere it could leak.

Entry points: the flow process's environment, a Prefect Secret block (``credentials_block``), attempted
overrides (``--set judge.engine_env.HF_TOKEN=…``, a key nested in ``judge.engine_kwargs``, a URL with a
password), and a ``config_file`` that holds a secret (a Prefect profiles file, given by mistake).  The
flow runs as a deployment's flow run would (its own process, a real ``prefect server``), its shard in a
child process whose driver joins a real ``ray start`` head, so the Ray actors are there to inspect.  The
secret must be in no process's command line (sampled all through the run), nothing Prefect's API
returns (flow-run parameters and states, logs, artifacts), no Ray job or actor runtime env, and no file
the run wrote (table, catalog, logs).
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import psutil
import pytest
from prefect import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.utilities.asyncutils import run_coro_as_sync

from tests.flow_process import flow_result, start_flow
from tests.integration.conftest import split_sample
from tests.services import VENV_BIN, ray_head
from tests.table import rows

pytestmark = [pytest.mark.slow, pytest.mark.judge]

SECRET = "planted-Secret-9e4d2c-leak-me-not"


def _cmdlines(seen: set[str], stop: threading.Event) -> None:
    while not stop.is_set():
        for p in psutil.process_iter(["cmdline"]):
            seen.add(" ".join(p.info["cmdline"] or []))
        time.sleep(0.3)


def test_a_planted_secret_is_nowhere_it_could_leak(tmp_path, sample_table, prefect_api):
    src = tmp_path / "in"
    split_sample(sample_table, src, parts=1, rows_each=4)
    out = tmp_path / "out"
    api = prefect_api
    with temporary_settings({PREFECT_API_URL: api}), ray_head() as head:
        from prefect.blocks.system import Secret

        Secret(value={"HF_TOKEN": SECRET}).save("curate-creds", overwrite=True)
        env = {**os.environ, "PREFECT_API_URL": api, "HF_HUB_OFFLINE": "1", "AWS_SECRET_ACCESS_KEY": SECRET}

        # Overrides through the front door are refused before any flow run exists, naming the key only.
        profiles = tmp_path / "profiles.toml"
        profiles.write_text(f'[profiles.default]\nPREFECT_API_KEY = "{SECRET}"\n')
        attempts = {
            "refused judge.engine_env.HF_TOKEN": ["--set", f"judge.engine_env.HF_TOKEN={SECRET}"],
            "refused judge.engine_kwargs.hf_overrides.api_key": [
                "--set", f"judge.engine_kwargs={{hf_overrides: {{api_key: {SECRET}}}}}"
            ],
            "refused storage.s3_endpoint_url (a password in the URL": [
                "--set", f"storage.s3_endpoint_url=http://curate:{SECRET}@127.0.0.1:9000"
            ],
            "invalid config: profiles": ["--config", str(profiles)],
        }  # fmt: skip
        for said, extra in attempts.items():
            refused = subprocess.run(
                [str(VENV_BIN / "curate"), "backfill", "--source-root", str(src), "--output-root", str(out), *extra],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
            assert said in refused.stderr, refused.stderr[-2000:]
            assert SECRET not in refused.stderr + refused.stdout, said

        # The same profiles file as a flow run's config_file (as typed into the UI's custom-run form): the
        # run fails on its config, and its state message and logs name the key, not the value.
        bad_log = tmp_path / "bad-config-flow.log"
        bad = start_flow({"source": str(src), "output_root": str(out), "config_file": str(profiles)}, env, bad_log)
        assert bad.wait(timeout=600) == 0, bad_log.read_text()[-3000:]  # the child ran; its flow run failed
        failed = flow_result(bad_log)
        assert not failed["completed"] and "invalid config: profiles" in failed["message"], failed
        assert "invalid config: profiles" in bad_log.read_text(), bad_log.read_text()[-3000:]

        seen: set[str] = set()
        stop = threading.Event()
        sampler = threading.Thread(target=_cmdlines, args=(seen, stop), daemon=True)
        sampler.start()
        log = tmp_path / "flow.log"
        params = {
            "source": str(src),
            "output_root": str(out),
            "split": "dev",
            "ray_address": head["gcs"],  # the child's driver joins the head: its actors are inspectable
            "credentials_block": "curate-creds",
        }
        proc = start_flow(params, env, log)
        try:
            assert proc.wait(timeout=1500) == 0, log.read_text()[-5000:]
            result = flow_result(log)
            assert result["completed"], result
            from ray.job_submission import JobSubmissionClient
            from ray.util.state import list_actors

            actors = list_actors(address=head["dashboard"], detail=True, limit=1000, raise_on_missing_output=False)
            assert any("vLLMEngineStage" in (a.class_name or "") for a in actors)  # the judge ran on the head
            ray_side = json.dumps([a.serialized_runtime_env for a in actors], default=str)
            ray_side += json.dumps([j.dict() for j in JobSubmissionClient(head["dashboard"]).list_jobs()], default=str)
        finally:
            stop.set()
            sampler.join(timeout=5)

        async def prefect_side(client):
            runs = await client.read_flow_runs()
            logs = await client.read_logs(limit=200)
            offset = len(logs)
            while True:
                page = await client.read_logs(limit=200, offset=offset)
                if not page:
                    break
                logs += page
                offset += len(page)
            arts = await client.read_artifacts()
            tasks = await client.read_task_runs()
            return runs, logs, arts, tasks

        async def call():
            async with get_client() as client:
                return await prefect_side(client)

        runs, logs, arts, tasks = run_coro_as_sync(call())

    assert len(rows(out)) == 4  # the run itself worked
    assert any("pipeline.cli run" in c for c in seen)  # the sampler did see the shard's child
    places = {
        "process command lines": "\n".join(seen),
        "flow-run parameters": json.dumps([r.parameters for r in runs], default=str),
        "flow-run states": json.dumps([[r.state_name, r.state and r.state.message] for r in runs], default=str),
        "task-run inputs": json.dumps([t.task_inputs for t in tasks], default=str),
        "Prefect logs": "\n".join(entry.message for entry in logs),
        "artifacts": json.dumps([[a.data, a.description] for a in arts], default=str),
        "Ray actors and jobs": ray_side,
        "the flow's own output": log.read_text(),
        "the failed flow's output": bad_log.read_text(),
    }
    for path in out.rglob("*"):
        if path.is_file():
            places[str(path.relative_to(out))] = path.read_bytes().decode("latin-1")
    leaked = [where for where, text in places.items() if SECRET in text]
    assert leaked == [], leaked
    # The block was applied (names only in the log): the shard had its credentials.
    assert any("credentials from Secret block 'curate-creds': HF_TOKEN" in entry.message for entry in logs)
