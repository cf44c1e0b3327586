"""A release's files as they are stored: a tarball's members (streamed, bounded) or an extracted folder's,
and the TSVs of either, each checked against its size limit before it is read."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from collections.abc import Callable, Container, Iterator
from typing import IO

import pyarrow as pa
import pyarrow.fs as pafs

from pipeline.commonvoice.reader import children, iter_tsv
from pipeline.commonvoice.releases import is_release_name
from pipeline.io.clip_files import outside, read_bounded, too_large
from pipeline.io.schema import InputSchemaError
from pipeline.runtime.storage import Location

GZIP_MAGIC = b"\x1f\x8b"


def open_tarball(where: Location) -> tuple[tarfile.TarFile, IO[bytes]]:
    """A tarball opened as a *stream* (``r|*``): members in order, nothing seeks, nothing is extracted.

    Works the same for a local file and an S3 object; memory holds one member at a time.  Whether it is
    compressed is told by its first bytes, never its name: Arrow inflates a file named ``.gz`` by itself,
    so a plain tar under that name (a browser that unpacked the download) failed mid-run with "zlib
    inflate failed".  Gzip is inflated by Arrow (C, off the GIL); anything else ``r|*`` tells itself.
    """
    try:
        with where.fs.open_input_stream(where.path, compression=None) as head:
            gzipped = head.read(len(GZIP_MAGIC)) == GZIP_MAGIC
        raw = where.fs.open_input_stream(where.path, compression="gzip" if gzipped else None)
    except OSError as exc:
        raise InputSchemaError(f"{where.uri}: cannot be read: {exc}") from None
    try:
        return tarfile.open(fileobj=raw, mode="r|*"), raw
    except (tarfile.TarError, OSError, EOFError) as exc:
        raw.close()
        raise InputSchemaError(f"{where.uri}: not a readable tar archive: {exc}") from None


def _member_parts(name: str) -> tuple[str, str, str] | None:
    """(release dir, locale, rest) of ``cv-corpus-…/<locale>/<rest>``, tolerating a leading ``./``."""
    parts = name.lstrip("./").split("/")
    if len(parts) < 3:
        return None
    return parts[0], parts[1], "/".join(parts[2:])


# A release's folders are its first members: a tarball that is not one is not read to its end to find out.
IDENTITY_MEMBERS = 64


def tarball_identity(where: Location) -> tuple[str, str]:
    """(release, locale) of a tarball whatever its name (a browser's "… (1).tar.gz", an API's own name), from
    its first members; ``InputSchemaError`` when they are not a release's."""
    tar, raw = open_tarball(where)
    try:
        for i, member in enumerate(tar):
            parts = _member_parts(member.name)
            if parts and is_release_name(parts[0]):
                return parts[0], parts[1]
            if member.name.lstrip("./").startswith("sps-corpus-"):
                raise InputSchemaError(
                    f"{where.uri}: a Common Voice Spontaneous Speech release ({member.name.split('/')[0]}): its "
                    "answers have no prompted sentence to agree with; curate reads Scripted Speech (cv-corpus-…)"
                )
            if i + 1 >= IDENTITY_MEMBERS:
                break
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputSchemaError(f"{where.uri}: not a readable tar archive: {exc}") from None
    finally:
        tar.close()
        raw.close()
    raise InputSchemaError(
        f"{where.uri}: no cv-corpus-<version>-<date>/<locale>/ folder inside; not a Common Voice release"
    )


class _Bounded(io.RawIOBase):
    """A stream that refuses to give more than ``limit`` bytes: a TSV whose size lied (a link to
    ``/dev/zero``, a growing file) stops the run with a clear error instead of filling the disk."""

    def __init__(self, raw, limit: int, name: str):
        self.raw, self.left, self.limit, self.name = raw, limit, limit, name

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = self.raw.read(min(len(buf), self.left + 1))
        if len(data) > self.left:
            raise InputSchemaError(f"{self.name}: over reader.max_tsv_bytes={self.limit} bytes; not a clip list")
        self.left -= len(data)
        buf[: len(data)] = data
        return len(data)


def _too_big(name: str, size: int, limit: int) -> InputSchemaError:
    return InputSchemaError(f"{name}: {size} bytes, over reader.max_tsv_bytes={limit}; not read")


def _tarball_tsv(tar: tarfile.TarFile, member: tarfile.TarInfo, uri: str, limit: int) -> Iterator[pa.Table]:
    name = f"{uri}:{member.name}"
    try:
        yield from iter_tsv(_Bounded(tar.extractfile(member), limit, name), name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputSchemaError(f"{uri}: broken tar archive: {exc}") from None


def _folder_tsv_file(where: Location, info: pafs.FileInfo, limit: int) -> Iterator[pa.Table]:
    name = f"{where.uri}/{info.base_name}"
    with where.fs.open_input_stream(info.path) as f:
        yield from iter_tsv(_Bounded(f, limit, name), name)


def release_tsvs(
    where: Location, form: str, limit: int = 8 << 30, members: Callable[[str], None] | None = None
) -> Iterator[tuple[str, Iterator[pa.Table]]]:
    """(stem, its tables) for every top-level TSV of a release's locale folder, each read as it comes.

    A tarball is read in one streaming pass to its end, so a TSV stored after ``clips/`` (or between
    clips) is read like one stored first; each table must be taken before the next TSV is asked for.
    ``members`` is told the name of every ``clips/`` member on the way: once the pass ends, those are the
    tarball's clips, and a clip the lists name that is not among them is absent.
    A TSV is read only if it is a regular file inside the release (never a link leading out of it) and
    at most ``limit`` bytes, by its size and by what is actually read.
    """
    uri = where.uri
    if form == "tarball":
        tar, raw = open_tarball(where)
        try:
            for member in tar:
                parts = _member_parts(member.name)
                if members is not None and parts and parts[2].startswith("clips/"):
                    members(parts[2][len("clips/") :])
                if not parts or "/" in parts[2] or not parts[2].endswith(".tsv") or not member.isfile():
                    continue
                if member.size > limit:
                    raise _too_big(f"{uri}:{member.name}", member.size, limit)
                yield parts[2][: -len(".tsv")], _tarball_tsv(tar, member, uri, limit)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise InputSchemaError(f"{uri}: broken tar archive: {exc}") from None
        finally:
            tar.close()
            raw.close()
        return
    local = isinstance(where.fs, pafs.LocalFileSystem)
    home = os.path.realpath(where.path) if local else None
    for info in sorted(children(where.fs, where.path), key=lambda i: i.base_name):
        if not info.base_name.endswith(".tsv"):
            continue
        if local:
            real = os.path.realpath(info.path)
            if os.path.dirname(real) != home or not stat.S_ISREG(os.stat(real).st_mode):
                raise InputSchemaError(f"{uri}/{info.base_name}: not a regular file inside the release (a link?)")
        elif info.type != pafs.FileType.File:
            continue
        if (info.size or 0) > limit:
            raise _too_big(f"{uri}/{info.base_name}", info.size, limit)
        yield info.base_name[: -len(".tsv")], _folder_tsv_file(where, info, limit)


def iter_tarball_clips(
    where: Location, wanted: Container[str], max_bytes: int = 20 << 20
) -> Iterator[tuple[str, bytes | None, str | None]]:
    """(clip file name, bytes, None) for the wanted ``clips/<plain name>`` members, in archive order, one
    at a time; (name, None, reason) for one over ``max_bytes`` (by its header's size: never read) or
    one that is not a regular file.

    Clips not wanted are skipped without being copied out (the stream still decompresses them).
    """
    tar, raw = open_tarball(where)
    try:
        for member in tar:
            parts = _member_parts(member.name)
            if not parts or not parts[2].startswith("clips/"):
                continue
            name = parts[2][len("clips/") :]
            if name not in wanted or outside(name):
                continue
            if not member.isfile():
                yield name, None, f"not a regular file: clips/{name} is a {member.type!r} member"
            elif member.size > max_bytes:
                yield name, None, too_large(member.size, max_bytes)
            else:
                yield name, *read_bounded(tar.extractfile(member), max_bytes)
    finally:
        tar.close()
        raw.close()


def clip_names(where: Location, chunk: int = 100_000) -> pa.Array:
    """The names in an extracted release's ``clips/`` (``where`` is the locale folder), from one listing; none
    when it has no ``clips/``.  Held as Arrow strings, a chunk at a time: English lists 2 M+ clips."""
    path = f"{where.path.rstrip('/')}/clips"
    if not isinstance(where.fs, pafs.LocalFileSystem):
        # One listing of the prefix, a page at a time, by the store's own client.
        infos = where.fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
        return pa.array([i.base_name for i in infos], pa.string())
    parts, names = [], []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                names.append(entry.name)
                if len(names) >= chunk:
                    parts.append(pa.array(names, pa.string()))
                    names = []
    except (FileNotFoundError, NotADirectoryError):
        pass
    parts.append(pa.array(names, pa.string()))
    return pa.concat_arrays(parts)
