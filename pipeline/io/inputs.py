"""What ``--input`` names, resolved once, before any work: Parquet files or Common Voice releases.

Both input forms answer the same questions up front, per locale: which **units** of work they hold
(a release or a Parquet file, identified by content: path, size and modification time of what
decides its rows), the **view** of the rows those units list (the latest release's word on each
clip, and its history), and, once the plan picked the rows that need engines, the lazy Ray
**dataset** that reads exactly their audio.  A source of no accepted form is an ``InputSchemaError``
naming them, so the CLI exits 2 before Ray or a model starts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.columns import AUDIO, ID
from pipeline.commonvoice import view as cv_view
from pipeline.commonvoice.reader import ReleaseSource, classify_release_input, not_an_input
from pipeline.commonvoice.releases import is_delta
from pipeline.config import CurationConfig, StorageConfig
from pipeline.io.schema import InputLayout, InputSchemaError, PlannedRows, check_consistent, inspect_schema, with_ids
from pipeline.runtime.storage import Location, list_parquet_files, locate
from pipeline.table.workspace import Workspace

ACCEPTED_FORMS = (
    "a Common Voice release tarball (cv-corpus-<ver>[-delta]-<date>-<locale>.tar.gz), "
    "an extracted locale folder (…/cv-corpus-<ver>-<date>/<locale>/ with clips/ and TSVs), "
    "a folder or s3:// prefix holding several of either, "
    "or Parquet (a file, a folder of them, or a glob)"
)
DEFAULT_SPLIT = "validated"
# Columns of a view that are the reader's bookkeeping, not the dataset's.
VIEW_ONLY = ("lists", "copies", "release", "_source", "_hold")


@dataclass(frozen=True)
class Unit:
    """One source of a run, identified by its content: what it is, and the sizes and times of the files
    that decide its rows.  Rewritten at the same path, it is a new unit."""

    uri: str
    locale: str
    release: str | None
    identity: tuple[tuple[str, int, int], ...]  # (file, size, mtime ns) of what decides its rows

    def key(self, settings: str) -> str:
        body = json.dumps([self.uri, self.release, self.identity, settings], separators=(",", ":"))
        return hashlib.sha256(body.encode()).hexdigest()[:20]


def _identity(fs: pafs.FileSystem, paths: list[str]) -> tuple[tuple[str, int, int], ...]:
    out = []
    for p, info in zip(paths, fs.get_file_info(paths), strict=True):
        if info.type == pafs.FileType.File:
            out.append((p.rsplit("/", 1)[-1], info.size or 0, info.mtime_ns or 0))
    return tuple(out)


@dataclass
class ReleaseInputs:
    """Common Voice releases: one unit per release and locale; their TSVs are read here, clips later."""

    releases: list[ReleaseSource]
    split: str
    storage: StorageConfig
    notes: list[str] = field(default_factory=list)
    max_tsv_bytes: int = 8 << 30

    def __post_init__(self) -> None:
        # A release there both as a tarball and extracted is one release: read from the folder, whose
        # clips read in parallel.  The other copy is noted, never read twice (nor doubled).
        chosen: dict[tuple[str, str], ReleaseSource] = {}
        for src in sorted(self.releases, key=lambda s: (s.form != "folder", s.uri)):
            if (src.release, src.locale) in chosen:
                self.notes.append(
                    f"{src.uri} is {src.release}/{src.locale} again; reading {chosen[src.release, src.locale].uri}"
                )
                continue
            chosen[src.release, src.locale] = src
        self.releases = sorted(chosen.values(), key=lambda s: s.uri)

    form = "common-voice"

    @property
    def curated_list(self) -> str | None:
        """The clip list the plan selects by: the split curated."""
        return self.split

    def locales(self) -> set[str]:
        return {s.locale for s in self.releases}

    def passthrough(self) -> pa.Schema | None:
        return None

    def units(self, locale: str) -> list[Unit]:
        out = []
        for src in self.releases:
            if src.locale != locale:
                continue
            where = src.located(self.storage)
            fs, path = where.fs, where.path
            if src.form == "tarball":
                ident = _identity(fs, [path])
            else:  # the clip lists decide a folder's rows; its clips never change under a path
                tsvs = fs.get_file_info(pafs.FileSelector(path, recursive=False))
                ident = _identity(fs, sorted(i.path for i in tsvs if i.base_name.endswith(".tsv")))
            out.append(Unit(src.uri, locale, src.release, ident))
        return out

    def load_view(self, ws: Workspace, locale: str, units: list[Unit]) -> None:
        """The workspace's ``view``: every TSV of ``units`` read (streamed) and their latest word per clip.
        Every TSV is read and checked before anything is written: a malformed release leaves no trace."""
        by_uri = {s.uri: s for s in self.releases}
        order = cv_view._Order()
        for u in units:
            cv_view.ingest_release(ws, by_uri[u.uri], self.split, self.storage, order, self.max_tsv_bytes)
        cv_view.release_views(ws)
        cv_view.latest_view(ws)

    def selected(self, row: dict[str, Any]) -> bool:
        return self.split in (row.get("lists") or ())

    def ever_selected(self, row: dict[str, Any]) -> bool:
        history = row.get("releases") or json.loads(row.get("releases_json") or "[]")
        return any(self.split in (e.get("status"), e.get("split")) for e in history)

    def full_releases(self, units: list[Unit]) -> list[str]:
        return [u.release for u in units if u.release and not is_delta(u.release)]

    def dataset(self, rows: pa.Table, cfg: CurationConfig):
        """The audio of ``rows`` (engine work), read from the release each row's latest entry names."""
        import ray

        from pipeline.commonvoice.datasource import ReleaseDatasource

        by_uri = {s.uri: s for s in self.releases}
        parts = []
        for uri in sorted(pc.unique(rows.column("_source")).to_pylist()):
            part = rows.filter(pc.equal(rows.column("_source"), uri))
            # Without its filesystem: a worker resolves its own (nothing of this process's S3 client travels).
            src = dataclasses.replace(by_uri[uri], where=None)
            parts.append((src, part.drop_columns([c for c in VIEW_ONLY if c in part.column_names])))
        return ray.data.read_datasource(ReleaseDatasource(parts, cfg.storage, cfg.reader, cfg.audio.max_clip_bytes))

    def describe(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "split": self.split,
            "inputs": [s.uri for s in self.releases],
            "releases": [
                {"uri": s.uri, "form": s.form, "release": s.release, "locale": s.locale} for s in self.releases
            ],
        }


@dataclass
class ParquetInputs:
    """Parquet files in the seed's (``id``, ``audio_bytes``) or Hugging Face's (``audio`` struct) shape;
    one unit per file."""

    files: list[Location]  # resolved by open_inputs: nothing here resolves a filesystem again
    default_locale: str = "en"
    notes: list[str] = field(default_factory=list)  # what the listing left out, and why
    layout: InputLayout = field(init=False)
    schema: pa.Schema = field(init=False)
    form = "parquet"
    curated_list = None  # every row is in the curated set

    def __post_init__(self) -> None:
        # Footers only: cheap, and every file's schema is checked before any work starts.
        layouts = {}
        for f in self.files:
            if "?" in f.path:
                # Ray Data's read cuts a path at "?" (a versioned object's query) and finds no file, after the
                # plan; said here, before anything is read or written.
                raise InputSchemaError(f"{f.uri}: Ray Data cannot read a file whose name holds '?'; rename it")
            try:
                meta = pq.read_metadata(f.path, filesystem=f.fs)
            except (pa.ArrowInvalid, OSError) as exc:
                if not f.path.endswith(".parquet"):  # a glob over a release's clips or TSVs
                    raise InputSchemaError(not_an_input(f.uri, f, ACCEPTED_FORMS)) from None
                raise InputSchemaError(
                    f"{f.uri}: not a readable Parquet file ({exc}); expected {ACCEPTED_FORMS}"
                ) from None
            schema = meta.schema.to_arrow_schema()
            if not layouts:
                self.schema = schema
            layouts[f.uri] = inspect_schema(schema, f.uri)
        self.layout = check_consistent(layouts)

    def _columns(self) -> list[str]:
        return [c for c in self.schema.names if c not in (AUDIO, "audio")]

    def _batches(self, where: Location, start: int) -> Iterator[pa.Table]:
        """One file's rows, every column but the audio, a batch at a time, with ``_source``, ``_ord`` and
        ``_hold``; a row without an id gets a stand-in naming its file and row (held, so the next run
        finds the same one)."""
        name = where.uri.rsplit("/", 1)[-1]
        k = 0
        with where.fs.open_input_file(where.path) as f:
            for batch in pq.ParquetFile(f).iter_batches(columns=self._columns(), batch_size=65_536):
                t = with_ids(pa.Table.from_batches([batch]), self.layout)
                n = t.num_rows
                ids = t.column(ID)
                has = pc.fill_null(pc.not_equal(ids, ""), False)
                stand_in = pc.binary_join_element_wise(
                    f"missing-id:{name}:", pc.cast(pa.array(range(k, k + n)), pa.string()), ""
                )
                t = t.set_column(t.schema.get_field_index(ID), ID, pc.if_else(has, ids, stand_in))
                t = t.append_column("_hold", pc.if_else(has, pa.nulls(n, pa.string()), "missing id"))
                t = t.append_column("_source", pa.array([where.uri] * n, pa.string()))
                t = t.append_column("_ord", pa.array(range(start + k, start + k + n), pa.int64()))
                if "locale" not in t.column_names:
                    t = t.append_column("locale", pa.array([self.default_locale] * n, pa.string()))
                yield t
                k += n

    def locales(self) -> set[str]:
        if "locale" not in self.schema.names:
            return {self.default_locale}
        found = set()
        for where in self.files:
            col = pq.read_table(where.path, columns=["locale"], filesystem=where.fs).column("locale")
            found |= {v or self.default_locale for v in pc.unique(col).to_pylist()}
        return found

    def passthrough(self) -> pa.Schema:
        return pa.schema([self.schema.field(c) for c in self.layout.passthrough if c != "locale"])

    def units(self, locale: str) -> list[Unit]:
        out = []
        for f in self.files:
            out.append(Unit(f.uri, locale, None, _identity(f.fs, [f.path])))
        return out

    def load_view(self, ws: Workspace, locale: str, units: list[Unit]) -> None:
        """The workspace's ``view``: one row per id of ``units``' files in ``locale`` (the first copy; every
        copy counted), streamed from the files' small columns."""
        wanted = [f for f in self.files if f.uri in {u.uri for u in units}]
        start = 0
        schema = None
        for where in wanted:
            for t in self._batches(where, start):
                start += t.num_rows
                t = t.filter(pc.equal(pc.fill_null(t.column("locale"), self.default_locale), locale))
                schema = schema or t.schema
                with ws.writer("parquet_rows", schema) as w:
                    w.write(t)
        if schema is None:
            schema = next(self._batches(self.files[0], 0)).schema
            with ws.writer("parquet_rows", schema) as w:
                w.write(schema.empty_table())
        cols = [c for c in schema.names if c not in (ID, "_ord")]
        fields = ", ".join(f"'{c}': \"{c}\"" for c in cols)
        ws.materialize(
            "view",
            f"""
            WITH firsts AS (SELECT id, arg_min({{{fields}}}, _ord) AS r, count(*) AS copies
                            FROM parquet_rows GROUP BY id)
            SELECT id, {", ".join(f'r."{c}" AS "{c}"' for c in cols)}, copies,
                   []::STRUCT(release VARCHAR, status VARCHAR, split VARCHAR)[] AS releases,
                   NULL::VARCHAR[] AS lists, NULL::VARCHAR AS release,
                   NULL::VARCHAR AS first_release, NULL::VARCHAR AS last_release
            FROM firsts
        """,
        )

    def selected(self, row: dict[str, Any]) -> bool:
        return True

    def ever_selected(self, row: dict[str, Any]) -> bool:
        return True

    def full_releases(self, units: list[Unit]) -> list[str]:
        return []

    def dataset(self, rows: pa.Table, cfg: CurationConfig):
        import ray

        from pipeline.io.parquet_rows import read_planned

        by_uri = {f.uri: f for f in self.files}
        files = [by_uri[u] for u in sorted(pc.unique(rows.column("_source")).to_pylist())]
        ds = read_planned(files, rows, self.layout, cfg.storage)
        # The plan's columns the files lack (the locale, the history) join each read row by id.
        read = {*self.schema.names} - {self.layout.id_column} | {ID}  # the columns a read row has
        extra = rows.select([ID, *(c for c in rows.column_names if c not in read and c not in VIEW_ONLY)])
        return ds.map_batches(PlannedRows(self.layout, ray.put(extra)), batch_format="pyarrow")

    def describe(self) -> dict[str, Any]:
        return {"form": self.form, "inputs": [f.uri for f in self.files]}


def view_table(inputs: ReleaseInputs | ParquetInputs, locale: str, units: list[Unit]) -> pa.Table:
    """The view as an Arrow table, with ``releases_json`` (a look at a small release; runs stream it)."""
    with Workspace(memory_limit_mb=256) as ws:
        inputs.load_view(ws, locale, units)
        return cv_view.releases_json(ws.arrow("SELECT * FROM view ORDER BY id"))


def _is_parquet_source(where: Location) -> bool:
    if where.globbed:
        return True
    path = where.path
    info = where.fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return path.endswith(".parquet")
    return info.type == pafs.FileType.Directory


def open_inputs(
    sources: list[str],
    storage: StorageConfig,
    split: str | None = None,
    default_locale: str = "en",
    max_tsv_bytes: int = 8 << 30,
) -> ParquetInputs | ReleaseInputs:
    """Classify every source, refuse mixtures and unknown forms, and read what must be known up front."""
    releases: list[ReleaseSource] = []
    parquet: list[Location] = []
    notes: list[str] = []
    for src in sources:
        where = locate(src, storage)  # once: every helper below takes the resolved location
        if not where.globbed and where.fs.get_file_info(where.path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input {src!r} does not exist")
        found = classify_release_input(where)
        if found:
            releases += found
        elif _is_parquet_source(where):
            try:
                parquet += list_parquet_files(where, notes)
            except FileNotFoundError:
                raise InputSchemaError(not_an_input(src, where, ACCEPTED_FORMS)) from None
        else:
            raise InputSchemaError(not_an_input(src, where, ACCEPTED_FORMS))
    if releases and parquet:
        raise InputSchemaError("mixing Common Voice releases and Parquet in one run is not supported; run them apart")
    if releases:
        found = sorted(set(releases), key=lambda r: r.uri)
        return ReleaseInputs(found, split or DEFAULT_SPLIT, storage, max_tsv_bytes=max_tsv_bytes)
    return ParquetInputs(sorted(set(parquet), key=lambda f: f.uri), default_locale, notes)
