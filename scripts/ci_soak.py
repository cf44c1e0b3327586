"""CI's job, several times in a row, each from a fresh clone, on a machine kept busy on purpose.

Each run clones the repository at one commit into a new folder and runs ``CI=true .ci/run`` there
(install included), while a CPU hog of our own keeps the machine loaded.  After each run it records
the exit status, the wall time, pytest's summary line, the load average it ran under and any process
from that clone still alive after ``.ci/run`` ended (nothing a test starts may outlive the suite;
such leftovers are listed, then stopped).  Results are rewritten after every run, so a killed soak
keeps what it finished.  Standard library only: it runs before any venv exists.

Usage: python3 scripts/ci_soak.py [--runs 3] [--load-procs 1] [--duty 0.5] [--ref HEAD]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"

# Busy for `duty` of every 100 ms: a steady, tunable share of one core per process.
HOG = """
import sys, time
duty = float(sys.argv[1])
while True:
    end = time.perf_counter() + 0.1 * duty
    while time.perf_counter() < end:
        pass
    if duty < 1:
        time.sleep(0.1 * (1 - duty))
"""


class LoadSampler(threading.Thread):
    """The 1-minute load average every 15 s while a run lasts."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(15):
            self.samples.append(os.getloadavg()[0])


def processes_from(folder: Path) -> list[tuple[int, str]]:
    """Live processes whose command line names ``folder`` (its venv's python, Ray's binaries, ...)."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    found = []
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if str(folder) in args and int(pid) != os.getpid():
            found.append((int(pid), args[:200]))
    return found


def one_run(i: int, sha: str, workdir: Path, keep: bool) -> dict:
    clone = workdir / f"ci-soak-{os.getpid()}-{i}"
    log = workdir / f"ci-soak-{os.getpid()}-{i}.log"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", sha], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    env["CI"] = "true"
    sampler = LoadSampler()
    sampler.start()
    t0 = time.monotonic()
    with log.open("w") as fh:
        rc = subprocess.run(["bash", ".ci/run"], cwd=clone, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.monotonic() - t0
    sampler.stop.set()
    text = log.read_text(errors="replace")
    summary = re.findall(r"^=+ (.*(?:passed|failed|error).*) =+$", text, re.M)
    leftovers = processes_from(clone)
    for pid, _ in leftovers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    result = {
        "run": i,
        "commit": sha,
        "rc": rc,
        "wall_s": round(wall, 1),
        "pytest": summary[-1] if summary else None,
        "load_avg_1m": {
            "mean": round(sum(sampler.samples) / len(sampler.samples), 2) if sampler.samples else None,
            "max": max(sampler.samples, default=None),
        },
        "leftover_processes": [a for _, a in leftovers],
        "log": str(log),
    }
    if rc != 0:
        result["log_tail"] = text[-4000:]
    if not keep:
        shutil.rmtree(clone, ignore_errors=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--load-procs", type=int, default=1, help="CPU hog processes beside the suite")
    p.add_argument("--duty", type=float, default=0.5, help="share of each 100 ms a hog process spins")
    p.add_argument("--ref", default="HEAD")
    p.add_argument("--workdir", type=Path, default=Path("/tmp"))
    p.add_argument("--keep", action="store_true", help="keep each clone (each holds a ~6 GB venv)")
    args = p.parse_args()
    sha = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", args.ref], capture_output=True, text=True, check=True
    ).stdout.strip()
    out = RESULTS / f"ci-soak-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "commit": sha,
        "cpus": os.cpu_count(),
        "load": {"procs": args.load_procs, "duty": args.duty},
        "runs": [],
    }
    hogs = [subprocess.Popen([sys.executable, "-c", HOG, str(args.duty)]) for _ in range(args.load_procs)]
    try:
        for i in range(1, args.runs + 1):
            r = one_run(i, sha, args.workdir, args.keep)
            report["runs"].append(r)
            out.write_text(json.dumps(report, indent=2))
            print(json.dumps({k: v for k, v in r.items() if k != "log_tail"}), flush=True)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    # A run that passed but left a process behind still fails the soak.
    passed = sum(r["rc"] == 0 and not r["leftover_processes"] for r in report["runs"])
    print(f"{passed}/{len(report['runs'])} runs passed and left nothing running; results: {out}")
    return 0 if passed == len(report["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
