"""What this machine's CPU can do, and the defaults that follow from it.

vLLM-CPU runs bfloat16 fast only with AVX-512 BF16 or AMX instructions; elsewhere (AVX2-only CPUs,
common in the cloud) it falls back to slow "torch linear" paths, and float32 is about twice as fast
(225 s vs 120 s for the 40-clip sample on a 2-core AVX2 EPYC, measured 2026-11-25).  ``auto`` picks
per machine; an explicit ``--set judge.dtype=...`` always wins.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

BF16_FLAGS = ("avx512_bf16", "amx_bf16")
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


@functools.cache
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def judge_dtype(flags: frozenset[str], on_gpu: bool = False) -> str:
    """The judge's dtype: float16 on a GPU; on a CPU with ``flags``, bfloat16 only where it computes it natively."""
    if on_gpu:
        return "float16"
    return "bfloat16" if any(f in flags for f in BF16_FLAGS) else "float32"


def describe(flags: frozenset[str], chosen: dict[str, Any]) -> dict[str, Any]:
    """For the run result: the features that decided, and what was chosen."""
    return {
        "cpu_flags": sorted(f for f in REPORTED_FLAGS if f in flags),
        "cpu_count": os.cpu_count(),
        "chosen": chosen,
    }
