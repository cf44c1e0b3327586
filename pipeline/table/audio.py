"""The audio table: each clip's bytes once, keyed by their sha256; an append adds only what it lacks."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.columns import AUDIO_SHA
from pipeline.table.commit import COMMIT_ID, CommitUnknown, commit_txn, delete_files, read_file, retry, write_rows

if TYPE_CHECKING:
    from pyiceberg.manifest import DataFile
    from pyiceberg.table import Table

log = logging.getLogger("pipeline")


def append_audio(load: Callable[[], Table], files: Sequence[DataFile], properties: dict[str, str]) -> Table | None:
    """Add the audio of ``files`` whose sha256 the table does not hold yet, in one snapshot.

    Audio is content-addressed: a clip scored again (new models) or listed by two releases keeps its
    one copy.  A file with no new audio is dropped; one with some is rewritten to hold only the new.
    The table's shas are read a file at a time and only ours are kept, so memory holds this run's.
    """
    import pyarrow.parquet as pq

    what = "commit to the audio table"

    def attempt() -> Table | None:
        table = load()
        ours = {}
        for f in files:
            with table.io.new_input(f.file_path).open() as stream:
                ours[f.file_path] = pq.read_table(stream, columns=[AUDIO_SHA]).column(AUDIO_SHA).cast(pa.string())
        candidates = pa.chunked_array([c for c in ours.values()], pa.string()).combine_chunks() if ours else None
        taken = _existing_shas(table, candidates) if candidates is not None else set()
        keep, written, dropped = [], [], []
        for f in files:
            shas = ours[f.file_path].to_pylist()
            first = {s: i for i, s in reversed(list(enumerate(shas)))}
            mask = [s not in taken and first[s] == i for i, s in enumerate(shas)]
            taken |= set(shas)
            if all(mask):
                keep.append(f)
                continue
            dropped.append(f)
            if any(mask):
                new = write_rows(table, read_file(table, f).filter(pa.array(mask)))
                written += new
                keep += new
        if not keep:
            delete_files(table, dropped)
            return None
        token = uuid.uuid4().hex
        txn = table.transaction()
        try:
            with txn.update_snapshot(snapshot_properties={**properties, COMMIT_ID: token}).fast_append() as snap:
                for f in keep:
                    snap.append_data_file(f)
            committed = commit_txn(txn, load, token, what)
        except CommitUnknown:
            raise
        except Exception:
            delete_files(table, written)
            raise
        delete_files(table, dropped)
        return committed

    return retry(what, attempt)


def _existing_shas(table: Table, candidates: pa.Array) -> set[str]:
    """Which of ``candidates`` the table holds already."""
    from pipeline.table.scan import file_batches

    found: set[str] = set()
    for _, t in file_batches(table, (AUDIO_SHA,)):
        col = t.column(AUDIO_SHA).cast(pa.string())
        found |= set(col.filter(pc.is_in(col, value_set=candidates)).to_pylist())
    return found
