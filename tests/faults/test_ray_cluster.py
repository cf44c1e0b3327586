"""The flow on a real multi-process Ray cluster on 127.0.0.1: prefect-ray's ``auto`` path, and losing
the node that runs Whisper mid-run.

Each flow runs in its own process (as a deployment's flow run would), beside a ``ray start --head`` and
a second node joined with ``ray start --address``.  One clean run is both the auto path's subject and
the node-loss test's reference (one flow run less than a run each).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from ray.util.state import list_actors, list_nodes, list_tasks

from tests.conftest import NO_JUDGE, NO_JUDGE_ARGS, REPO
from tests.flow_process import flow_result, start_flow
from tests.integration.conftest import split_sample
from tests.rows import same_rows
from tests.services import ray_head, ray_node
from tests.table import rows, summaries

pytestmark = pytest.mark.slow


def _flow_env(head: dict[str, str], api: str) -> dict[str, str]:
    # RAY_ADDRESS: what `ray start` leaves for processes on a cluster node, and what "auto" finds.  The
    # session's Prefect server: a flow's result reads its own task runs (tests/flow_process.py).
    return {**os.environ, "RAY_ADDRESS": head["gcs"], "PREFECT_API_URL": api, "HF_HUB_OFFLINE": "1"}


def _rows(out: Path, kind: str) -> dict[str, dict]:
    """The table's scored ("scores") or quarantined ("quarantine") rows, by id (each id once)."""
    got = rows(out)
    return {rid: r for rid, r in got.items() if (r["error"] is None) == (kind == "scores")}


# Two nodes: the head, and a node that alone offers the ``whisper`` resource the transcriber asks for.
# The Whisper node has no CPUs for anything else, so killing it hits only Whisper.
OVERRIDES = [NO_JUDGE, "transcriber.resources={whisper: 1}", "transcriber.num_cpus_per_actor=0", "stall_timeout_s=180"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, sample_table, prefect_api):
    """A token-auth ``ray start --head`` and a Whisper node joined to it, and one clean flow run of 40
    clips with ``ray_address="auto"``: the auto path's subject, and the node-loss test's reference."""
    tmp = tmp_path_factory.mktemp("cluster")
    src = tmp / "in"
    split_sample(sample_table, src, parts=1, rows_each=40)
    common = {"source": str(src), "split": "dev", "ray_address": "auto", "config_overrides": OVERRIDES}
    assert os.environ.get("RAY_AUTH_MODE") == "token"  # set for the whole suite (tests/conftest.py)
    with ray_head(num_cpus=6) as head, ray_node(head, num_cpus=0, resources={"whisper": 1}) as whisper_node:
        (node_id,) = [
            n.node_id
            for n in list_nodes(address=head["dashboard"])
            if n.state == "ALIVE" and "whisper" in (n.resources_total or {})
        ]
        clean_log = tmp / "clean.log"
        clean = start_flow({**common, "output_root": str(tmp / "clean")}, _flow_env(head, prefect_api), clean_log)
        assert clean.wait(timeout=1200) == 0, clean_log.read_text()[-6000:]
        result = flow_result(clean_log)
        assert result["completed"], result
        yield {
            "head": head, "whisper_node": whisper_node, "node_id": node_id, "common": common,
            "clean": tmp / "clean", "ids": sample_table.column("id").to_pylist()[:40],
        }  # fmt: skip


def test_auto_path_runs_shards_through_prefect_rays_task_runner(cluster):
    """``ray_address="auto"``: the flow beside the head hands its shards to prefect-ray's
    RayTaskRunner; each shard runs inside the cluster and commits every clip."""
    # The shard ran as a Ray task of this cluster (prefect-ray's), not in the flow's process.
    names = {t.name for t in list_tasks(address=cluster["head"]["dashboard"], limit=10_000)}
    assert "curate_shard" in names, sorted(names)
    assert any("FasterWhisperTranscriber" in n for n in names), sorted(names)
    assert sorted(rows(cluster["clean"])) == sorted(cluster["ids"])


def _whisper_actor_on(dashboard: str, node_id: str, skip: set[str]):
    for a in list_actors(address=dashboard, limit=1000, detail=True):
        if (
            "FasterWhisperTranscriber" in (a.class_name or "")
            and a.state == "ALIVE"
            and a.node_id == node_id
            and a.actor_id not in skip
        ):
            return a
    return None


def test_losing_the_whisper_node_mid_run_gives_a_clean_runs_rows(tmp_path, cluster, prefect_api):
    """Mid-run the Whisper node's raylet is SIGKILLed (by PID); a replacement node joins 10 s later, as
    KubeRay or an autoscaler would bring one.  Output must equal the clean run's, row for row."""
    head, node_id = cluster["head"], cluster["node_id"]
    clean_actors = {a.actor_id for a in list_actors(address=head["dashboard"], limit=1000)}
    log = tmp_path / "faulty.log"
    faulty_out = tmp_path / "faulty"
    proc = start_flow({**cluster["common"], "output_root": str(faulty_out)}, _flow_env(head, prefect_api), log)
    deadline = time.time() + 600
    while (actor := _whisper_actor_on(head["dashboard"], node_id, clean_actors)) is None:
        assert proc.poll() is None, log.read_text()[-6000:]
        assert time.time() < deadline, "Whisper never started on its node"
        time.sleep(0.5)
    # Whisper has its model loaded and the first batches; 40 clips keep it busy well past this.
    time.sleep(1)
    assert not (faulty_out / "catalog.db").exists() or not summaries(faulty_out), "the run ended before the kill"
    os.kill(cluster["whisper_node"]["raylet_pid"], signal.SIGKILL)
    time.sleep(10)
    with ray_node(head, num_cpus=0, resources={"whisper": 1}):
        assert proc.wait(timeout=1200) == 0, log.read_text()[-6000:]
        (after,) = list_actors(address=head["dashboard"], filters=[("actor_id", "=", actor.actor_id)], detail=True)
    result = flow_result(log)
    assert result["completed"], result
    # Which way it recovered: Ray restarting the actor on the new node inside the same attempt
    # (one attempt), or the shard failing and Prefect's retry producing the output (more).
    print("shard attempts after losing the Whisper node:", result["attempts"])
    print("the Whisper actor's restarts:", after.num_restarts, "node changed:", after.node_id != node_id)
    assert len(result["attempts"]) == 1
    if list(result["attempts"].values()) == [1]:
        assert after.num_restarts >= 1 and after.node_id != node_id
    same_rows(_rows(faulty_out, "scores"), _rows(cluster["clean"], "scores"))
    same_rows(_rows(faulty_out, "quarantine"), _rows(cluster["clean"], "quarantine"))


def test_an_embedded_run_starts_its_own_ray_beside_a_ray_start_cluster(tmp_path, sample_table):
    """`ray start` leaves its address in Ray's temp dir, where a plain ``ray.init()`` finds and joins
    it.  The embedded default (no ray_address) must start a Ray of its own, not borrow that one."""
    (path,) = split_sample(sample_table, tmp_path / "in", parts=1, rows_each=2)
    base = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
    try:
        # Ray's default temp dir is $RAY_TMPDIR/ray: a head there is the machine's "current" cluster.
        with ray_head(num_cpus=2, temp_dir=f"{base}/ray") as head:
            assert (Path(base) / "ray" / "ray_current_cluster").exists()
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
            env["RAY_TMPDIR"] = base
            cmd = [sys.executable, "-m", "pipeline.cli", "run", "--input", str(path), "--output", str(tmp_path / "out"),
                   *NO_JUDGE_ARGS]  # fmt: skip
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
            # The cluster ran none of it.
            assert list_actors(address=head["dashboard"], limit=100) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert len(rows(tmp_path / "out")) == 2
