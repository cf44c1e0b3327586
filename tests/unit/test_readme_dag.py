"""The README's DAG table names every stage ``pipeline/dag.py`` composes, so the front door matches the code."""

from __future__ import annotations

import ast

from tests.conftest import REPO


def _stages_in_dag() -> set[str]:
    """The names dag.py imports from ``pipeline.stages`` and uses, except helpers that build no stage."""
    tree = ast.parse((REPO / "pipeline" / "dag.py").read_text())
    imported = {
        alias.asname or alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline.stages")
        for alias in node.names
    }
    return imported - {"build_gates"}  # the gates' list, used by apply_gates


def test_every_stage_of_the_dag_is_in_the_readme_table():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## What it does") : readme.index("### Where things are")]
    missing = sorted(name for name in _stages_in_dag() if name not in table)
    assert missing == [], f"README's DAG table lacks {missing}"
