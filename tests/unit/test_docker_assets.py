"""What can be checked of docker/ without a Docker engine: structure, lint, shared install script."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def test_compose_has_the_full_stack(compose):
    assert {"postgres", "prefect-server", "prefect-worker", "ray-head", "ray-worker", "minio", "register"} <= set(
        compose["services"]
    )


def test_compose_references_existing_files_and_declared_volumes(compose):
    for name, svc in compose["services"].items():
        build = svc.get("build")
        if build:
            context = (DOCKER / build["context"]).resolve()
            assert context == REPO, name
            assert (context / build["dockerfile"]).is_file(), name
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0]
            if source.startswith("./"):  # a bind mount of a file of ours
                assert (DOCKER / source).exists(), (name, source)
            else:
                assert source in compose["volumes"], (name, source)
    register = compose["services"]["register"]
    assert register["entrypoint"][-1] == "deployments.deploy" and (REPO / "deployments" / "deploy.py").is_file()
    sample = register["command"][register["command"].index("--source") + 1]
    assert (REPO / sample.removeprefix("/app/")).is_file()


def test_prefect_server_uses_postgres_and_api_auth(compose):
    env = compose["services"]["prefect-server"]["environment"]
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "PREFECT_SERVER_API_AUTH_STRING" in env
    # Clients (worker, register) send the same auth string.
    assert "PREFECT_API_AUTH_STRING" in compose["services"]["prefect-worker"]["environment"]


def test_prefect_server_keeps_leases_on_a_volume(compose):
    """The settings the tests' own server runs with (``deployments.deploy.SERVER_ENV``: leases on disk, so a
    restart leaves no table lock taken), with PREFECT_HOME, where they are kept, on a named volume."""
    from deployments.deploy import SERVER_ENV

    server = compose["services"]["prefect-server"]
    assert SERVER_ENV.items() <= server["environment"].items()
    home = server["environment"]["PREFECT_HOME"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in server["volumes"]}
    assert any(home.startswith(at) and name in compose["volumes"] for at, name in mounts.items()), (home, mounts)


def test_ports_bind_loopback_only(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


@pytest.mark.process
@pytest.mark.parametrize("dockerfile", ["cpu.Dockerfile", "gpu.Dockerfile"])
def test_dockerfiles_pass_hadolint_and_run_non_root(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(DOCKER / dockerfile)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (DOCKER / dockerfile).read_text()
    assert "USER curate" in text and "HEALTHCHECK" in text
    # The image is built by the same script the README's commands run, so they cannot drift.
    assert "RUN bash scripts/install.sh" in text
    assert "bash scripts/install.sh" in (REPO / "Makefile").read_text()


def test_kuberay_manifest_has_required_fields():
    rc = yaml.safe_load((DOCKER / "k8s" / "raycluster.yaml").read_text())
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster"
    head = rc["spec"]["headGroupSpec"]
    assert head["template"]["spec"]["containers"][0]["image"]
    groups = {g["groupName"]: g for g in rc["spec"]["workerGroupSpecs"]}
    gpu = groups["gpu-l4"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_prefect_k8s_job_template_drives_ray_in_cluster():
    tpl = json.loads((DOCKER / "k8s" / "prefect-work-pool.json").read_text())
    container = tpl["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert "ray start --address=" in container["args"][0] and "{{ command }}" in container["args"][0]
    assert set(tpl["variables"]["properties"]) >= {"image", "namespace", "command"}


def _ray_containers(cluster: dict):
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    workers = [c for g in cluster["spec"]["workerGroupSpecs"] for c in g["template"]["spec"]["containers"]]
    return [*head, *workers]


def test_no_unauthenticated_listener_in_compose(compose):
    """The Jobs API runs code: every Ray process must want a token, and nothing is published beyond loopback."""
    for name, svc in compose["services"].items():
        env = svc.get("environment", {})
        command = " ".join(svc.get("entrypoint", []) + svc.get("command", []))
        if "ray" in command.split()[:1] or name.startswith("ray"):
            assert env.get("RAY_AUTH_MODE") == "token", name
            assert str(env.get("RAY_AUTH_TOKEN", "")).startswith("${RAY_AUTH_TOKEN:?"), name  # required, not a default
        if name == "prefect-server":
            assert "PREFECT_SERVER_API_AUTH_STRING" in env
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
            assert "10001" not in str(port), name


def test_no_unauthenticated_listener_in_kuberay():
    docs = list(yaml.safe_load_all((DOCKER / "k8s" / "raycluster.yaml").read_text()))
    (cluster,) = [d for d in docs if d and d.get("kind") == "RayCluster"]
    for c in _ray_containers(cluster):
        env = {e["name"]: e for e in c.get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", c["name"]
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]["name"], c["name"]  # from a Secret
        assert all(p["containerPort"] != 10001 for p in c.get("ports", [])), c["name"]
    assert cluster["spec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"


def test_the_flow_pod_joins_ray_with_the_token():
    text = (DOCKER / "k8s" / "prefect-work-pool.json").read_text()
    template = json.loads(text)
    pod = json.dumps(template)
    assert '"RAY_AUTH_MODE", "value": "token"' in pod and "audio-curate-ray-token" in pod


def test_the_catalog_has_its_own_database_user_and_no_password_in_its_uri(compose):
    env = compose["services"]["ray-head"]["environment"]  # the head runs the drivers that commit
    uri = env["CURATE_CATALOG_URI"]
    from urllib.parse import urlsplit

    assert uri == "postgresql+psycopg2://curate@postgres:5432/catalog" and urlsplit(uri).password is None
    assert env["PGPASSWORD"].startswith("${CATALOG_DB_PASSWORD:?")  # compose refuses to start without it
    init = (DOCKER / "postgres-init" / "10-catalog.sh").read_text()
    assert "CREATE DATABASE catalog OWNER curate" in init and "CATALOG_DB_PASSWORD" in init


def test_compose_has_no_default_password_and_each_service_only_its_secrets(compose):
    secret = ("PASSWORD", "SECRET", "AUTH_STRING", "TOKEN")
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if any(s in key for s in secret):
                assert ":?" in str(value) and ":-" not in str(value), (name, key, value)  # required, no default
    env = {name: set(svc.get("environment") or {}) for name, svc in compose["services"].items()}
    # MinIO's root keys stay with MinIO and its init step; the app uses its own, bucket-limited user.
    assert {n for n, e in env.items() if "MINIO_ROOT_PASSWORD" in e} == {"minio", "minio-init"}
    assert compose["services"]["ray-worker"]["environment"]["AWS_ACCESS_KEY_ID"] == "curate-app"
    init = (DOCKER / "minio-init" / "minio-init.sh").read_text()
    assert "mc admin user add local curate-app" in init and "arn:aws:s3:::curated/*" in init
    # Ray's processes get nothing of Prefect's; the workers nothing of the catalog's.
    for ray in ("ray-head", "ray-worker"):
        assert not {"PREFECT_API_AUTH_STRING", "PREFECT_API_URL"} & env[ray], ray
    assert not {"PGPASSWORD", "CURATE_CATALOG_URI"} & env["ray-worker"]
    ignore = (REPO / ".dockerignore").read_text().split()
    assert ".env" in ignore and "*.env" in ignore
