"""The tree is what the README's "Where things are" says, and keeps the shape it promises: ``pipeline/`` never
imports Prefect, ``tasks/`` and ``flows/`` hold only Prefect's side, and no module outgrows one reading."""

from __future__ import annotations

import ast
import re

from tests.conftest import REPO

MAX_MODULE_LINES = 350
MAX_TASKS_LINES = 150


def _block() -> list[str]:
    readme = (REPO / "README.md").read_text()
    start = readme.index("### Where things are")
    a = readme.index("```\n", start) + 4
    return readme[a : readme.index("```", a)].splitlines()


def _entries() -> dict[str, set[str]]:
    """Each listed folder (``pipeline/``, ``pipeline/run/``, ``scripts/``, …) and the file names its lines name."""
    out: dict[str, set[str]] = {}
    top = current = ""
    for line in _block():
        m = re.match(r"^( *)(\S+/)\s", line + " ")
        if m and len(m.group(1)) in (0, 2):
            current = m.group(2) if not m.group(1) else top + m.group(2)
            if not m.group(1):
                top = current
            out.setdefault(current, set())
        out.setdefault(current, set()).update(re.findall(r"\b[\w]+\.(?:py|sh)\b", line))
    return out


def _modules(folder) -> list:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_every_folder_module_and_script_is_where_the_readme_says():
    entries = _entries()
    pipeline = REPO / "pipeline"
    listed_top = entries["pipeline/"]
    for p in sorted(pipeline.glob("*.py")):
        if p.name != "__init__.py":
            assert p.name in listed_top, f"pipeline/{p.name} is not in the README"
    for d in sorted(x for x in pipeline.iterdir() if x.is_dir() and list(x.glob("*.py"))):
        key = f"pipeline/{d.name}/"
        assert key in entries, f"{key} is not in the README"
        for p in sorted(d.glob("*.py")):
            if p.name != "__init__.py":
                assert p.name in entries[key], f"{key}{p.name} is not in the README"
    for key, names in entries.items():
        assert (REPO / key).is_dir(), f"the README lists {key}, which is not in the tree"
        for name in names:
            assert (REPO / key / name).is_file(), f"the README lists {key}{name}, which is not in the tree"
    scripts = {p.name for p in (REPO / "scripts").iterdir() if p.suffix in (".py", ".sh")}
    assert scripts <= entries["scripts/"], f"scripts the README does not list: {sorted(scripts - entries['scripts/'])}"


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_pipeline_never_imports_prefect_and_the_orchestration_is_prefects_side_only():
    for p in _modules(REPO / "pipeline"):
        assert not any(n.split(".")[0] in ("prefect", "prefect_ray", "flows", "tasks") for n in _imports(p)), p
    for folder in ("tasks", "flows"):
        for p in _modules(REPO / folder):
            if p.name == "__init__.py":
                continue
            roots = {n.split(".")[0] for n in _imports(p)}
            assert roots & {"prefect", "prefect_ray", "flows", "tasks"}, (
                f"{p} never imports Prefect: move it to pipeline/"
            )


def test_no_module_outgrows_one_reading():
    for folder in ("pipeline", "flows", "tasks"):
        for p in _modules(REPO / folder):
            n = len(p.read_text().splitlines())
            assert n <= MAX_MODULE_LINES, f"{p.relative_to(REPO)} has {n} lines (> {MAX_MODULE_LINES})"
    tasks = sum(len(p.read_text().splitlines()) for p in _modules(REPO / "tasks"))
    assert tasks <= MAX_TASKS_LINES, f"tasks/ has {tasks} lines: it holds the Prefect task, no more"
