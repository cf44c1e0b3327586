"""A cumulative full release against a table of 100,000 scored clips, through the real CLI (#30).

The table is seeded through the product's own writer (``bench.release_scale``: the same rows the
release-scale benchmark uses, under the engine key the run computes, so none of them needs an engine);
the release lists every clip again, 30% with new votes, 0.5% moved to invalidated, 0.1% with a reported
sentence, 0.05% no longer listed, plus four new clips with real audio.  One ``curate run``, judge off.
Every count the plan reports is checked against what was planted, and the table against both.
"""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from bench.release_scale import FULL, JUDGE_OFF, N_RELEASE, run_cli, seed_table, write_full_release
from tests.table import tables

pytestmark = pytest.mark.slow

N, NEW = 100_000, 4


def test_a_full_release_of_100k_clips_applies_every_change_once(tmp_path):
    out, src = tmp_path / "out", tmp_path / "downloads"
    rng = np.random.default_rng(N)
    seeded = seed_table(out, N, ["judge.locales=[]"], rng, rows_per_file=25_000)
    folder, planted = write_full_release(src, seeded, NEW, rng)
    run = run_cli(["--input", str(folder), "--output", str(out), *JUDGE_OFF], tmp_path / "full.log")

    (loc,) = run["result"]["locales"]
    ch = loc["changes"]
    moved, reported, deleted = set(planted.moved), set(planted.reported), set(planted.deleted)
    assert moved and reported and deleted and not (moved & reported) and not (deleted & (moved | reported))
    # The plan: the new clips through the engines, every listed clip's metadata updated, the moved,
    # reported and deleted ones withdrawn, nothing held, nothing scored again.
    assert ch["engine_rows"] == ch["added"] == NEW
    assert ch["updated"] == N - len(deleted) and ch["unchanged"] == 0
    assert ch["withdrawn"] == len(moved) + len(reported) + len(deleted)
    assert ch["deleted_from_release"] == len(deleted)
    assert ch["rescored"] == ch["held"] == ch["unscored"] == 0
    assert loc["table_rows"] == N + NEW

    # The table says the same, one row per clip.
    clips, _ = tables(out)
    cols = ["id", "cv_status", "kept", "reasons", "up_votes", "last_release", "releases", "transcription"]
    t = clips.scan(selected_fields=tuple(cols)).to_arrow()
    assert t.num_rows == N + NEW and pc.count_distinct(t.column("id")).as_py() == N + NEW
    rows = {r["id"]: r for r in t.select(["id", "cv_status", "kept", "reasons"]).to_pylist()}
    assert {i for i, r in rows.items() if r["cv_status"] == "invalidated"} == moved
    assert {i for i, r in rows.items() if r["cv_status"] == "deleted"} == deleted
    assert all(not rows[i]["kept"] and "cv_invalidated" in rows[i]["reasons"] for i in moved)
    assert all(not rows[i]["kept"] and "sentence_reported" in rows[i]["reasons"] for i in reported)
    assert all(not rows[i]["kept"] and rows[i]["reasons"] == ["cv_deleted"] for i in deleted)
    assert all(rows[i]["cv_status"] == "validated" for i in planted.new)
    # Votes: exactly the planted ones went up by one; every listed clip's history gained the release.
    seeded_votes = dict(zip(seeded.ids.to_pylist(), seeded.up_votes.tolist(), strict=True))
    votes = dict(zip(t.column("id").to_pylist(), t.column("up_votes").to_pylist(), strict=True))
    assert sum(votes[i] - v for i, v in seeded_votes.items()) == planted.voted
    last = pc.value_counts(t.column("last_release")).to_pylist()
    assert {d["values"]: d["counts"] for d in last} == {FULL: N + NEW - len(deleted), N_RELEASE: len(deleted)}
    # N's entry and N+1's on every seeded clip (a deleted one's says so), one on each new clip.
    lengths = pc.list_value_length(t.column("releases")).to_numpy()
    assert int((lengths == 2).sum()) == N and int((lengths == 1).sum()) == NEW
    kept = int(pc.sum(t.column("kept")).as_py())
    assert kept == N - ch["withdrawn"] + sum(rows[i]["kept"] for i in planted.new)
