"""No import circle among the grader's modules, counting the imports made inside functions too (a lazy import
hides a circle from Python, not from a reader: two modules that import each other are one module in two files)."""
import ast
from pathlib import Path

from grader.course import ROOT

GRADER = ROOT / "grader"


def module_name(path: Path, folder: Path) -> str:
    """``model_check/worker.py`` -> ``model_check.worker``; a package's ``__init__.py`` is the package."""
    parts = list(path.relative_to(folder).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def grader_imports(path: Path, package: list[str]) -> set[str]:
    """The grader modules ``path`` (in the sub-package ``package``, [] for the grader itself) imports, at module
    level or in a function: ``from .x import``, ``from ..x import``, ``from . import x``, ``from grader.x import``,
    ``import grader.x``. Each as a dotted name below the grader, with its imported names as candidates
    (``from .model_check import worker`` imports ``model_check.worker``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
            elif (node.module or "") == "grader" or (node.module or "").startswith("grader."):
                base = []
            else:
                continue
            module = (node.module or "").removeprefix("grader").lstrip(".") if not node.level else node.module or ""
            target = base + (module.split(".") if module else [])
            found.add(".".join(target))
            found.update(".".join(target + [alias.name]) for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name.removeprefix("grader.") for alias in node.names if alias.name.startswith("grader."))
    return found - {""}


def import_graph(folder: Path) -> dict[str, set[str]]:
    modules = {module_name(path, folder): path for path in folder.rglob("*.py")
               if "__pycache__" not in path.parts and path != folder / "__init__.py"}
    graph = {}
    for name, path in modules.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        imported = grader_imports(path, package) & set(modules)
        graph[name] = imported - {name} - {".".join(package)}   # a module imports its own package's face first
    return graph


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


def test_the_scan_follows_a_sub_package_both_ways(tmp_path):
    # negative control: a circle through a sub-package, by ``from ..x`` one way and ``from .pkg.y`` the other
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "worker.py").write_text("from ..results import Record\nfrom .stats import mean\n")
    (tmp_path / "pkg" / "stats.py").write_text("")
    (tmp_path / "results.py").write_text("def load():\n    from .pkg.worker import run\n")
    graph = import_graph(tmp_path)
    assert graph == {"pkg": set(), "pkg.worker": {"results", "pkg.stats"}, "pkg.stats": set(),
                     "results": {"pkg.worker"}}
    assert cycles(graph) == [["pkg.worker", "results", "pkg.worker"]]
