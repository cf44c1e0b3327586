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
import functools
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.columns import AUDIO, ID
from pipeline.config import CurationConfig, StorageConfig
from pipeline.io.cv_release import ReleaseSource, classify_release_input, load_release
from pipeline.io.schema import InputLayout, InputSchemaError, check_consistent, inspect_schema, to_canonical
from pipeline.storage import Location, list_parquet_files, locate

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


def _history(release: list[str], status: list[str | None], split: list[str | None]) -> str:
    entries = [{"release": r, "status": st, "split": sp} for r, st, sp in zip(release, status, split, strict=True)]
    return json.dumps(entries, separators=(",", ":"))


def latest_view(views: list[pa.Table]) -> pa.Table:
    """One row per clip over several releases' views (each from ``load_release``): the newest release's
    columns, ``first_release``/``last_release``, and the history as ``releases_json``."""
    from pipeline.releases import release_key

    views = [v for v in views if v.num_rows]
    if not views:
        return pa.table({ID: pa.array([], pa.string())})
    order = sorted({r for v in views for r in v.column("release").unique().to_pylist()}, key=release_key)
    rank = {r: i for i, r in enumerate(order)}
    rows = pa.concat_tables(views, promote_options="permissive")
    # Arrow's "first" aggregation takes no list columns: the list names travel joined.
    rows = rows.set_column(rows.schema.get_field_index("lists"), "lists", pc.binary_join(rows.column("lists"), ","))
    rows = rows.append_column("_rank", pa.array([rank[r] for r in rows.column("release").to_pylist()], pa.int32()))
    newest_first = rows.sort_by([(ID, "ascending"), ("_rank", "descending")])
    meta = [c for c in rows.column_names if c not in (ID, "_rank")]
    latest = newest_first.group_by(ID, use_threads=False).aggregate([(c, "first") for c in meta])
    latest = latest.rename_columns([c.removesuffix("_first") for c in latest.column_names])
    latest = latest.set_column(
        latest.schema.get_field_index("lists"), "lists", pc.split_pattern(latest.column("lists"), ",")
    )
    oldest_first = rows.sort_by([(ID, "ascending"), ("_rank", "ascending")])
    hist = oldest_first.group_by(ID, use_threads=False).aggregate(
        [("release", "list"), ("cv_status", "list"), ("split", "list"), ("copies", "max")]
    )
    by_id = {
        i: (_history(r, st, sp), r[0], c)
        for i, r, st, sp, c in zip(
            hist.column(ID).to_pylist(),
            hist.column("release_list").to_pylist(),
            hist.column("cv_status_list").to_pylist(),
            hist.column("split_list").to_pylist(),
            hist.column("copies_max").to_pylist(),
            strict=True,
        )
    }
    ids = latest.column(ID).to_pylist()
    latest = latest.set_column(
        latest.schema.get_field_index("copies"), "copies", pa.array([by_id[i][2] for i in ids], pa.int64())
    )
    return (
        latest.append_column("releases_json", pa.array([by_id[i][0] for i in ids], pa.string()))
        .append_column("first_release", pa.array([by_id[i][1] for i in ids], pa.string()))
        .append_column("last_release", latest.column("release"))
    )


@dataclass
class ReleaseInputs:
    """Common Voice releases: one unit per release and locale; their TSVs are read here, clips later."""

    releases: list[ReleaseSource]
    split: str
    storage: StorageConfig
    notes: list[str] = field(default_factory=list)

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

    def view(self, locale: str, units: list[Unit]) -> pa.Table:
        by_uri = {s.uri: s for s in self.releases}
        views = []
        for u in units:
            v = load_release(by_uri[u.uri], self.split, self.storage)
            if v.num_rows and "locale" in v.column_names:
                # Old releases leave the column empty; the release's own folder names the locale.
                loc = pc.if_else(pc.equal(pc.fill_null(v.column("locale"), ""), ""), locale, v.column("locale"))
                v = v.set_column(v.schema.get_field_index("locale"), "locale", loc)
            views.append(v)
        return latest_view(views)

    def selected(self, row: dict[str, Any]) -> bool:
        return self.split in (row.get("lists") or ())

    def ever_selected(self, row: dict[str, Any]) -> bool:
        history = row.get("releases") or json.loads(row.get("releases_json") or "[]")
        return any(self.split in (e.get("status"), e.get("split")) for e in history)

    def full_releases(self, units: list[Unit]) -> list[str]:
        return [u.release for u in units if u.release and "-delta-" not in u.release]

    def dataset(self, rows: pa.Table, cfg: CurationConfig):
        """The audio of ``rows`` (engine work), read from the release each row's latest entry names."""
        import ray

        from pipeline.io.cv_datasource import ReleaseDatasource

        by_uri = {s.uri: s for s in self.releases}
        parts = []
        for uri in sorted(set(rows.column("_source").to_pylist())):
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
    layout: InputLayout = field(init=False)
    schema: pa.Schema = field(init=False)
    form = "parquet"

    def __post_init__(self) -> None:
        # Footers only: cheap, and every file's schema is checked before any work starts.
        layouts = {}
        for f in self.files:
            try:
                meta = pq.read_metadata(f.path, filesystem=f.fs)
            except (pa.ArrowInvalid, OSError) as exc:
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

    @functools.cached_property
    def _meta(self) -> pa.Table:
        """Every row's columns but its audio, with ``_source`` (one read of the small columns)."""
        parts = []
        for where in self.files:
            f = where.uri
            t = pq.read_table(where.path, columns=self._columns(), filesystem=where.fs)
            ids = t.column(ID).cast(pa.string()).to_pylist()
            # A row without an id cannot be keyed: it becomes one quarantined row under a stand-in id
            # that names its file and row, so the next run finds the same one.
            name = f.rsplit("/", 1)[-1]
            hold = [None if i else "missing id" for i in ids]
            ids = [i or f"missing-id:{name}:{k}" for k, i in enumerate(ids)]
            t = t.set_column(t.schema.get_field_index(ID), ID, pa.array(ids, pa.string()))
            t = t.append_column("_hold", pa.array(hold, pa.string()))
            parts.append(t.append_column("_source", pa.array([f] * t.num_rows, pa.string())))
        meta = pa.concat_tables(parts, promote_options="permissive")
        if "locale" not in meta.column_names:
            meta = meta.append_column("locale", pa.array([self.default_locale] * meta.num_rows, pa.string()))
        return meta

    def locales(self) -> set[str]:
        return {v or self.default_locale for v in pc.unique(self._meta.column("locale")).to_pylist()}

    def passthrough(self) -> pa.Schema:
        return pa.schema([self.schema.field(c) for c in self.layout.passthrough if c != "locale"])

    def units(self, locale: str) -> list[Unit]:
        out = []
        for f in self.files:
            out.append(Unit(f.uri, locale, None, _identity(f.fs, [f.path])))
        return out

    def view(self, locale: str, units: list[Unit]) -> pa.Table:
        meta = self._meta
        meta = meta.filter(
            pc.and_(
                pc.is_in(meta.column("_source"), pa.array([u.uri for u in units], pa.string())),
                pc.equal(pc.fill_null(meta.column("locale"), self.default_locale), locale),
            )
        )
        n = {c["values"]: c["counts"] for c in pc.value_counts(meta.column(ID)).to_pylist()}
        copies = pa.array([n[i] for i in meta.column(ID).to_pylist()], pa.int64())
        return meta.append_column("copies", copies).append_column(
            "releases_json", pa.array(["[]"] * meta.num_rows, pa.string())
        )

    def selected(self, row: dict[str, Any]) -> bool:
        return True

    def ever_selected(self, row: dict[str, Any]) -> bool:
        return True

    def full_releases(self, units: list[Unit]) -> list[str]:
        return []

    def dataset(self, rows: pa.Table, cfg: CurationConfig):
        import ray

        by_uri = {f.uri: f for f in self.files}
        files = [by_uri[u] for u in sorted(set(rows.column("_source").to_pylist()))]
        ds = ray.data.read_parquet([f.path for f in files], filesystem=files[0].fs)
        # The plan's columns the files lack (the locale, the history) join each read row by id.
        extra = rows.select([ID, *(c for c in rows.column_names if c not in self.schema.names and c not in VIEW_ONLY)])
        return ds.map_batches(
            functools.partial(_canonical_rows, layout=self.layout, extra=extra), batch_format="pyarrow"
        )

    def describe(self) -> dict[str, Any]:
        return {"form": self.form, "inputs": [f.uri for f in self.files]}


def _canonical_rows(batch: pa.Table, layout: InputLayout, extra: pa.Table) -> pa.Table:
    """The rows of ``batch`` the plan wants (``extra``'s ids), with ``extra``'s columns joined on."""
    batch = to_canonical(batch, layout)
    batch = batch.filter(pc.is_in(batch.column(ID), value_set=extra.column(ID)))
    return batch.join(extra, keys=ID, join_type="inner")


def _is_parquet_source(where: Location) -> bool:
    if where.globbed:
        return True
    path = where.path
    info = where.fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return path.endswith(".parquet")
    return info.type == pafs.FileType.Directory


def open_inputs(
    sources: list[str], storage: StorageConfig, split: str | None = None, default_locale: str = "en"
) -> ParquetInputs | ReleaseInputs:
    """Classify every source, refuse mixtures and unknown forms, and read what must be known up front."""
    releases: list[ReleaseSource] = []
    parquet: list[Location] = []
    for src in sources:
        where = locate(src, storage)  # once: every helper below takes the resolved location
        if not where.globbed and where.fs.get_file_info(where.path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input {src!r} does not exist")
        found = classify_release_input(where)
        if found:
            releases += found
        elif _is_parquet_source(where):
            try:
                parquet += list_parquet_files(where)
            except FileNotFoundError:
                raise InputSchemaError(f"{src}: holds no input this tool reads; expected {ACCEPTED_FORMS}") from None
        else:
            raise InputSchemaError(f"{src}: not an input this tool reads; expected {ACCEPTED_FORMS}")
    if releases and parquet:
        raise InputSchemaError("mixing Common Voice releases and Parquet in one run is not supported; run them apart")
    if releases:
        return ReleaseInputs(sorted(set(releases), key=lambda r: r.uri), split or DEFAULT_SPLIT, storage)
    return ParquetInputs(sorted(set(parquet), key=lambda f: f.uri), default_locale)
