"""``make demo``'s curation, timed: this checkout against another commit, interleaved run by run.

    .venv/bin/python -m bench.demo_wall --against HEAD~1 [--reps 2]

Each repetition runs ``curate run --output <fresh dir>`` on the bundled sample (what ``make demo``
runs after the install) once per checkout, alternating, so drift on a noisy machine hits both alike.
The other commit is checked out into a temporary git worktree and run with this venv.  Results go to
``bench/results/demo-wall-<utc>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def run_once(checkout: Path, out: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(checkout)}
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--output", str(out)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    wall = time.perf_counter() - t0
    kept = next((ln.split()[1] for ln in proc.stdout.splitlines() if ln.strip().startswith("kept ")), None)
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 1),
        "kept": kept,
        "tail": proc.stderr[-500:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", default="HEAD~1")
    p.add_argument("--reps", type=int, default=2)
    a = p.parse_args(argv)
    commit = subprocess.run(["git", "rev-parse", "--short", a.against], cwd=REPO, capture_output=True, text=True)
    other_sha = commit.stdout.strip()
    this_sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(other), other_sha], cwd=REPO, check=True, capture_output=True
        )
        try:
            for rep in range(a.reps):
                for name, checkout in (("other", other), ("this", REPO)):
                    r = run_once(checkout, Path(tmp) / f"out-{name}-{rep}")
                    runs[name].append(r)
                    print(name, r["wall_s"], "s", "kept", r["kept"], "rc", r["rc"], flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, capture_output=True)
    summary = {
        name: {"median_wall_s": statistics.median(r["wall_s"] for r in rs), "runs": rs} for name, rs in runs.items()
    }
    ratio = summary["this"]["median_wall_s"] / summary["other"]["median_wall_s"]
    out = {
        "when": datetime.now(UTC).isoformat(),
        "this": f"{this_sha} + working tree",
        "other": other_sha,
        "ratio_this_over_other": round(ratio, 3),
        **summary,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"demo-wall-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(out, indent=2))
    print(
        f"this {summary['this']['median_wall_s']} s vs {other_sha} {summary['other']['median_wall_s']} s: {ratio:.3f}x"
    )
    print(path)


if __name__ == "__main__":
    main()
