"""Filesystems for local paths and ``s3://`` URIs, and deterministic input listing."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

import pyarrow.fs as pafs

from pipeline.config import StorageConfig

_GLOB_CHARS = set("*?[")


def glob_regex(pattern: str) -> re.Pattern[str]:
    """Shell-style glob where ``*``/``?`` stay inside one path segment and ``**`` spans segments."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def s3_retry() -> pafs.S3RetryStrategy:
    """Bounded S3 retries (exponential, capped at 20 s): an outage of a few seconds is survived, a dead
    store fails in about a minute with the store's own error.  pyiceberg's FileIO builds its own S3
    client and takes this by name (``s3.retry-strategy-impl``), so data files get the same."""
    return pafs.AwsStandardS3RetryStrategy(max_attempts=12)


@functools.lru_cache(maxsize=8)
def _s3(anonymous: bool, endpoint: str | None, region: str | None, creds: tuple) -> pafs.S3FileSystem:
    """One S3 filesystem per process and settings: every helper of a run shares it (and its connection
    pool) instead of building its own.  pyarrow reads the credentials (``creds``, the key's part) from
    the environment itself."""
    kwargs: dict = {"anonymous": anonymous, "region": region}
    if endpoint:
        ep = urlparse(endpoint)
        kwargs.update(endpoint_override=ep.netloc or ep.path, scheme=ep.scheme or "https")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    kwargs["retry_strategy"] = s3_retry()
    return pafs.S3FileSystem(**kwargs)


def resolve_filesystem(uri: str, storage: StorageConfig | None = None) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for ``uri``.  S3 credentials come from the environment only."""
    storage = storage or StorageConfig()
    if uri.startswith("s3://"):
        parsed = urlparse(uri)
        anonymous = parsed.username == "anonymous"
        bucket = parsed.hostname or ""
        path = f"{bucket}{parsed.path}".rstrip("/")
        endpoint = storage.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        # The credentials are part of the key: rotated in the environment (a Secret block applied in a
        # long-lived worker), they make a new filesystem rather than reuse one holding the old ones.
        creds = tuple(os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"))
        return _s3(anonymous, endpoint, storage.s3_region or os.environ.get("AWS_REGION"), creds), path
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        # Arrow would take gs:// or hdfs:// too, but nothing else here speaks them (paths are rebuilt as S3's),
        # and gs:// without a route to Google waited minutes in silence.
        raise ValueError(
            f"{uri}: only local paths and s3:// are read or written (Google Cloud Storage through its S3 interface: "
            "--set storage.s3_endpoint_url=https://storage.googleapis.com; a web address: download it first)"
        )
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def to_uri(uri_like: str, path: str) -> str:
    """Rebuild a URI for ``path`` on the same filesystem as ``uri_like``."""
    return f"s3://{path}" if uri_like.startswith("s3://") else path


@dataclass(frozen=True)
class Location:
    """A URI resolved once (``locate``): its filesystem and the path inside it.  The I/O helpers take
    this and never resolve again; ``at`` names another path on the same filesystem."""

    uri: str
    fs: pafs.FileSystem = field(compare=False, repr=False)
    path: str = field(compare=False, repr=False)

    def at(self, path: str) -> Location:
        return Location(to_uri(self.uri, path), self.fs, path)

    @property
    def globbed(self) -> bool:
        return any(c in self.path for c in _GLOB_CHARS)


def locate(uri: str, storage: StorageConfig | None = None) -> Location:
    fs, path = resolve_filesystem(uri, storage)
    return Location(uri, fs, path)


def _iceberg_data(infos: list[pafs.FileInfo]) -> list[str]:
    """The folders holding an Iceberg table's data files (``T/data/`` beside ``T/metadata/*.metadata.json``)
    among ``infos``: a table's files are not inputs (they hold replaced rows too), and a table root kept
    inside an input folder would be read as one on the next night."""
    metadata = [os.path.dirname(i.path) for i in infos if i.path.endswith(".metadata.json")]
    return sorted({f"{os.path.dirname(m)}/data/" for m in metadata if os.path.basename(m) == "metadata"})


def list_parquet_files(where: Location, notes: list[str] | None = None) -> list[Location]:
    """Every Parquet file a source names (a file, a directory, or a glob), sorted, but an Iceberg table's
    (said in ``notes``).

    Sorting makes shard planning deterministic: the same input always gives the same shards.
    """
    fs, path = where.fs, where.path
    infos: list[pafs.FileInfo] = []
    if where.globbed:
        base = path
        while any(c in base for c in _GLOB_CHARS):
            base = os.path.dirname(base)
        rx = glob_regex(path)
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        found = [i.path for i in infos if i.type == pafs.FileType.File and rx.match(i.path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            found = [path]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            found = [
                i.path
                for i in infos
                if i.type == pafs.FileType.File
                and i.path.endswith(".parquet")
                and not any(part.startswith(("_", ".")) for part in os.path.relpath(i.path, path).split("/"))
            ]
        else:
            raise FileNotFoundError(f"input {where.uri!r} does not exist")
    tables = _iceberg_data(infos)
    kept = [p for p in found if not p.startswith(tuple(tables))]
    if len(kept) < len(found) and notes is not None:
        left = ", ".join(t.removesuffix("/data/") for t in tables)
        notes.append(f"{where.uri}: left out {len(found) - len(kept)} data file(s) of Iceberg tables there ({left})")
    found = kept
    if not found:
        raise FileNotFoundError(f"no Parquet files under {where.uri!r}")
    return [where.at(p) for p in sorted(found)]
