"""Every benchmark the entry point lists exists and has a ``main``; every runnable script is listed."""

from __future__ import annotations

import ast

from bench.__main__ import BENCHMARKS
from tests.conftest import REPO

HELPERS = {"__init__", "__main__", "common", "data", "labelled_set", "quality_set", "multilingual_set", "seed_way"}


def test_the_entry_point_lists_every_benchmark_and_nothing_else():
    scripts = {p.stem for p in (REPO / "bench").glob("*.py")} - HELPERS
    assert set(BENCHMARKS) == scripts
    for name in BENCHMARKS:
        tree = ast.parse((REPO / "bench" / f"{name}.py").read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body), name
