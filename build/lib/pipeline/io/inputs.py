"""What ``--input`` names, resolved once, before any work: Parquet files or Common Voice releases.

Each input form is one class with the same four answers the run needs up front: the row layout,
the input schema (for the output's pass-through columns), how many rows will come in, and which ids
repeat.  Then ``dataset()`` builds the lazy Ray read.  A source that is none of the accepted forms
is an ``InputSchemaError`` naming them, so the CLI exits 2 before Ray or a model starts.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipeline.config import CurationConfig, StorageConfig
from pipeline.io.cv_release import ReleaseSource, classify_release_input, load_split
from pipeline.io.schema import InputLayout, InputSchemaError, check_consistent, inspect_schema, to_canonical
from pipeline.io.storage import list_parquet_files, resolve_filesystem

ACCEPTED_FORMS = (
    "a Common Voice release tarball (cv-corpus-<ver>[-delta]-<date>-<locale>.tar.gz), "
    "an extracted locale folder (…/cv-corpus-<ver>-<date>/<locale>/ with clips/ and TSVs), "
    "a folder or s3:// prefix holding several of either, "
    "or Parquet (a file, a folder of them, or a glob)"
)
DEFAULT_SPLIT = "validated"


def _duplicates(ids: pa.ChunkedArray | pa.Array) -> frozenset[str]:
    counts = pc.value_counts(ids)
    return frozenset(v["values"] for v in counts.to_pylist() if v["counts"] > 1 and v["values"] is not None)


@dataclass
class ParquetInputs:
    """Parquet files in the seed's (``id``, ``audio_bytes``) or Hugging Face's (``audio`` struct) shape."""

    files: list[str]
    storage: StorageConfig
    layout: InputLayout = field(init=False)
    schema: pa.Schema = field(init=False)
    total_rows: int = field(init=False)

    def __post_init__(self) -> None:
        # Footers only: cheap, and every file's schema is checked before any work starts.
        layouts, total = {}, 0
        for f in self.files:
            fs, path = resolve_filesystem(f, self.storage)
            try:
                meta = pq.read_metadata(path, filesystem=fs)
            except (pa.ArrowInvalid, OSError) as exc:
                raise InputSchemaError(f"{f}: not a readable Parquet file ({exc}); expected {ACCEPTED_FORMS}") from None
            schema = meta.schema.to_arrow_schema()
            if not layouts:
                self.schema = schema
            layouts[f] = inspect_schema(schema, f)
            total += meta.num_rows
        self.layout = check_consistent(layouts)
        self.total_rows = total

    @functools.cached_property
    def _ids(self) -> pa.ChunkedArray:
        """The id column of every file, read once (duplicates before the run, the id check after)."""
        chunks = []
        for f in self.files:
            fs, path = resolve_filesystem(f, self.storage)
            col = pq.read_table(path, columns=["id"], filesystem=fs).column("id").cast(pa.string())
            chunks += col.chunks
        return pa.chunked_array(chunks, pa.string())

    def duplicate_ids(self) -> frozenset[str]:
        return _duplicates(self._ids)

    def expected_ids(self, limit: int | None) -> Counter | None:
        """Every id the output must hold, as often as the input holds it (a row without an id counts
        under None); None when ``limit`` makes the exact rows Ray's reader's to choose."""
        if limit is not None and limit < self.total_rows:
            return None
        return Counter(i or None for i in self._ids.to_pylist())

    def describe(self) -> dict[str, Any]:
        return {"form": "parquet", "inputs": self.files}

    def locales(self) -> set[str]:
        """The ``locale`` values of the rows, when the files have that column (one column read)."""
        if "locale" not in self.schema.names:
            return set()
        found: set[str] = set()
        for f in self.files:
            fs, path = resolve_filesystem(f, self.storage)
            col = pq.read_table(path, columns=["locale"], filesystem=fs).column("locale")
            found |= {v for v in pc.unique(col).to_pylist() if v}
        return found

    def dataset(self, cfg: CurationConfig):
        import ray

        fs, _ = resolve_filesystem(self.files[0], cfg.storage)
        paths = [resolve_filesystem(f, cfg.storage)[1] for f in self.files]
        ds = ray.data.read_parquet(paths, filesystem=fs)
        if cfg.limit is not None:
            ds = ds.limit(cfg.limit)
        return ds.map_batches(functools.partial(to_canonical, layout=self.layout), batch_format="pyarrow")


@dataclass
class ReleaseInputs:
    """One split of one or more Common Voice releases: its TSV rows are read here, its clips later."""

    releases: list[ReleaseSource]
    split: str
    storage: StorageConfig
    limit: int | None = None
    tables: list[pa.Table] = field(init=False)

    def __post_init__(self) -> None:
        self.tables = []
        remaining = self.limit
        for src in self.releases:
            if remaining is not None and remaining <= 0:
                break
            table = load_split(src, self.split, self.storage, limit=remaining)
            self.tables.append(table)
            if remaining is not None:
                remaining -= table.num_rows
        self.releases = self.releases[: len(self.tables)]

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([t.schema for t in self.tables], promote_options="permissive")

    @property
    def layout(self) -> InputLayout:
        passthrough = tuple(n for n in self.schema.names if n not in {"id", "sentence"})
        return InputLayout(audio_column="audio_bytes", has_sentence=True, passthrough=passthrough)

    @property
    def total_rows(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def duplicate_ids(self) -> frozenset[str]:
        # Across releases ids may repeat (a delta never repeats its full release's clips, but two
        # copies of one release would): quarantine them like duplicates within a file.
        return _duplicates(pa.chunked_array([c for t in self.tables for c in t.column("id").chunks], pa.string()))

    def expected_ids(self, limit: int | None) -> Counter:
        return Counter(i for t in self.tables for i in t.column("id").to_pylist())  # limit already applied

    def locales(self) -> set[str]:
        found = {v for t in self.tables for v in pc.unique(t.column("locale")).to_pylist() if v}
        return found | {s.locale for s in self.releases}

    def describe(self) -> dict[str, Any]:
        return {
            "form": "common-voice",
            "inputs": [s.uri for s in self.releases],
            "split": self.split,
            "releases": [
                {
                    "uri": s.uri,
                    "form": s.form,
                    "release": s.release,
                    "locale": s.locale,
                    "delta": s.delta,
                    "rows": t.num_rows,
                }
                for s, t in zip(self.releases, self.tables, strict=True)
            ],
        }

    def dataset(self, cfg: CurationConfig):
        import ray

        from pipeline.io.cv_datasource import ReleaseDatasource

        schema = self.schema
        tables = [t.cast(pa.schema([schema.field(n) for n in t.schema.names])) for t in self.tables]
        return ray.data.read_datasource(
            ReleaseDatasource(list(zip(self.releases, tables, strict=True)), cfg.storage, cfg.reader)
        )


def _is_parquet_source(uri: str, storage: StorageConfig) -> bool:
    fs, path = resolve_filesystem(uri, storage)
    if any(c in path for c in "*?["):
        return True
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return path.endswith(".parquet")
    return info.type == pafs.FileType.Directory


def open_inputs(
    sources: list[str], storage: StorageConfig, split: str | None = None, limit: int | None = None
) -> ParquetInputs | ReleaseInputs:
    """Classify every source, refuse mixtures and unknown forms, and read what must be known up front."""
    releases: list[ReleaseSource] = []
    parquet: list[str] = []
    for src in sources:
        fs, path = resolve_filesystem(src, storage)
        if not any(c in path for c in "*?[") and fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"input {src!r} does not exist")
        found = classify_release_input(src, storage)
        if found:
            releases += found
        elif _is_parquet_source(src, storage):
            try:
                parquet += list_parquet_files(src, storage)
            except FileNotFoundError:
                raise InputSchemaError(f"{src}: holds no input this tool reads; expected {ACCEPTED_FORMS}") from None
        else:
            raise InputSchemaError(f"{src}: not an input this tool reads; expected {ACCEPTED_FORMS}")
    if releases and parquet:
        raise InputSchemaError("mixing Common Voice releases and Parquet in one run is not supported; run them apart")
    if releases:
        return ReleaseInputs(sorted(set(releases), key=lambda r: r.uri), split or DEFAULT_SPLIT, storage, limit)
    return ParquetInputs(parquet, storage)
