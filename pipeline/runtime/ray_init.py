"""The Ray a run uses: the configured cluster, or one of its own on this machine, on loopback."""

from __future__ import annotations

import os

import ray

from pipeline.config import CurationConfig


def ensure_ray(cfg: CurationConfig) -> None:
    if ray.is_initialized():
        return
    address = cfg.ray_address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Logical CPUs above the core count: the Whisper and vLLM actors sit on theirs while the
        # decode tasks and vLLM's tokenizer stages still need slots, or the stream deadlocks.
        # Loopback only: an embedded Ray serves this process, never the network.
        # address="local": a new Ray for this process even if `ray start` left a cluster on this
        # machine, which ray.init() would otherwise join.
        ray.init(
            address="local", num_cpus=max(8, os.cpu_count() or 1), include_dashboard=False, _node_ip_address="127.0.0.1"
        )
