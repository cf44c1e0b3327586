"""Where a shard runs: three launchers behind one interface, chosen in one place.

- ``ChildProcessLauncher`` (no Ray address): a child ``curate run`` with its own local Ray, the
  embedded default.  A crash in Ray or vLLM fails the shard (and it is retried) instead of the
  flow-run process, and each shard starts from fresh memory.
- ``InClusterLauncher`` (``auto``): this process already is a Ray worker (prefect-ray's
  ``RayTaskRunner``), so the DAG runs here, on the cluster.
- ``RayJobLauncher`` (``http://HEAD:8265``): a Ray Job on a remote cluster.  Prefect's and Anyscale's
  docs warn against ``ray://`` client connections for long work: a 30 s network drop kills them.

Each returns the shard's ``RunResult``: the child and the Ray Job print it as their last line
(``curate run --emit-result``), which never reaches Prefect's logs.
"""

from pipeline.launch.base import (
    JobTimedOut,
    RayJobFailed,
    ShardFailed,
    ShardLauncher,
    ShardRefused,
    ShardTimedOut,
    parse_result,
    shard_cli_args,
)
from pipeline.launch.process import ChildProcessLauncher, InClusterLauncher, stop_shard, with_parent_death
from pipeline.launch.ray_jobs import RayJobLauncher, RayJobUnreachable

__all__ = [
    "ChildProcessLauncher",
    "InClusterLauncher",
    "JobTimedOut",
    "RayJobFailed",
    "RayJobLauncher",
    "RayJobUnreachable",
    "ShardFailed",
    "ShardLauncher",
    "ShardRefused",
    "ShardTimedOut",
    "launcher_for",
    "parse_result",
    "runs_in_cluster",
    "shard_cli_args",
    "stop_shard",
    "with_parent_death",
]


def launcher_for(ray_address: str | None) -> ShardLauncher:
    """The one place a Ray address picks where shards run."""
    if not ray_address:
        return ChildProcessLauncher()
    if ray_address == "auto":
        return InClusterLauncher()
    if ray_address.startswith(("http://", "https://")):
        return RayJobLauncher(ray_address)
    if ray_address.startswith("ray://"):
        raise ValueError(
            f"ray_address {ray_address!r}: ray:// client connections die on a 30 s network drop; use "
            "http://HEAD:8265 (Ray Jobs), 'auto' inside the cluster, or none for a local Ray"
        )
    return ChildProcessLauncher(ray_address)  # host:port of a cluster this machine is part of


def runs_in_cluster(ray_address: str | None) -> bool:
    """Whether shards run as Ray tasks of this cluster (prefect-ray), decided by ``launcher_for`` alone."""
    return isinstance(launcher_for(ray_address), InClusterLauncher)
