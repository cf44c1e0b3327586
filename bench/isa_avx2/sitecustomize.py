"""Makes this process see an AVX2-only x86 CPU (no AVX-512, AVX-VNNI or AMX), for bench.judge_dtype --isa avx2.

Put this folder first on PYTHONPATH (Ray workers and vLLM's engine process inherit it) together with
the libraries' own ISA caps (bench.judge_dtype.AVX2_ENV).  vLLM-CPU picks its kernels
(``vllm._C_AVX2``, the oneDNN vs "torch linear" GEMM path, attention ISA) from
``torch.cpu.get_capabilities()``, and ``pipeline.runtime.hardware.cpu_flags()`` decides ``judge.dtype=auto``;
both are masked here once their modules are first imported, so nothing is imported early.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import MappingProxyType

MASKED = ("avx512", "amx", "avx_vnni", "avx10", "avx_ne_convert")


def _masked_capabilities(real):
    def get_capabilities():
        return MappingProxyType({k: (False if k.startswith(MASKED) else v) for k, v in real().items()})

    return get_capabilities


def _masked_flags(real):
    def cpu_flags(*args, **kwargs):
        return frozenset(f for f in real(*args, **kwargs) if not f.startswith(MASKED))

    return cpu_flags


PATCHES = {
    "torch.cpu": ("get_capabilities", _masked_capabilities),
    "pipeline.runtime.hardware": ("cpu_flags", _masked_flags),
}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None:
            return spec
        attr, wrap = PATCHES[name]
        exec_module = spec.loader.exec_module

        def exec_then_patch(module):
            exec_module(module)
            setattr(module, attr, wrap(getattr(module, attr)))

        spec.loader.exec_module = exec_then_patch
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
