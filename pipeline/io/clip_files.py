"""What a release's TSV may make the reader open, and how much of it: a plain file name inside ``clips/``,
at most ``max_clip_bytes``.

Common Voice names every clip ``common_voice_<locale>_<number>.mp3`` and ships it in the locale's
``clips/``.  A TSV is data from outside, so its ``path`` is accepted only as a *plain file name*: one
non-empty path segment (no ``/`` or ``\\``), not ``.`` or ``..``, no NUL or other control character, at
most 255 bytes.  Anything else is quarantined as ``path_outside_release`` before any file is opened.
The same rule decides which tarball members are clips (``clips/<plain name>``) and which S3 keys are
read (``<folder>/clips/<plain name>``).  On a local disk a clip must also be a regular file whose real
path is inside ``clips/`` (a symlink to ``/dev/zero`` or to a file elsewhere is outside the release).

Sizes are checked before reading (the tar header's size, the filesystem's), and reads are bounded at
``max_clip_bytes + 1`` bytes, so a size that lies cannot blow up memory.  Any other error reading one
clip quarantines that clip, with the error's kind; only errors about the release as a whole stop a run.
"""

from __future__ import annotations

import os
import stat
from typing import IO

import pyarrow.fs as pafs

PATH_OUTSIDE = "path_outside_release"
TOO_LARGE = "too_large"
MAX_NAME_BYTES = 255


def clip_name_problem(name: str | None) -> str | None:
    """Why ``name`` is not a plain file name inside ``clips/``, or None when it is."""
    if not name:
        return "empty path"
    if name in (".", ".."):
        return f"{name!r} is not a file name"
    if "/" in name or "\\" in name:
        return f"{name[:80]!r} has a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name[:80]!r} has a control character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"the name is longer than {MAX_NAME_BYTES} bytes"
    return None


def outside(name: str | None) -> str | None:
    """The quarantine reason for a path outside the release, or None."""
    problem = clip_name_problem(name)
    return f"{PATH_OUTSIDE}: {problem}; a clip path must be a plain file name inside clips/" if problem else None


def too_large(size: int, limit: int) -> str:
    return f"{TOO_LARGE}: the clip is {size} bytes, over max_clip_bytes={limit}; not read"


def read_bounded(stream: IO[bytes], limit: int) -> tuple[bytes | None, str | None]:
    """At most ``limit`` bytes of ``stream``: (data, None), or (None, reason) when it holds more."""
    data = stream.read(limit + 1)
    if len(data) > limit:
        return None, f"{TOO_LARGE}: the clip is over max_clip_bytes={limit} bytes; stopped reading there"
    return data, None


def read_clip(fs: pafs.FileSystem, folder: str, name: str, limit: int) -> tuple[bytes | None, str | None]:
    """One clip of an extracted release (local or S3): (bytes, None) or (None, why it was not read)."""
    problem = outside(name)
    if problem:
        return None, problem
    path = f"{folder}/clips/{name}"
    try:
        if isinstance(fs, pafs.LocalFileSystem):
            # Follow no link out of clips/, and read only regular files (not a device, a FIFO, a dir).
            real, home = os.path.realpath(path), os.path.realpath(f"{folder}/clips")
            if os.path.dirname(real) != home or os.path.dirname(home) != os.path.realpath(folder):
                return None, f"{PATH_OUTSIDE}: clips/{name} leads outside clips/ (a link)"
            st = os.stat(real)
            if not stat.S_ISREG(st.st_mode):
                return None, f"not a regular file: clips/{name}"
            size = st.st_size
        else:
            info = fs.get_file_info(path)
            if info.type == pafs.FileType.NotFound:
                raise FileNotFoundError(path)
            if info.type != pafs.FileType.File:
                return None, f"not a regular file: clips/{name}"
            size = info.size or 0
        if size > limit:
            return None, too_large(size, limit)
        with fs.open_input_stream(path) as f:
            return read_bounded(f, limit)
    except FileNotFoundError:
        raise
    except OSError as exc:  # this clip only: the run goes on
        return None, f"cannot read clips/{name}: {type(exc).__name__}: {exc.strerror or exc}"
