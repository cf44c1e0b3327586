"""Real services for integration tests, on 127.0.0.1 only, each stopped by PID by whoever started it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

VENV_BIN = Path(os.sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout} s")


def stop_tree(pid: int, timeout: float = 15) -> None:
    """SIGTERM a process and all its descendants, then SIGKILL what is left."""
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [*root.children(recursive=True), root]
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with suppress(psutil.NoSuchProcess):
            p.kill()


@contextmanager
def prefect_server(log_dir: Path) -> Iterator[str]:
    """A real ``prefect server start`` with its own PREFECT_HOME; yields its API URL."""
    home = Path(tempfile.mkdtemp(prefix="prefect-home-"))
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
    }
    log = open(log_dir / "prefect-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/api/health", 120, proc)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        stop_tree(proc.pid)
        log.close()
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def ray_head(num_cpus: int = 8) -> Iterator[dict[str, str]]:
    """A real ``ray start --head`` on loopback with a private temp dir; yields its addresses.

    ``ray start`` daemonises, so its processes are found by the private temp dir in their command
    line and stopped by PID; ``ray stop`` would kill every Ray on the machine.
    """
    temp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    port, dash = free_port(), free_port()
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--num-cpus={num_cpus}",
        f"--temp-dir={temp}",
        "--disable-usage-stats",
        "--include-dashboard=true",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", 60)
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "temp_dir": temp}
    finally:
        mine = [p for p in psutil.process_iter(["pid", "cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
        for p in mine:
            stop_tree(p.pid, timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def background(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_tree(proc.pid)
        log.close()
