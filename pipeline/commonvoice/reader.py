"""Common Voice releases as users download them: tarballs or extracted locale folders, full or delta.

A release unpacks to ``cv-corpus-<ver>[-delta]-<date>/<locale>/`` holding ``clips/*.mp3``, the clip
lists (``validated.tsv``, ``train.tsv``, …), ``clip_durations.tsv`` and ``reported.tsv``.  This module
finds releases, reads their TSVs into one canonical table (both the pre-v17 and the current column
sets) and streams clips out of a tarball member by member.  No Ray here: the datasource in
``datasource.py`` turns these pieces into read tasks.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from pipeline.columns import CV_COLUMNS, CV_INT_COLUMNS
from pipeline.commonvoice.releases import is_delta, parse_tarball_name
from pipeline.config import StorageConfig
from pipeline.io.schema import InputSchemaError
from pipeline.runtime.storage import Location, locate

log = logging.getLogger("pipeline")

REQUIRED_COLUMNS = ("client_id", "path", "sentence")
# What the reader adds to every row, besides the clip-list columns.
ADDED_COLUMNS = ("duration_ms", "release", "split", "sentence_reported", "cv_status", "lists", "copies")
KNOWN_SPLITS = ("validated", "train", "dev", "test", "other", "invalidated")
NOT_CLIP_LISTS = frozenset(
    {"clip_durations", "reported", "validated_sentences", "unvalidated_sentences", "invalidated_sentences"}
)
MISSING_CLIP = "clip missing from release"

TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class ReleaseSource:
    """One locale of one release, as a tarball or an extracted folder."""

    uri: str
    form: Literal["tarball", "folder"]
    release: str  # e.g. cv-corpus-23.0-2025-09-05, or cv-corpus-24.0-delta-2025-12-05
    locale: str
    # Where it was found, resolved then; None (rebuilt from ``uri``) once it crossed to a Ray worker.
    where: Location | None = field(default=None, compare=False, repr=False)

    def located(self, storage: StorageConfig | None = None) -> Location:
        return self.where or locate(self.uri, storage)

    @property
    def delta(self) -> bool:
        return is_delta(self.release)


# ---------------------------------------------------------------------------------------------- TSVs


def iter_tsv(stream: IO[bytes], name: str, block_bytes: int = 1 << 22) -> Iterator[pa.Table]:
    """A Common Voice TSV as all-string tables of about ``block_bytes`` of text each, streamed: memory holds
    one block, whatever the file's size.  Tab-separated, no quoting (sentences hold quotes).  A header
    with no rows gives one empty table, so its columns are known.

    A row with the wrong number of fields (a stray tab) or a header with repeated names is an
    ``InputSchemaError`` that names the file and line, raised once the file is read, before the caller
    can have written anything of it.
    """
    if isinstance(stream, pa.NativeFile) or not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # pyarrow's streams have no readline or peek
    header_line = stream.readline()
    if not header_line.strip():
        raise InputSchemaError(f"{name}: empty file, expected a tab-separated header")
    try:
        # utf-8-sig: a list re-saved by a spreadsheet or a Windows editor starts with a byte-order mark.
        header = header_line.decode("utf-8-sig").rstrip("\r\n").split("\t")
    except UnicodeDecodeError as exc:
        raise InputSchemaError(f"{name}: line 1 is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InputSchemaError(f"{name}: malformed header {header!r}")
    empty = pa.table({h: pa.array([], pa.string()) for h in header})
    if not stream.peek(1):
        # A header and no rows: small locales' and deltas' other.tsv, invalidated.tsv, reported.tsv.
        yield empty
        return
    bad: list[str] = []

    def on_invalid(row) -> str:
        # row.number counts data rows from 1; the header we read ourselves is line 1.
        where = f"line {row.number + 1}" if row.number is not None else f"row {row.text[:60]!r}"
        bad.append(f"{where}: expected {row.expected_columns} fields, got {row.actual_columns}")
        return "skip"

    try:
        reader = pacsv.open_csv(
            stream,
            # One thread, so a bad row's line number is known (threaded parsing cannot count lines).
            read_options=pacsv.ReadOptions(column_names=header, block_size=block_bytes, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter="\t", quote_char=False, escape_char=False, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False
            ),
        )
        yielded = False
        for batch in reader:
            yielded = True
            yield pa.Table.from_batches([batch])
        if not yielded:
            yield empty
    except pa.ArrowInvalid as exc:
        raise InputSchemaError(f"{name}: cannot parse as a tab-separated file: {exc}") from None
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputSchemaError(f"{name}: {bad[0]}{more}; a stray tab or a broken line")


def read_tsv(stream: IO[bytes], name: str) -> pa.Table:
    """A whole TSV as one table (``iter_tsv`` for a file of any size)."""
    return pa.concat_tables(list(iter_tsv(stream, name)))


def _int_column(col: pa.ChunkedArray, name: str, source: str) -> pa.ChunkedArray:
    try:
        return pc.cast(pc.if_else(pc.equal(col, ""), None, col), pa.int64())
    except pa.ArrowInvalid:
        raise InputSchemaError(f"{source}: column {name!r} must hold integers") from None


def canonical_clip_table(raw: pa.Table, source: str) -> pa.Table:
    """A clip list in the one shape the pipeline reads, whatever the release's version.

    ``accent`` (before v17) becomes ``accents``; absent columns are null; vote counts are integers.
    Columns this version of the reader does not know pass through as strings after the known ones.
    """
    names = list(raw.column_names)
    if "accent" in names and "accents" not in names:
        raw = raw.rename_columns(["accents" if n == "accent" else n for n in names])
        names = list(raw.column_names)
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise InputSchemaError(
            f"{source}: not a Common Voice clip list: missing column(s) {missing} (header: {names}); "
            f"expected {', '.join(CV_COLUMNS)}"
        )
    clash = sorted(set(names) & (set(ADDED_COLUMNS) | {"id", "audio_bytes"}))
    if clash:
        raise InputSchemaError(f"{source}: columns {clash} clash with columns the reader adds")
    cols, fields = [], []
    for name in CV_COLUMNS:
        if name in names:
            col = raw.column(name)
            col = _int_column(col, name, source) if name in CV_INT_COLUMNS else col
        else:
            col = pa.nulls(raw.num_rows, pa.int64() if name in CV_INT_COLUMNS else pa.string())
        cols.append(col)
        fields.append(pa.field(name, col.type))
    for name in names:
        if name not in CV_COLUMNS:
            cols.append(raw.column(name))
            fields.append(pa.field(name, pa.string()))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


# -------------------------------------------------------------------------------------- discovery


def _kind(fs: pafs.FileSystem, path: str) -> pafs.FileType:
    return fs.get_file_info(path).type


def children(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    return fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))


def _is_locale_folder(entries: list[pafs.FileInfo]) -> bool:
    names = {e.base_name for e in entries}
    return "clips" in names or any(f"{s}.tsv" in names for s in KNOWN_SPLITS)


def discover_releases(root: Location, max_depth: int = 4) -> list[ReleaseSource]:
    """Every release tarball and extracted locale folder at or under ``root``, sorted by URI.

    Walks directory by directory and never descends into ``clips/``, so a release with millions of
    clips costs a handful of listings, not millions (on S3 each listing is a request).
    """
    fs = root.fs
    found: list[ReleaseSource] = []

    def visit(p: str, depth: int) -> None:
        entries = children(fs, p)
        if _is_locale_folder(entries):
            parent = p.rstrip("/").rsplit("/", 1)
            release = parent[0].rsplit("/", 1)[-1] if len(parent) == 2 else ""
            locale = parent[-1]
            found.append(ReleaseSource(root.at(p).uri, "folder", release or "unknown-release", locale, root.at(p)))
            return
        for e in entries:
            if e.type == pafs.FileType.File and e.base_name.endswith(TARBALL_SUFFIXES):
                named = parse_tarball_name(e.base_name) or _identity(root.at(e.path))
                if named:
                    found.append(ReleaseSource(root.at(e.path).uri, "tarball", *named, root.at(e.path)))
            elif e.type == pafs.FileType.Directory and depth < max_depth and not e.base_name.startswith(("_", ".")):
                visit(e.path, depth + 1)

    visit(root.path, 0)
    return sorted(found, key=lambda s: s.uri)


def _identity(where: Location) -> tuple[str, str] | None:
    """A tarball whose name is not a release's: its first members say which release it is (a renamed
    download used to be skipped without a word); one that is no release is skipped with a warning."""
    from pipeline.commonvoice.files import tarball_identity

    try:
        return tarball_identity(where)
    except InputSchemaError as exc:
        log.warning("skipped %s", exc)
        return None


def classify_release_input(where: Location) -> list[ReleaseSource] | None:
    """The releases a ``--input`` names, or None when it names no release (e.g. Parquet)."""
    path = where.path
    kind = _kind(where.fs, path)
    if kind == pafs.FileType.File:
        if not path.endswith(TARBALL_SUFFIXES):
            return None
        named = parse_tarball_name(path)
        if named is None:
            # A renamed tarball: its first member names the release and locale.
            from pipeline.commonvoice.files import tarball_identity

            named = tarball_identity(where)
        return [ReleaseSource(where.at(path).uri, "tarball", *named, where.at(path))]
    if kind == pafs.FileType.Directory:
        found = discover_releases(where)
        return found or None
    return None


def not_an_input(src: str, where: Location, accepted: str) -> str:
    """Why ``src`` is refused, naming the locale folder to give instead when it is part of an extracted
    release (its ``clips/``, a TSV, one clip)."""
    folder = where.fs.get_file_info(where.path).type == pafs.FileType.Directory
    what = f"{src}: {'holds no input' if folder or where.globbed else 'not an input'} this tool reads"
    parts = where.path.rstrip("/").rsplit("/", 2)
    up = 2 if len(parts) == 3 and parts[1] == "clips" else 1  # a clip inside clips/
    release = "/".join(parts[: len(parts) - up])
    names = {e.base_name for e in children(where.fs, release)} if not where.globbed and len(parts) > 1 else set()
    if "clips" in names and any(n.endswith(".tsv") for n in names):
        what += f" (it is inside the release folder {where.at(release).uri}: give that folder)"
    return f"{what}; expected {accepted}"
