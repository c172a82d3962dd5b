"""The declared minimum versions say one thing everywhere, and that thing is what tests/test_package_sets.py runs.

requirements.txt's lower bounds, the notebooks' install cells (MINIMUM_VERSIONS) and pyproject.toml's lower
bounds must agree, and environments/minimums.txt must pin each of them exactly: the matrix then proves that
the notebooks run on what they declare. The Colab sets must be what their comment says they are.
"""
import ast
import re
import tomllib
from pathlib import Path

import nbformat
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from grader.course import ANSWER_KEYS, ROOT

ENVIRONMENTS = ROOT / "environments"
# requirements.txt names what the notebooks need at the oldest versions they run on, except torch: every
# set here uses the local CPU build (2.13.0), so torch's lower bound is declared, not tested.
NOT_PINNED_AT_THEIR_MINIMUM = {"torch"}
# What only the grader needs (it runs the notebooks, in its own environment): not a package of the notebooks' sets.
GRADER_ONLY = {"nbformat", "nbclient", "nbconvert", "ipykernel", "nbgrader"}


def lower_bound(specifier: SpecifierSet) -> str | None:
    bounds = [spec.version for spec in specifier if spec.operator in (">=", "==")]
    return max(bounds, key=Version) if bounds else None


def requirement_lines(path: Path) -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def requirements_minimums() -> dict[str, str]:
    return {canonicalize_name(r.name): lower_bound(r.specifier) for r in requirement_lines(ROOT / "requirements.txt")}


def install_cell_minimums(answer_key: Path) -> dict[str, str]:
    """MINIMUM_VERSIONS of the notebook's install cell, read without running it."""
    source = next(cell.source for cell in nbformat.read(answer_key, as_version=4).cells if cell.get("id") == "install")
    assignment = next(node for node in ast.parse(source).body if isinstance(node, ast.Assign)
                      and getattr(node.targets[0], "id", "") == "MINIMUM_VERSIONS")
    return {canonicalize_name(name): version for name, version in ast.literal_eval(assignment.value).items()}


def pins(path: Path) -> dict[str, str]:
    return {canonicalize_name(r.name): str(next(iter(r.specifier)).version)
            for r in requirement_lines(path) if len(r.specifier) == 1 and next(iter(r.specifier)).operator == "=="}


@pytest.mark.parametrize("answer_key", ANSWER_KEYS, ids=lambda path: path.stem)
def test_each_install_cell_declares_what_requirements_txt_declares(answer_key):
    declared, cell = requirements_minimums(), install_cell_minimums(answer_key)
    assert {name: declared.get(name) for name in cell} == cell


def test_minimums_txt_pins_every_declared_minimum():
    declared, pinned = requirements_minimums(), pins(ENVIRONMENTS / "minimums.txt")
    expected = {name: Version(version) for name, version in declared.items()
                if name not in NOT_PINNED_AT_THEIR_MINIMUM | GRADER_ONLY}
    assert {name: Version(pinned[name]) if name in pinned else None for name in expected} == expected
    for answer_key in ANSWER_KEYS:   # and what the install cells ask for, which requirements.txt repeats
        assert all(Version(pinned[name]) == Version(version)
                   for name, version in install_cell_minimums(answer_key).items())


def test_pyprojects_lower_bounds_are_requirements_txts():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    declared = requirements_minimums()
    shared = {canonicalize_name(Requirement(line).name): lower_bound(Requirement(line).specifier) for line in project}
    assert {name: version for name, version in shared.items() if name in declared} == \
        {name: declared[name] for name in shared if name in declared}


@pytest.mark.parametrize("path", sorted(ENVIRONMENTS.glob("colab-*.txt")), ids=lambda path: path.stem)
def test_a_colab_set_says_where_it_comes_from(path):
    text = path.read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    assert "https://github.com/googlecolab/backend-info" in header and re.search(r"commit [0-9a-f]{40}", header)
    assert re.search(r"published on \d{4}-\d{2}-\d{2}", header) and "Python (3.11)" in header
    assert pins(path)["torch"] == "2.13.0" and "transformers" in pins(path)


def test_the_colab_set_generator_keeps_colabs_versions_but_torchs(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(ENVIRONMENTS))
    try:
        import colab_pins
    finally:
        sys.path.remove(str(ENVIRONMENTS))
    freeze = tmp_path / "pip-freeze.gpu.txt"
    freeze.write_text("transformers==5.99.0\ntorch==2.99.0+cu130\nsetuptools==75.2.0\nsome-other-package==1.0\n"
                      "jupyter_kernel_gateway @ git+https://example.invalid/x\n", encoding="utf-8")
    assert colab_pins.main([str(freeze), "--runtime", "current runtime", "--date", "2027-01-02", "--commit", "f" * 40,
                            "--python", "3.14.1"]) == 0
    written = tmp_path / "colab.txt"
    written.write_text(capsys.readouterr().out, encoding="utf-8")
    found = pins(written)
    assert found["transformers"] == "5.99.0" and found["torch"] == "2.13.0" and "setuptools" not in found
    assert "some-other-package" not in found and "Colab: 2.99.0+cu130" in written.read_text(encoding="utf-8")
    test_a_colab_set_says_where_it_comes_from(written)


@pytest.mark.parametrize("answer_key", ANSWER_KEYS, ids=lambda path: path.stem)
def test_the_install_cell_upgrades_what_is_below_its_minimums_and_nothing_else(answer_key, monkeypatch, capsys):
    """On a machine with older releases (a pinned Colab runtime, an instructor's laptop) the install cell runs
    pip for exactly the packages below their minimum, or missing; on one that has them all it runs nothing."""
    import importlib.metadata
    import subprocess

    source = next(cell.source for cell in nbformat.read(answer_key, as_version=4).cells if cell.get("id") == "install")
    minimums = install_cell_minimums(answer_key)
    old = sorted(minimums)[:2]   # below their minimum; the first of the others is missing
    missing = sorted(minimums)[2]

    def version(package):
        if canonicalize_name(package) == missing:
            raise importlib.metadata.PackageNotFoundError(package)
        return "0.1" if canonicalize_name(package) in old else "999.0"

    calls = []
    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(subprocess, "check_call", calls.append)
    exec(source, {})
    names = {canonicalize_name(Requirement(arg).name) for arg in calls[0][5:]} if calls else set()
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"] and names == set(old) | {missing}
    assert all(str(Requirement(arg).specifier) == f">={minimums[canonicalize_name(Requirement(arg).name)]}"
               for arg in calls[0][5:])

    calls.clear()
    monkeypatch.setattr(importlib.metadata, "version", lambda package: "999.0")
    exec(source, {})
    assert calls == [] and "All required packages are installed." in capsys.readouterr().out
