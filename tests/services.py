"""Real services for integration tests, on 127.0.0.1 only, each stopped by PID by whoever started it."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil

from deployments.deploy import SERVER_ENV

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
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # e.g. 401 from an auth-enabled server: it is up
                return
            time.sleep(0.5)
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"{url} not up after {timeout} s")


def stop_tree(*pids: int, timeout: float = 15) -> None:
    """SIGTERM processes and all their descendants at once, then SIGKILL what is left."""
    procs = []
    for pid in pids:
        try:
            root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        procs += [*root.children(recursive=True), root]
    for p in procs:
        with suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with suppress(psutil.NoSuchProcess):
            p.kill()


class PrefectServer:
    """A real ``prefect server start`` on 127.0.0.1 with its own PREFECT_HOME (and so its own SQLite
    database), which a test can stop and start again on the same port and database."""

    def __init__(self, log_dir: Path):
        self.home = Path(tempfile.mkdtemp(prefix="prefect-home-"))
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.log_dir = log_dir
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> str:
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_API_URL": self.api,
            # The scheduler looks for runs to create every 5 s instead of 60: a test waits for a night's
            # run to be created by the server itself, not for a loop's period.
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
            **SERVER_ENV,  # as the product's server runs: leases on disk, so a restart frees no slot early or never
        }
        self.starts += 1
        with open(self.log_dir / f"prefect-server-{self.starts}.log", "w") as log:
            self.proc = subprocess.Popen(
                [str(VENV_BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_http(f"{self.api}/health", 120, self.proc)
        return self.api

    def stop(self) -> None:
        if self.proc is not None:
            stop_tree(self.proc.pid)
            self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.home, ignore_errors=True)


@contextmanager
def prefect_server(log_dir: Path) -> Iterator[str]:
    """A real ``prefect server start`` with its own PREFECT_HOME; yields its API URL."""
    server = PrefectServer(log_dir)
    try:
        yield server.start()
    finally:
        server.close()


@contextmanager
def ray_head(
    num_cpus: int = 8, env_extra: dict[str, str] | None = None, temp_dir: str | None = None
) -> Iterator[dict[str, str]]:
    """A real ``ray start --head`` on loopback with a private temp dir; yields its addresses.

    ``ray start`` daemonises, so its processes are found by the private temp dir in their command
    line and stopped by PID; ``ray stop`` would kill every Ray on the machine.
    """
    # Short: Ray's socket paths must fit 107 chars.
    temp = temp_dir or tempfile.mkdtemp(prefix="rt-", dir="/tmp")
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
        # Every agent on its own free port: the defaults (e.g. 52365) may be held by another Ray on
        # this machine, and a head without its job agent never accepts a job.
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}, **(env_extra or {})}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    try:
        wait_http(f"http://127.0.0.1:{dash}/api/version", 60)
        yield {"gcs": f"127.0.0.1:{port}", "dashboard": f"http://127.0.0.1:{dash}", "temp_dir": temp}
    finally:
        mine = [p.pid for p in psutil.process_iter(["pid", "cmdline"]) if temp in " ".join(p.info["cmdline"] or [])]
        stop_tree(*mine, timeout=10)
        shutil.rmtree(temp, ignore_errors=True)


def _raylets(temp_dir: str) -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["pid", "name", "cmdline"])
        if "raylet" in (p.info["name"] or "") and temp_dir in " ".join(p.info["cmdline"] or [])
    }


@contextmanager
def ray_node(head: dict[str, str], num_cpus: int = 2, resources: dict[str, float] | None = None) -> Iterator[dict]:
    """A second Ray node on this machine (``ray start --address``), joined to ``head``.

    Yields its raylet's PID, found as the raylet that appeared with it, so a test can kill exactly
    this node.  On exit its processes are stopped by PID (the head's fixture stops any leftovers).
    """
    import json

    before = _raylets(head["temp_dir"])
    cmd = [
        str(VENV_BIN / "ray"),
        "start",
        f"--address={head['gcs']}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
        f"--resources={json.dumps(resources or {})}",
        "--disable-usage-stats",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
    ]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=120)
    deadline = time.time() + 30
    while not (new := _raylets(head["temp_dir"]) - before) and time.time() < deadline:
        time.sleep(0.5)
    if len(new) != 1:
        raise RuntimeError(f"expected one new raylet for the joined node, found {sorted(new)}")
    (raylet,) = new
    try:
        yield {"raylet_pid": raylet}
    finally:
        with suppress(psutil.NoSuchProcess):
            # The node's agents and workers are the raylet's children; stop them with it.
            stop_tree(raylet, timeout=10)


@contextmanager
def background(cmd: list[str], env: dict[str, str], log_path: Path) -> Iterator[subprocess.Popen]:
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_tree(proc.pid)
        log.close()


@contextmanager
def moto_s3(log_dir: Path) -> Iterator[str]:
    """moto's S3 server mode on 127.0.0.1; yields its endpoint URL."""
    port = free_port()
    log = open(log_dir / "moto.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/moto-api/", 60, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_tree(proc.pid)
        log.close()


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 that can be cut (every connection reset, new ones too) and restored.

    It stands between a client and a real server to make a real network outage, which the client
    must retry through.  The port stays bound through an outage: closed, it could be taken meanwhile
    (as another socket's ephemeral port, or by a retrying client's TCP self-connect), and the restore
    would fail with "address already in use", leaving the outage permanent.
    """

    def __init__(self, target_port: int):
        import threading

        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self.up = threading.Event()
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        self.listener: socket.socket | None = None
        self.cuts = 0
        # Connections a client opened during an outage and got reset: proof a request hit the cut.
        self.refused_during_cut = 0

    def start(self) -> FlakyProxy:
        import threading

        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(64)
        self.up.set()
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        import threading

        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed by stop()
                return
            if not self.up.is_set():
                self.refused_during_cut += 1
                self._reset(client)
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _reset(s: socket.socket) -> None:
        # Linger 0: close() sends RST, as a dropped network path looks to the client.
        with suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()

    def cut(self) -> None:
        self.cuts += 1
        self.up.clear()
        with self.lock:
            # Connections open at the cut count only if a request was in flight on them; those are
            # counted by the client's retries reaching refused_during_cut.
            for s in self.conns:
                self._reset(s)
            self.conns.clear()

    def restore(self) -> None:
        self.up.set()

    def stop(self) -> None:
        self.cut()
        if self.listener:
            self.listener.close()


def pg_bin(name: str) -> str | None:
    """A PostgreSQL server binary: Debian keeps them under /usr/lib/postgresql/<version>/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else shutil.which(name)


@contextmanager
def postgres(user: str = "curate", password: str = "pg-Secret-5e1d", database: str = "catalog") -> Iterator[dict]:
    """A real PostgreSQL (Debian's ``postgresql``) on 127.0.0.1, its own cluster in a temp dir, with a
    password-authenticated role owning ``database``; yields host, port, user, password, database.

    initdb refuses to run as root, so as root the cluster runs as the package's ``postgres`` user.
    Stopped with ``pg_ctl stop``, then by PID if anything is left.
    """
    initdb, pg_ctl, psql = pg_bin("initdb"), pg_bin("pg_ctl"), shutil.which("psql")
    if not (initdb and pg_ctl and psql):
        raise FileNotFoundError("PostgreSQL is not installed (scripts/install.sh installs Debian's postgresql as root)")
    data = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
    as_user: list[str] = []
    if os.getuid() == 0:
        import pwd

        pw = pwd.getpwnam("postgres")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    admin = "pgadmin"
    subprocess.run(
        [*as_user, initdb, "-D", str(data), "-U", admin, "--auth-local=trust", "--auth-host=scram-sha-256"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-o", opts, "-l", str(data / "server.log"), "-w", "start"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        sql = f"CREATE ROLE {user} LOGIN PASSWORD '{password}'; CREATE DATABASE {database} OWNER {user};"
        for stmt in sql.split("; "):
            subprocess.run(
                [psql, "-h", str(data), "-p", str(port), "-U", admin, "-d", "postgres", "-c", stmt.rstrip(";")],
                check=True,
                capture_output=True,
                timeout=60,
            )
        yield {"host": "127.0.0.1", "port": port, "user": user, "password": password, "database": database}
    finally:
        with suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60
            )
        pid_file = data / "postmaster.pid"
        if pid_file.exists():
            stop_tree(int(pid_file.read_text().split()[0]))
        shutil.rmtree(data, ignore_errors=True)


class WebhookReceiver:
    """An HTTP server on 127.0.0.1 that records what is POSTed to it: a real endpoint for a real
    Prefect automation's webhook to reach."""

    def __init__(self):
        import http.server
        import json
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    received.append(json.loads(body))
                except ValueError:
                    received.append({"raw": body.decode(errors="replace")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, predicate, timeout: float) -> dict | None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for item in list(self.received):
                if predicate(item):
                    return item
            time.sleep(1)
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
