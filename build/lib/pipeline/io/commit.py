"""Output directories that are either committed or not: never half-written and read as done.

A run writes into ``<root>/_staging/<run_id>/``.  Commit then removes the old manifest (the root is
no longer "done"), replaces the data directories with exactly the files the manifest lists, and
writes ``manifest.json`` last.  Readers trust an output root only when its manifest exists and every
file it lists is present (``is_committed``).  A re-run replaces; it never appends.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from pipeline.config import StorageConfig
from pipeline.io.storage import resolve_filesystem
from pipeline.manifest import KINDS, Manifest

MANIFEST = "manifest.json"
STAGING = "_staging"


def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def read_manifest(uri: str, storage: StorageConfig | None = None) -> Manifest | None:
    fs, root = resolve_filesystem(uri, storage)
    path = f"{root}/{MANIFEST}"
    if not _exists(fs, path):
        return None
    with fs.open_input_stream(path) as f:
        return Manifest.from_json(f.read())


def is_committed(uri: str, storage: StorageConfig | None = None, request_key: str | None = None) -> bool:
    """A manifest is there and every file it lists too; with ``request_key``, it also answers that request."""
    fs, root = resolve_filesystem(uri, storage)
    manifest = read_manifest(uri, storage)
    if manifest is None:
        return False
    if request_key is not None and manifest.request_key != request_key:
        return False
    return all(_exists(fs, f"{root}/{f.path}") for f in manifest.files)


def staging_uri(uri: str, run_id: str) -> str:
    return f"{uri.rstrip('/')}/{STAGING}/{run_id}"


class OutputNotWritableError(OSError):
    """The output location cannot be written; raised before any work starts."""


def preflight(uri: str, run_id: str, storage: StorageConfig | None = None) -> None:
    """Write and delete a probe in the staging area, so a bad bucket or path fails in seconds, not after
    hours of transcription."""
    fs, root = resolve_filesystem(uri, storage)
    probe = f"{root}/{STAGING}/{run_id}/.probe"
    try:
        fs.create_dir(f"{root}/{STAGING}/{run_id}", recursive=True)
        with fs.open_output_stream(probe) as out:
            out.write(b"ok")
        fs.delete_file(probe)
    except OSError as exc:
        raise OutputNotWritableError(f"cannot write to output {uri!r}: {exc}") from None


def clear_staging(uri: str, storage: StorageConfig | None = None) -> None:
    """Drop leftovers of crashed attempts; they were never committed, so nothing reads them."""
    fs, root = resolve_filesystem(uri, storage)
    if _exists(fs, f"{root}/{STAGING}"):
        fs.delete_dir(f"{root}/{STAGING}")


def uncommit(uri: str, storage: StorageConfig | None = None) -> None:
    fs, root = resolve_filesystem(uri, storage)
    if _exists(fs, f"{root}/{MANIFEST}"):
        fs.delete_file(f"{root}/{MANIFEST}")


def commit(uri: str, run_id: str, manifest: Manifest, storage: StorageConfig | None = None) -> None:
    fs, root = resolve_filesystem(uri, storage)
    staging = f"{root}/{STAGING}/{run_id}"
    uncommit(uri, storage)
    for kind in KINDS:
        if _exists(fs, f"{root}/{kind}"):
            fs.delete_dir(f"{root}/{kind}")
        fs.create_dir(f"{root}/{kind}", recursive=True)
    for f in manifest.files:
        fs.move(f"{staging}/{f.path}", f"{root}/{f.path}")
    body = manifest.to_json().encode()
    if isinstance(fs, pafs.LocalFileSystem):
        # Rename is atomic on a local disk; an S3 PUT is atomic by itself.
        with fs.open_output_stream(f"{staging}/{MANIFEST}") as out:
            out.write(body)
        fs.move(f"{staging}/{MANIFEST}", f"{root}/{MANIFEST}")
    else:
        with fs.open_output_stream(f"{root}/{MANIFEST}") as out:
            out.write(body)
    # The whole staging area goes: one output root has one writer (deployments enforce it).
    if _exists(fs, f"{root}/{STAGING}"):
        fs.delete_dir(f"{root}/{STAGING}")
