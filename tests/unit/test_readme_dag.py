"""The README's DAG table names every stage ``pipeline/dag.py`` composes, so the front door matches the code."""

from __future__ import annotations

from pipeline.config import build_config
from pipeline.dag import curation_stages
from pipeline.io.table_sink import WRITER
from pipeline.stage import READ
from tests.conftest import REPO
from tests.unit.test_contracts import MODELS, VARIANTS


def test_every_stage_of_the_dag_is_in_the_readme_table():
    names = {READ, WRITER.name}
    for overrides in VARIANTS:
        names |= {s.name for s in curation_stages(build_config(overrides=overrides), MODELS, [])}
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## What it does") : readme.index("### Where things are")]
    rows = [line.split() for line in table.splitlines()]
    missing = sorted(n for n in names if not any(n in row for row in rows))
    assert missing == [], f"README's DAG table lacks {missing}"
