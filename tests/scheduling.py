"""The order ``make test`` hands modules to its xdist workers: longest first, judges apart.

xdist's ``loadscope`` hands out modules with the most tests first, so the one- and two-test engine
modules (a flow on a Ray cluster, a stall timeout, a secrets run: minutes each) went last, and two of
three workers sat idle while the last of them ran.  Longest first (the LPT rule) ends the workers
together.  ``module_seconds.json`` holds each module's seconds from a whole ``make test`` on three
workers; ``CURATE_RECORD_MODULE_SECONDS=1 make test`` writes it again.  A module not in it is placed by
its markers.  Two judge modules are never next to each other, so a worker rarely waits for a judge slot
(tests/conftest.py ``JUDGE_SLOTS``) while a non-judge module could run.
"""

from __future__ import annotations

import json
from pathlib import Path

SECONDS_FILE = Path(__file__).with_name("module_seconds.json")
# A module the file does not know yet, by its markers: about what such modules took.
GUESS = {"judge": 250.0, "slow": 150.0, "process": 20.0}
UNMARKED = 1.0


def guess(markers: set[str]) -> float:
    return max((GUESS[m] for m in markers if m in GUESS), default=UNMARKED)


def module_order(markers: dict[str, set[str]], seconds: dict[str, float]) -> list[str]:
    """Modules (``markers``: module -> its marker names, in collection order) longest first, no two
    ``judge`` modules next to each other while a non-judge one is left to put between them."""
    cost = {m: seconds.get(m, guess(marks)) for m, marks in markers.items()}
    rest = sorted(markers, key=lambda m: -cost[m])  # stable: ties keep collection order
    order: list[str] = []
    while rest:
        last_judge = bool(order) and "judge" in markers[order[-1]]
        pick = next((m for m in rest if not (last_judge and "judge" in markers[m])), rest[0])
        rest.remove(pick)
        order.append(pick)
    return order


def load_seconds(path: Path = SECONDS_FILE) -> dict[str, float]:
    try:
        return {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, AttributeError):
        return {}  # no file or a broken one: the markers alone order the run


def write_seconds(seconds: dict[str, float], path: Path = SECONDS_FILE) -> None:
    ordered = dict(sorted(((m, round(s)) for m, s in seconds.items()), key=lambda kv: (-kv[1], kv[0])))
    path.write_text(json.dumps(ordered, indent=1) + "\n")
