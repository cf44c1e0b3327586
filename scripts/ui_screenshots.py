"""Screenshots of what a team sees in the Prefect UI after two nights, into docs/ui/.

    .venv/bin/python scripts/ui_screenshots.py [--out docs/ui]

Starts a real ``prefect server`` on 127.0.0.1 (its own PREFECT_HOME), applies the deployments, runs a
worker, and runs two nights of the nightly deployment on the bundled sample: a first night (10 clips
through the engines) and a second with a stricter threshold (decided again from the stored scores, no
engine).  Then headless Chromium (Debian's ``chromium``) captures the runs list, the nightly
deployment's Upcoming tab, its custom-run form, and the trend, rejected-rows and histogram
artifacts.  Everything it starts is stopped by PID.  About 4 minutes here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from deployments.deploy import SERVER_ENV

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(url)


def api(base: str, path: str, body: dict | None = None) -> object:
    req = urllib.request.Request(
        f"{base}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"null")


def wait_final(base: str, run_id: str, timeout: float) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = api(base, f"/flow_runs/{run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(3)
    raise TimeoutError(run_id)


def shoot(chromium: str, url: str, path: Path, profile: Path, height: int = 1000) -> None:
    subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size=1600,{height}",
            "--virtual-time-budget=15000",
            f"--screenshot={path}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    print("wrote", path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "docs" / "ui")
    a = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        raise SystemExit("needs Debian's chromium: apt-get install chromium")
    a.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ui-shots-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(work / "home"),
        "PREFECT_API_URL": base,
        "PREFECT_UI_API_URL": base,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        **SERVER_ENV,  # the server as the product runs it
        "HF_HUB_OFFLINE": "1",
    }
    procs: list[subprocess.Popen] = []
    try:
        log = open(work / "server.log", "w")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_http(f"{base}/health", 120)
        out = work / "curated"
        subprocess.run(
            [sys.executable, "-m", "deployments.deploy", "--output-root", str(out), "--limit", "10"],
            env=env,
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        wlog = open(work / "worker.log", "w")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [str(BIN / "prefect"), "worker", "start", "--pool", "audio-curation"],
                env=env,
                stdout=wlog,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        dep = api(base, "/deployments/name/curate-common-voice/nightly")
        for params in ({}, {"threshold": 4.0}):
            run = api(base, f"/deployments/{dep['id']}/create_flow_run", {"parameters": params})
            final = wait_final(base, run["id"], 1200)
            print(final["name"], final["state"]["type"], final["state"]["message"])
        time.sleep(5)  # the last logs and artifacts land
        ui = f"http://127.0.0.1:{port}"
        shoot(chromium, f"{ui}/runs", a.out / "runs.png", work / "chrome")
        shoot(
            chromium, f"{ui}/deployments/deployment/{dep['id']}?tab=Upcoming", a.out / "upcoming.png", work / "chrome"
        )
        # The custom-run form: the flow's parameters as a person sets them (profile, config_file, overrides).
        shoot(chromium, f"{ui}/deployments/deployment/{dep['id']}/run", a.out / "custom-run.png", work / "chrome", 1600)
        arts = api(base, "/artifacts/filter", {"sort": "CREATED_DESC", "limit": 50})
        latest = {}
        for art in arts:
            latest.setdefault(art["key"], art)
        for key, name, height in (
            ("common-voice-validated-trend", "trend.png", 800),
            ("common-voice-validated-rejected", "rejected.png", 1100),
            ("common-voice-validated-histogram", "histogram.png", 2200),
            ("common-voice-validated-summary", "summary.png", 1300),
        ):
            shoot(chromium, f"{ui}/artifacts/artifact/{latest[key]['id']}", a.out / name, work / "chrome", height)
        shoot(chromium, f"{ui}/artifacts", a.out / "artifacts.png", work / "chrome")
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                os.killpg(proc.pid, 9)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
