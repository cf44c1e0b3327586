"""A release tarball's split is read by one Ray Data task (gzip reads only in order), so that task holds
every row of the split going through the engines: all 2 M of English on a first night.  A run of a
5,000-clip tarball failed before any clip was read (Ray names a read task over 1 MiB by its function's
``__name__``, and the task's function had none); the task now names itself and ships its rows by
reference."""

from __future__ import annotations

import pyarrow as pa
import pytest
import ray
from ray import cloudpickle

from pipeline.columns import AUDIO, READ_ERROR
from pipeline.commonvoice.datasource import ReleaseDatasource
from pipeline.commonvoice.reader import MISSING_CLIP
from pipeline.config import StorageConfig, build_config
from pipeline.io.inputs import VIEW_ONLY, ReleaseInputs, open_inputs, view_table
from scripts.make_cv_release import build_release

pytestmark = pytest.mark.slow

LISTED = 8_000  # rows a split lists beyond the archive's few clips: ~2.5 MB of TSV rows


def _padded(view: pa.Table, n: int) -> pa.Table:
    """``view`` and ``n`` more rows of its first, each a clip of its own that the archive lacks."""
    pad = view.take(pa.array([0] * n))
    ids = pa.array([f"common_voice_en_{90_000_000 + i}.mp3" for i in range(n)])
    pad = pad.set_column(pad.schema.get_field_index("id"), "id", ids)
    return pa.concat_tables([view, pad])


def test_a_tarball_split_of_thousands_of_clips_reads_every_row_once(tmp_path):
    release = build_release(tmp_path, clips=6)
    inputs = open_inputs([str(release.path)], StorageConfig())
    assert isinstance(inputs, ReleaseInputs)
    rows = _padded(view_table(inputs, "en", inputs.units("en")), LISTED)
    cfg = build_config()

    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        # What Ray ships and names: one task for the tarball, small whatever the split's size.
        parts = [(inputs.releases[0], rows.drop_columns([c for c in VIEW_ONLY if c in rows.column_names]))]
        (task,) = ReleaseDatasource(parts, cfg.storage, cfg.reader).get_read_tasks(1)
        assert task.read_fn.__name__ == "read_tarball"
        assert len(cloudpickle.dumps(task)) < 64 << 10

        out = inputs.dataset(rows, cfg).take_all()
    finally:
        ray.shutdown()

    assert len(out) == rows.num_rows == LISTED + 6
    assert sorted(r["id"] for r in out) == sorted(rows.column("id").to_pylist())
    read = {r["id"]: r for r in out}
    present = [p for p in (r["path"] for r in release.rows) if p != release.missing]
    assert all(read[p][AUDIO] and read[p][READ_ERROR] is None for p in present)
    absent = set(read) - set(present)
    assert len(absent) == LISTED + 1 and all(read[i][READ_ERROR] == MISSING_CLIP for i in absent)


def test_a_parquet_mirror_is_read_by_the_row_groups_that_hold_the_planned_rows(tmp_path):
    """``--limit 20`` over a 1.6 GB mirror of ten files read all of them (29 s of its engines step, 15 s now):
    a file whose planned rows are few is read by the row groups holding them.  What comes out is the same."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from pipeline.io.inputs import ParquetInputs
    from pipeline.io.parquet_rows import row_group_reads
    from scripts.make_cv_release import sample_clips

    clips = sample_clips(4)
    for f in range(3):  # Hugging Face's shape: Common Voice's path as the id, the audio a struct
        rows = [{"path": f"en/common_voice_en_{f * 1000 + i}.mp3", "audio": {"bytes": clips[i % 4][0], "path": None},
                 "sentence": clips[i % 4][1]} for i in range(200)]  # fmt: skip
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / f"train-{f}.parquet", row_group_size=20)
    inputs = open_inputs([str(tmp_path)], StorageConfig())
    assert isinstance(inputs, ParquetInputs)
    view = view_table(inputs, "en", inputs.units("en"))
    # A few rows of file 0 (groups 0 and 7), every row of file 1, one of file 2 (group 9).
    few = ["common_voice_en_3.mp3", "common_voice_en_5.mp3", "common_voice_en_141.mp3", "common_voice_en_2199.mp3"]
    planned = pc.or_(
        pc.is_in(view.column("id"), pa.array(few)), pc.ends_with(view.column("_source"), "train-1.parquet")
    )
    rows = view.filter(planned)
    files = sorted(inputs.files, key=lambda f: f.uri)
    by_file = {uri.rsplit("/", 1)[-1]: groups for uri, groups, _ in row_group_reads(files, rows, inputs.layout)}
    assert by_file == {"train-0.parquet": [0, 7], "train-1.parquet": list(range(10)), "train-2.parquet": [9]}
    assert row_group_reads(files, view, inputs.layout) == []  # every row planned: each file read whole

    cfg = build_config()
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        out = inputs.dataset(rows, cfg).take_all()
        whole = inputs.dataset(view, cfg).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["id"] for r in out) == sorted(rows.column("id").to_pylist()) and len(out) == 204
    by_id = {r["id"]: r for r in whole}
    assert len(whole) == 600 and all(r[AUDIO] == by_id[r["id"]][AUDIO] and r[AUDIO] for r in out)
