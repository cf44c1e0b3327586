"""Common Voice releases as users download them: tarballs or extracted locale folders, full or delta.

A release unpacks to ``cv-corpus-<ver>[-delta]-<date>/<locale>/`` holding ``clips/*.mp3``, the clip
lists (``validated.tsv``, ``train.tsv``, …), ``clip_durations.tsv`` and ``reported.tsv``.  This module
finds releases, reads their TSVs into one canonical table (both the pre-v17 and the current column
sets) and streams clips out of a tarball member by member.  No Ray here: the datasource in
``cv_datasource.py`` turns these pieces into read tasks.
"""

from __future__ import annotations

import io
import re
import tarfile
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from typing import IO, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs

from pipeline.config import StorageConfig
from pipeline.io.clip_files import outside, read_bounded, too_large
from pipeline.io.schema import InputSchemaError
from pipeline.releases import is_release_name
from pipeline.storage import Location, locate

# Clip-list columns from v17 on, in the release's order.  Older releases say ``accent`` and lack
# ``sentence_id``/``sentence_domain``; both load into this one shape.
CV_COLUMNS = (
    "client_id",
    "path",
    "sentence_id",
    "sentence",
    "sentence_domain",
    "up_votes",
    "down_votes",
    "age",
    "gender",
    "accents",
    "variant",
    "locale",
    "segment",
)
REQUIRED_COLUMNS = ("client_id", "path", "sentence")
INT_COLUMNS = ("up_votes", "down_votes")
# What the reader adds to every row, besides the clip-list columns.
ADDED_COLUMNS = ("duration_ms", "release", "split", "sentence_reported", "cv_status", "lists", "copies")
KNOWN_SPLITS = ("validated", "train", "dev", "test", "other", "invalidated")
NOT_CLIP_LISTS = frozenset(
    {"clip_durations", "reported", "validated_sentences", "unvalidated_sentences", "invalidated_sentences"}
)
MISSING_CLIP = "clip missing from release"

_TARBALL_RE = re.compile(
    r"^(?P<release>cv-corpus-\d+(?:\.\d+)*-(?:delta-)?\d{4}-\d{2}-\d{2})-(?P<locale>[A-Za-z0-9-]+)\.(?:tar\.gz|tgz|tar)$"
)
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
        return "-delta-" in self.release


def parse_tarball_name(uri: str) -> tuple[str, str] | None:
    """(release, locale) from ``cv-corpus-<ver>[-delta]-<date>-<locale>.tar.gz``, else None."""
    m = _TARBALL_RE.match(uri.rstrip("/").rsplit("/", 1)[-1])
    return (m["release"], m["locale"]) if m else None


# ---------------------------------------------------------------------------------------------- TSVs


def read_tsv(stream: IO[bytes], name: str) -> pa.Table:
    """A Common Voice TSV as all-string columns.  Tab-separated, no quoting (sentences hold quotes).

    A row with the wrong number of fields (a stray tab) or a header with repeated names is an
    ``InputSchemaError`` that names the file and line, never a half-read table.
    """
    if isinstance(stream, pa.NativeFile) or not hasattr(stream, "peek"):
        stream = io.BufferedReader(stream)  # pyarrow's streams have no readline or peek
    header_line = stream.readline()
    if not header_line.strip():
        raise InputSchemaError(f"{name}: empty file, expected a tab-separated header")
    try:
        header = header_line.decode("utf-8").rstrip("\r\n").split("\t")
    except UnicodeDecodeError as exc:
        raise InputSchemaError(f"{name}: line 1 is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if len(set(header)) != len(header) or any(not h for h in header):
        raise InputSchemaError(f"{name}: malformed header {header!r}")
    if not stream.peek(1):
        # A header and no rows: small locales' and deltas' other.tsv, invalidated.tsv, reported.tsv.
        return pa.table({h: pa.array([], pa.string()) for h in header})
    bad: list[str] = []

    def on_invalid(row) -> str:
        # row.number counts data rows from 1; the header we read ourselves is line 1.
        where = f"line {row.number + 1}" if row.number is not None else f"row {row.text[:60]!r}"
        bad.append(f"{where}: expected {row.expected_columns} fields, got {row.actual_columns}")
        return "skip"

    try:
        table = pacsv.read_csv(
            stream,
            # One thread, so a bad row's line number is known (threaded parsing cannot count lines).
            read_options=pacsv.ReadOptions(column_names=header, block_size=1 << 22, use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter="\t", quote_char=False, escape_char=False, invalid_row_handler=on_invalid
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, strings_can_be_null=False
            ),
        )
    except pa.ArrowInvalid as exc:
        raise InputSchemaError(f"{name}: cannot parse as a tab-separated file: {exc}") from None
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputSchemaError(f"{name}: {bad[0]}{more}; a stray tab or a broken line")
    return table


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
            col = _int_column(col, name, source) if name in INT_COLUMNS else col
        else:
            col = pa.nulls(raw.num_rows, pa.int64() if name in INT_COLUMNS else pa.string())
        cols.append(col)
        fields.append(pa.field(name, col.type))
    for name in names:
        if name not in CV_COLUMNS:
            cols.append(raw.column(name))
            fields.append(pa.field(name, pa.string()))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


def durations_map(table: pa.Table | None, source: str) -> dict[str, int]:
    """``clip_durations.tsv`` (``clip``, ``duration[ms]``) as {clip file name: milliseconds}."""
    if table is None:
        return {}
    if "clip" not in table.column_names or "duration[ms]" not in table.column_names:
        raise InputSchemaError(f"{source}: expected columns 'clip' and 'duration[ms]', got {table.column_names}")
    ms = _int_column(table.column("duration[ms]"), "duration[ms]", source)
    return {c: m for c, m in zip(table.column("clip").to_pylist(), ms.to_pylist(), strict=True) if m is not None}


def reported_keys(table: pa.Table | None) -> tuple[frozenset[str], frozenset[str]]:
    """(sentence ids, sentence texts) in ``reported.tsv``."""
    if table is None:
        return frozenset(), frozenset()
    ids = table.column("sentence_id").to_pylist() if "sentence_id" in table.column_names else []
    texts = table.column("sentence").to_pylist() if "sentence" in table.column_names else []
    return frozenset(i for i in ids if i), frozenset(t for t in texts if t)


# Which list decides a clip's status when a release lists it twice (it should not): the harshest.
STATUS_LISTS = ("invalidated", "validated", "other")
SPLIT_LISTS = ("train", "dev", "test")


def release_view(
    lists: dict[str, pa.Table],
    *,
    release: str,
    durations: dict[str, int],
    reported: tuple[frozenset[str], frozenset[str]],
    source: str,
) -> pa.Table:
    """One row per clip that any clip list of one release names: ``id`` (the TSV's ``path``), the CV
    columns, ``lists`` (every list naming it), ``copies`` (most times one list names it),
    ``cv_status``, ``split``, ``duration_ms``, ``sentence_reported``, ``release`` and ``_source``."""
    parts = []
    for name, clips in lists.items():
        if clips.num_rows:
            parts.append(clips.append_column("_list", pa.array([name] * clips.num_rows, pa.string())))
    if not parts:
        return pa.table({"id": pa.array([], pa.string())})
    rows = pa.concat_tables(parts, promote_options="permissive")
    copies = (
        rows.group_by(["path", "_list"])
        .aggregate([("path", "count")])
        .group_by("path")
        .aggregate([("path_count", "max")])
    )
    # Metadata from the list that decides the status; every list's name kept.
    rank = {n: i for i, n in enumerate((*STATUS_LISTS, *SPLIT_LISTS))}
    order = pa.array([rank.get(n, len(rank)) for n in rows.column("_list").to_pylist()], pa.int32())
    rows = rows.append_column("_rank", order).sort_by([("path", "ascending"), ("_rank", "ascending")])
    meta = [c for c in rows.column_names if c not in ("path", "_list", "_rank")]
    view = rows.group_by("path", use_threads=False).aggregate([(c, "first") for c in meta] + [("_list", "list")])
    names = {"path": "id", "_list_list": "lists"}
    view = view.rename_columns([names.get(c, c.removesuffix("_first")) for c in view.column_names])
    ids = view.column("id").to_pylist()
    n_copies = dict(zip(copies.column("path").to_pylist(), copies.column("path_count_max").to_pylist(), strict=True))
    lists_of = view.column("lists").to_pylist()
    status = [next((s for s in STATUS_LISTS if s in ls), None) for ls in lists_of]
    split = [next((s for s in SPLIT_LISTS if s in ls), None) for ls in lists_of]
    rid, rtext = reported
    flagged = [
        bool((s and s in rid) or (t and t in rtext))
        for s, t in zip(view.column("sentence_id").to_pylist(), view.column("sentence").to_pylist(), strict=True)
    ]
    n = view.num_rows
    # A path that is not a plain file name inside clips/ is held before anything is opened.
    held = [outside(i) for i in ids]
    return (
        view.append_column("_hold", pa.array(held, pa.string()))
        .append_column("copies", pa.array([n_copies[i] for i in ids], pa.int64()))
        .append_column("cv_status", pa.array(status, pa.string()))
        .append_column("split", pa.array(split, pa.string()))
        .append_column("duration_ms", pa.array([durations.get(i) for i in ids], pa.int64()))
        .append_column("sentence_reported", pa.array(flagged, pa.bool_()))
        .append_column("release", pa.array([release] * n, pa.string()))
        .append_column("_source", pa.array([source] * n, pa.string()))
    )


# -------------------------------------------------------------------------------------- discovery


def _kind(fs: pafs.FileSystem, path: str) -> pafs.FileType:
    return fs.get_file_info(path).type


def _children(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
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
        entries = _children(fs, p)
        if _is_locale_folder(entries):
            parent = p.rstrip("/").rsplit("/", 1)
            release = parent[0].rsplit("/", 1)[-1] if len(parent) == 2 else ""
            locale = parent[-1]
            found.append(ReleaseSource(root.at(p).uri, "folder", release or "unknown-release", locale, root.at(p)))
            return
        for e in entries:
            if e.type == pafs.FileType.File and e.base_name.endswith(TARBALL_SUFFIXES):
                named = parse_tarball_name(e.base_name)
                if named:
                    found.append(ReleaseSource(root.at(e.path).uri, "tarball", *named, root.at(e.path)))
            elif e.type == pafs.FileType.Directory and depth < max_depth and not e.base_name.startswith(("_", ".")):
                visit(e.path, depth + 1)

    visit(root.path, 0)
    return sorted(found, key=lambda s: s.uri)


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
            named = tarball_identity(where)
        return [ReleaseSource(where.at(path).uri, "tarball", *named, where.at(path))]
    if kind == pafs.FileType.Directory:
        found = discover_releases(where)
        return found or None
    return None


# --------------------------------------------------------------------------------------- tarballs


def open_tarball(where: Location) -> tuple[tarfile.TarFile, IO[bytes]]:
    """A tarball opened as a *stream* (``r|*``): members in order, nothing seeks, nothing is extracted.

    Works the same for a local file and an S3 object; memory holds one member at a time.
    """
    raw = where.fs.open_input_stream(where.path)
    try:
        return tarfile.open(fileobj=raw, mode="r|*"), raw
    except tarfile.TarError as exc:
        raw.close()
        raise InputSchemaError(f"{where.uri}: not a readable tar archive: {exc}") from None


def _member_parts(name: str) -> tuple[str, str, str] | None:
    """(release dir, locale, rest) of ``cv-corpus-…/<locale>/<rest>``, tolerating a leading ``./``."""
    parts = name.lstrip("./").split("/")
    if len(parts) < 3:
        return None
    return parts[0], parts[1], "/".join(parts[2:])


def tarball_identity(where: Location) -> tuple[str, str]:
    tar, raw = open_tarball(where)
    try:
        for member in tar:
            parts = _member_parts(member.name)
            if parts and is_release_name(parts[0]):
                return parts[0], parts[1]
    finally:
        tar.close()
        raw.close()
    raise InputSchemaError(
        f"{where.uri}: no cv-corpus-<version>-<date>/<locale>/ folder inside; not a Common Voice release"
    )


def read_tarball_tsvs(where: Location, wanted: set[str]) -> dict[str, pa.Table]:
    """The wanted top-level TSVs of the locale folder, read in one streaming pass.

    The pass stops as soon as all wanted TSVs are found, so a tarball that lists them before the
    clips costs almost nothing; one that lists them after is decompressed once to find them.
    Also returns ``"__tsvs__"``: the names of every TSV seen, to name the choices in errors.
    """
    uri = where.uri
    tar, raw = open_tarball(where)
    out: dict[str, pa.Table] = {}
    seen: list[str] = []
    try:
        for member in tar:
            parts = _member_parts(member.name)
            if parts and seen and parts[2].startswith("clips/"):
                break  # the TSVs came first and are all read: no need to decompress the clips
            if not parts or not member.isfile() or "/" in parts[2] or not parts[2].endswith(".tsv"):
                continue
            stem = parts[2][: -len(".tsv")]
            seen.append(stem)
            if stem in wanted:
                f = tar.extractfile(member)
                out[stem] = read_tsv(f, f"{uri}:{member.name}")
                if wanted <= set(out):
                    break
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InputSchemaError(f"{uri}: broken tar archive: {exc}") from None
    finally:
        tar.close()
        raw.close()
    out["__tsvs__"] = pa.table({"name": sorted(seen)})
    return out


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


# ------------------------------------------------------------------------------------ one split


def _folder_tsv(fs: pafs.FileSystem, folder: str, stem: str, uri: str) -> pa.Table | None:
    path = f"{folder}/{stem}.tsv"
    if _kind(fs, path) != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        return read_tsv(f, f"{uri}/{stem}.tsv")


def _folder_tsv_names(fs: pafs.FileSystem, folder: str) -> list[str]:
    return sorted(e.base_name[:-4] for e in _children(fs, folder) if e.base_name.endswith(".tsv"))


def load_release(src: ReleaseSource, split: str, storage: StorageConfig | None = None) -> pa.Table:
    """Every clip the release lists, with its lists (``release_view``), before any clip is read.

    ``InputSchemaError`` when the curated ``split``'s TSV is absent (naming the lists there), is not a
    clip list, or when any TSV is malformed.
    """
    if split in NOT_CLIP_LISTS:
        raise InputSchemaError(f"{split}.tsv is not a clip list; pick one of {', '.join(KNOWN_SPLITS)}")
    wanted = {*KNOWN_SPLITS, split, "clip_durations", "reported"}
    if src.form == "tarball":
        tsvs = read_tarball_tsvs(src.located(storage), wanted)
        available = tsvs.pop("__tsvs__").column("name").to_pylist()
    else:
        where = src.located(storage)
        fs, folder = where.fs, where.path
        tsvs = {s: t for s in wanted if (t := _folder_tsv(fs, folder, s, src.uri)) is not None}
        available = _folder_tsv_names(fs, folder)
    if split not in tsvs:
        lists = [a for a in available if a not in NOT_CLIP_LISTS]
        kind = "delta release" if src.delta else "release"
        raise InputSchemaError(
            f"{src.uri}: this {kind} has no {split}.tsv; its clip lists are: {', '.join(lists) or 'none'}"
        )
    lists = {
        name: canonical_clip_table(t, f"{src.uri}:{name}.tsv")
        for name, t in tsvs.items()
        if name not in ("clip_durations", "reported")
    }
    return release_view(
        lists,
        release=src.release,
        durations=durations_map(tsvs.get("clip_durations"), f"{src.uri}:clip_durations.tsv"),
        reported=reported_keys(tsvs.get("reported")),
        source=src.uri,
    )
