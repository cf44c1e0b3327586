"""Common Voice release names: what they say, and their order (pure)."""

from __future__ import annotations

import re

_RELEASE = r"cv-corpus-(?P<version>\d+(?:\.\d+)*)-(?P<delta>delta-)?(?P<date>\d{4}-\d{2}-\d{2})"
_RELEASE_RE = re.compile(f"^{_RELEASE}$")
# A release's per-locale tarball: cv-corpus-23.0-2025-09-05-en.tar.gz (or .tgz, .tar).
_TARBALL_RE = re.compile(f"^(?P<release>{_RELEASE})-(?P<locale>[A-Za-z0-9-]+)\\.(?:tar\\.gz|tgz|tar)$")


def is_release_name(name: str) -> bool:
    return _RELEASE_RE.match(name) is not None


def parse_release(name: str) -> tuple[tuple[int, ...], bool, str] | None:
    """(version, is delta, date) of ``cv-corpus-23.0-2025-09-05``, else None."""
    m = _RELEASE_RE.match(name)
    if not m:
        return None
    return tuple(int(x) for x in m["version"].split(".")), bool(m["delta"]), m["date"]


def is_delta(name: str | None) -> bool:
    """Whether ``name`` is a delta release (only the clips added since the full release before it)."""
    parsed = parse_release(name) if name else None
    return bool(parsed and parsed[1])


def parse_tarball_name(uri: str) -> tuple[str, str] | None:
    """(release, locale) of a release tarball's name (or a path or URI ending in it), else None."""
    m = _TARBALL_RE.match(uri.rstrip("/").rsplit("/", 1)[-1])
    return (m["release"], m["locale"]) if m else None


def release_key(release: str | None) -> tuple:
    """Order of releases: by version, a delta before the full release of its version, then by date."""
    parsed = parse_release(release) if release else None
    if parsed is None:
        return ((), 0, "")
    version, delta, date = parsed
    return (version, 0 if delta else 1, date)


def rank_table(names):
    """Arrow table (release, rank) of ``names``: the dense rank of each one's ``release_key``, so SQL can
    order releases.  Rank 0 is the key of an unknown name (and of none at all)."""
    import pyarrow as pa

    names = sorted({n for n in names if n is not None})
    dense = {k: i for i, k in enumerate(sorted({release_key(n) for n in names} | {release_key(None)}))}
    return pa.table(
        {"release": pa.array(names, pa.string()), "rank": pa.array([dense[release_key(n)] for n in names], pa.int32())}
    )
