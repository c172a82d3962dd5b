"""No import circle among the grader's modules, counting the imports made inside functions too (a lazy import
hides a circle from Python, not from a reader: two modules that import each other are one module in two files)."""
import ast
from pathlib import Path

from grader.course import ROOT

GRADER = ROOT / "grader"


def grader_imports(path: Path) -> set[str]:
    """The grader modules ``path`` imports, at module level or in a function: ``from .x import``,
    ``from . import x``, ``from grader.x import``, ``import grader.x``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.level == 1:
                found.update(alias.name for alias in node.names)
            elif node.level == 0 and (node.module or "").startswith("grader."):
                found.add(node.module.split(".")[1])
            elif node.level == 0 and node.module == "grader":
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("grader."))
    return found


def import_graph(folder: Path) -> dict[str, set[str]]:
    modules = {path.stem: path for path in folder.glob("*.py") if path.stem != "__init__"}
    return {name: grader_imports(path) & set(modules) - {name} for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle through each module that lies on one (depth-first search; each circle as its path)."""
    found, done = [], set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            found.append(path[path.index(name):] + [name])
            return
        if name in done:
            return
        for imported in sorted(graph[name]):
            visit(imported, path + [name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    return found


def test_the_graders_modules_import_each_other_in_no_circle():
    assert cycles(import_graph(GRADER)) == []


def test_the_scan_sees_imports_at_every_level_and_a_circle(tmp_path):
    # negative control: a circle made by a lazy import inside a function is found
    (tmp_path / "batch.py").write_text("from .report import OutputFolder\n")
    (tmp_path / "report.py").write_text("def save():\n    from .slurm import grade_one\n")
    (tmp_path / "slurm.py").write_text("import json\n\n\ndef grade():\n    from grader.batch import job_environment\n")
    (tmp_path / "leaf.py").write_text("from . import report\n")
    graph = import_graph(tmp_path)
    assert graph == {"batch": {"report"}, "report": {"slurm"}, "slurm": {"batch"}, "leaf": {"report"}}
    assert cycles(graph) == [["batch", "report", "slurm", "batch"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
