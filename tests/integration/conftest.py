from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import ray


@pytest.fixture(autouse=True, scope="module")
def _fresh_ray_per_module():
    """In-process flows start an embedded Ray; each module starts from none."""
    yield
    if ray.is_initialized():
        ray.shutdown()


def split_sample(table, out_dir, parts: int, rows_each: int | None = None):
    """Write the sample as ``parts`` Parquet files of a split directory; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = rows_each or table.num_rows // parts
    paths = []
    for i in range(parts):
        p = out_dir / f"part-{i:03d}.parquet"
        pq.write_table(table.slice(i * n, n), p)
        paths.append(p)
    return paths
