"""The progress counter on a real local Ray: each locale of one run counts into a counter of its own.

The locales of one ``curate run`` share a run id.  A Ray worker that counted rows for the first locale
keeps a handle to that locale's counter, which is stopped when the locale is done; when the second
locale's counter had the same name, every batch such a worker ran for it was counted into the stopped one,
and the Persian table of a two-locale run showed no judge or gates line in its summary.  A count is also
waited for, so a batch's count is in before its task ends: sent and forgotten, it could arrive after the run
read its totals.
"""

from __future__ import annotations

import pyarrow as pa
import pytest
import ray

from pipeline.show.progress import _report, stage_stats, start_counter, stop_counter

pytestmark = pytest.mark.slow


@ray.remote(num_cpus=0)
class Worker:
    """One worker process, as Ray reuses one for the batches of several runs."""

    def count(self, counter: str, stage: str, rows: int) -> None:
        batch = pa.table({"id": [str(i) for i in range(rows)]})
        _report(counter, stage, batch, batch, 0.1)


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


def test_a_worker_that_counted_for_one_locale_counts_the_next_into_its_own_counter(local_ray):
    worker = Worker.remote()
    first, first_name = start_counter("run-1")
    ray.get(worker.count.remote(first_name, "gates", 3))
    assert stage_stats(first)["gates"]["out"] == 3
    stop_counter(first)

    second, second_name = start_counter("run-1")  # the next locale of the same run
    ray.get(worker.count.remote(second_name, "gates", 5))
    ray.get(worker.count.remote(second_name, "judge", 5))
    stats = stage_stats(second)
    assert {s: int(t["out"]) for s, t in stats.items()} == {"gates": 5, "judge": 5}
    stop_counter(second)
