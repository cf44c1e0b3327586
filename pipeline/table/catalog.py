"""The dataset's home: an Iceberg catalog, and per locale a clips table and an audio table beside it.

- Embedded default: pyiceberg's SQL catalog on a SQLite file under the output root, the warehouse
  beside it (``OUT/catalog.db``, ``OUT/warehouse/``).  No server.
- Cluster profile: the same SQL catalog on Postgres (``table.catalog_uri``, password from
  ``PGPASSWORD``), the warehouse on S3/MinIO; or a REST catalog (``http(s)://``).

One table pair per locale (``curate.en_clips``, ``curate.en_audio``): a locale is a dataset of its
own (its models, its language, its normalizer), nightly runs of two locales never conflict, and a
trainer loads one language.  Audio never changes and is large; votes, status and decisions change
every release.  So the audio sits in its own append-only table keyed by its sha256, and an update of a
clip's metadata rewrites only the clips table's small files, never audio.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pipeline.config import CurationConfig

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog
    from pyiceberg.table import Table

# What an output root of ours holds; anything else means it is not one.
ROOT_ENTRIES = frozenset({"catalog.db", "warehouse", "_logs"})
# Our own commit loop re-plans on a conflict (see commit.py); pyiceberg's retry would replay a stale plan.
# A data file is cut every 128 MiB of Arrow data (pyiceberg's default, 512 MiB, is what a streamed write
# holds in memory), and a Parquet row group every 64k rows, so a reader decodes a bounded piece at once.
TABLE_PROPERTIES = {
    "commit.retry.num-retries": "0",
    "format-version": "2",
    "write.target-file-size-bytes": str(128 << 20),
    "write.parquet.row-group-limit": "65536",
}
# The clips table's rows are small (about 1.3 KiB of Arrow each), so a 128 MiB file holds 100,000 clips,
# and a night's re-votes on 1,000 of the newest clips rewrote a file of 100,000 (1 of 19 at 2M clips).
# Files of 32 MiB (about 25,000 clips) rewrite a quarter of that, and 2M clips are still only ~80
# files.  The audio table keeps 128 MiB: its rows are the clips' audio, a few hundred per 32 MiB.
CLIPS_TABLE_PROPERTIES = {**TABLE_PROPERTIES, "write.target-file-size-bytes": str(32 << 20)}


class TableError(RuntimeError):
    """The output cannot be used as a table root, or its catalog cannot be reached: before any work."""


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def locale_slug(locale: str) -> str:
    """``zh-CN`` -> ``zh_cn``: a table-name-safe locale."""
    return re.sub(r"[^a-z0-9]+", "_", locale.lower()).strip("_") or "und"


def _local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _abs(path: str) -> str:
    return os.path.abspath(path[len("file://") :] if path.startswith("file://") else path)


@dataclass(frozen=True)
class TableRoot:
    """Where one output's tables live: the catalog to load and the namespace inside it."""

    output: str
    catalog_kwargs: dict[str, str] = field(repr=False)
    namespace: str

    @property
    def catalog_uri(self) -> str:
        return redact_uri(self.catalog_kwargs["uri"])

    def overlap(self, path: str) -> str | None:
        """The table's own local folder or file (its root, warehouse or SQLite catalog) that ``path`` is,
        holds or lies inside; None when apart from all of them."""
        uri, warehouse = self.catalog_kwargs["uri"], self.catalog_kwargs["warehouse"]
        own = [_abs(p) for p in (self.output, warehouse) if _local(p)]
        if uri.startswith("sqlite:///"):
            own.append(os.path.abspath(uri[len("sqlite:///") :]))
        path = os.path.realpath(path)
        for mine in map(os.path.realpath, own):
            if os.path.commonpath([path, mine]) in (path, mine):
                return mine
        return None

    def catalog(self) -> Catalog:
        from pyiceberg.catalog import load_catalog

        uri = self.catalog_kwargs["uri"]
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri[len("sqlite:///") :]) or ".", exist_ok=True)
        try:
            try:
                return load_catalog("curate", **self.catalog_kwargs)
            except Exception as exc:
                if "already exists" not in str(exc):
                    raise
                # Another writer created the catalog's own tables at the same moment: they exist now.
                return load_catalog("curate", **self.catalog_kwargs)
        except Exception as exc:  # a driver error names the host, never the password we hold apart
            raise TableError(
                f"cannot reach the catalog {self.catalog_uri}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            ) from None

    @property
    def fresh(self) -> bool:
        """An embedded SQLite catalog not created yet: no table, no ledger, nothing to read."""
        uri = self.catalog_kwargs["uri"]
        return uri.startswith("sqlite:///") and not os.path.exists(uri[len("sqlite:///") :])

    def existing(self, identifier: str) -> Table | None:
        """The table if it exists, without creating the catalog or the table."""
        from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

        if self.fresh:
            return None
        try:
            return self.catalog().load_table(identifier)
        except (NoSuchTableError, NoSuchNamespaceError):
            return None

    def preflight(self, storage) -> None:
        """Write and delete a probe in the warehouse, so a missing bucket or a read-only disk fails in
        seconds, before any engine starts, not at the first data file hours later."""
        import uuid

        from pipeline.runtime.storage import resolve_filesystem

        warehouse = self.catalog_kwargs["warehouse"]
        if _local(warehouse):  # a local root is created at the first commit: check, write nothing yet
            existing = _abs(warehouse)
            while not os.path.exists(existing):
                existing = os.path.dirname(existing)
            if not os.access(existing, os.W_OK):
                raise TableError(f"cannot write to the warehouse {warehouse}: {existing} is not writable")
            return
        try:
            fs, base = resolve_filesystem(warehouse, storage)
            fs.create_dir(base, recursive=True)
            probe = f"{base}/.curate-probe-{uuid.uuid4().hex[:8]}"
            with fs.open_output_stream(probe) as out:
                out.write(b"ok")
            fs.delete_file(probe)
        except OSError as exc:
            raise TableError(f"cannot write to the warehouse {warehouse}: {str(exc).splitlines()[0][:200]}") from None

    def identifiers(self, locale: str) -> tuple[str, str]:
        slug = locale_slug(locale)
        return f"{self.namespace}.{slug}_clips", f"{self.namespace}.{slug}_audio"

    def locales(self, catalog: Catalog) -> list[str]:
        """The locales this root holds a clips table of, as their runs named them (``sv-SE``, not ``sv_se``)."""
        from pyiceberg.exceptions import NoSuchNamespaceError

        try:
            names = sorted(t[-1] for t in catalog.list_tables(self.namespace) if t[-1].endswith("_clips"))
        except NoSuchNamespaceError:
            return []
        found = []
        for name in names:  # the newest run's word (a compaction's snapshot names no locale)
            said = [s.summary.additional_properties.get("curate.locale") for s in
                    catalog.load_table(f"{self.namespace}.{name}").snapshots() if s.summary]  # fmt: skip
            found.append(next((loc for loc in reversed(said) if loc), name.removesuffix("_clips")))
        return found

    def pick_locale(self, catalog: Catalog, locale: str | None) -> str:
        """``locale``, or with none given the one locale the root holds; a ``TableError`` naming the
        root's locales when it has no table of ``locale``, or several and none was given."""
        have = self.locales(catalog)
        if locale is None and len(have) == 1:
            return have[0]
        if locale is not None and any(locale_slug(h) == locale_slug(locale) for h in have):
            return locale
        if not have:
            return locale or "en"  # the caller's load names the missing table
        where = f"{self.output} has no table of locale {locale!r}" if locale else f"{self.output} holds several locales"
        raise TableError(f"{where}; its locales: {', '.join(have)} (pass one as --locale)")


# In the catalog's and the warehouse's URIs these begin a query or a fragment: "out#1" put the table's
# metadata at "out" and "out?x" its SQLite catalog at "out", beside the root, and the run then failed.
URI_SPECIAL = "#?"


def _uri_safe(path: str, what: str) -> None:
    bad = [c for c in URI_SPECIAL if c in path]
    if bad:
        raise TableError(
            f"{what} {path}: a table's folder cannot hold {' or '.join(repr(c) for c in bad)} (its catalog and "
            "warehouse are URIs, where that ends the path); choose another folder. Nothing was written"
        )


def table_root(output: str, cfg: CurationConfig) -> TableRoot:
    """The catalog and warehouse for ``output``, from the config and the environment."""
    t, storage = cfg.table, cfg.storage
    _uri_safe(output, "output")
    if t.warehouse:
        _uri_safe(t.warehouse, "table.warehouse")
    uri = os.environ.get("CURATE_CATALOG_URI") or t.catalog_uri
    if t.warehouse:
        # A plain path becomes a file:// URI, so every data file the table references names its scheme.
        warehouse = f"file://{_abs(t.warehouse)}" if _local(t.warehouse) else t.warehouse
    elif _local(output):
        warehouse = f"file://{_abs(output)}/warehouse"
    else:
        warehouse = f"{output.rstrip('/')}/warehouse"
    if uri is None:
        if not _local(output):
            raise TableError(
                f"output {output} is not on a local disk, so its catalog cannot be a SQLite file beside it; "
                "set table.catalog_uri (postgresql+psycopg2://USER@HOST/DB with PGPASSWORD, "
                "sqlite:////PATH/catalog.db, or a REST catalog's http(s):// URL)"
            )
        uri = f"sqlite:///{_abs(output)}/catalog.db"
    kwargs: dict[str, Any] = {"uri": uri, "warehouse": warehouse}
    kwargs["type"] = "rest" if uri.startswith(("http://", "https://")) else "sql"
    if warehouse.startswith("s3://"):
        # Credentials stay in the environment (pyarrow's S3 reads AWS_*): never in properties we pass on.
        endpoint = storage.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        region = storage.s3_region or os.environ.get("AWS_REGION")
        if endpoint:
            kwargs["s3.endpoint"] = endpoint
        if region:
            kwargs["s3.region"] = region
        kwargs["s3.retry-strategy-impl"] = "pipeline.runtime.storage.s3_retry"
    return TableRoot(output=output, catalog_kwargs=kwargs, namespace=t.namespace)


def check_output_root(output: str) -> None:
    """A local output root is empty, missing, or ours; anything else is refused before any work."""
    if not _local(output):
        return
    path = _abs(output)
    if not os.path.exists(path):
        return
    if not os.path.isdir(path):
        raise TableError(f"output {output} is a file, not a folder for the dataset's table")
    foreign = sorted(set(os.listdir(path)) - ROOT_ENTRIES)
    if not foreign:
        return
    hint = (
        " (it holds an earlier per-shard output, manifest.json and curated/; write the table to a new root)"
        if {"manifest.json", "curated"} & set(foreign)
        else ""
    )
    raise TableError(
        f"output {output} is neither empty nor a table root (it holds {', '.join(foreign[:5])}){hint}; "
        "nothing was written"
    )


def load_or_create(catalog: Catalog, identifier: str, schema, properties: dict[str, str] | None = None) -> Table:
    """The table, created empty with ``schema`` and ``properties`` (``TABLE_PROPERTIES``) if missing; an
    older schema gains the new columns."""
    properties = properties or TABLE_PROPERTIES
    from pyiceberg.exceptions import NoSuchTableError

    namespace = identifier.rsplit(".", 1)[0]
    try:
        catalog.create_namespace_if_not_exists(namespace)
    except Exception:
        # A writer that created it between pyiceberg's check and its insert: the SQL catalog raises the
        # database's own IntegrityError then, not NamespaceAlreadyExists.  The same outcome.
        if not catalog.namespace_exists(namespace):
            raise

    def bring_up_to_date(table: Table) -> None:
        evolve(table, schema)
        missing = {k: v for k, v in properties.items() if k not in table.properties and k != "format-version"}
        if missing:  # a table made by an earlier version: today's write settings, once
            with table.transaction() as txn:
                txn.set_properties(missing)

    try:
        return update_metadata(catalog, identifier, f"bring {identifier} up to date", bring_up_to_date)
    except NoSuchTableError:
        return catalog.create_table_if_not_exists(identifier, schema=schema, properties=properties)


def update_metadata(catalog: Catalog, identifier: str, what: str, change) -> Table:
    """Apply ``change`` (an idempotent metadata update that looks at the table before it writes) to the
    table as it is now, reloading and applying it again when another writer committed first: two runs
    that start together both open the table, and only one of their first commits can land on a version.
    pyiceberg refreshes the table object on each commit, so the table returned is the current one."""
    from pipeline.table.commit import retry

    def attempt() -> Table:
        table = catalog.load_table(identifier)
        change(table)
        return table

    return retry(what, attempt)


def evolve(table: Table, schema) -> None:
    """Add the columns ``schema`` has and the table lacks; nothing is ever rewritten or dropped."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    have = set(schema_to_pyarrow(table.schema()).names)
    if set(schema.names) - have:
        with table.update_schema() as update:
            update.union_by_name(schema)
