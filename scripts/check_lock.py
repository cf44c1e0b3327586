"""Check a venv's installed packages against ``constraints.txt``, the lock of the resolved set.

Every installed distribution (but the project itself) must be in the lock at the locked version: a
new upstream release, or a new dependency nobody locked, fails the install here instead of silently
changing what runs at night.  An image that installs fewer extras (no dev tools) installs a subset.

    python scripts/check_lock.py [constraints.txt]
"""

from __future__ import annotations

import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

PROJECT = "audio-curate"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    locked = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep:
            raise SystemExit(f"{path}: {raw!r} is not NAME==VERSION")
        locked[canonical(name)] = version.strip()
    return locked


def installed() -> dict[str, str]:
    """What the venv's site-packages hold.  Not ``sys.path`` at large: once setuptools is imported (torch's
    inductor does, to compile) it appends its ``_vendor`` folder, whose private copies are not installs."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    dists = metadata.distributions(path=paths)
    return {canonical(d.metadata["Name"]): d.version for d in dists if d.metadata["Name"]}


def differences(locked: dict[str, str], have: dict[str, str]) -> list[str]:
    out = []
    for name, version in sorted(have.items()):
        if name in (canonical(PROJECT), "pip", "setuptools", "wheel"):
            continue
        if name not in locked:
            out.append(f"{name}=={version} is installed but not in the lock")
        elif locked[name] != version:
            out.append(f"{name}=={version} is installed, the lock says {locked[name]}")
    return out


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else Path(__file__).resolve().parents[1] / "constraints.txt"
    problems = differences(read_lock(path), installed())
    if problems:
        print(f"install: the resolved set differs from {path}:", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        print("  (to take new versions on purpose: bash scripts/lock.sh, then test and commit)", file=sys.stderr)
        return 1
    print(f"install: every installed package matches {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
