"""The packages stack runtime < train < export < benchmarks: a module imports its own package
and the ones below, never one above, and inside each package the modules import each other
without a cycle (lazy and type-checking imports count too)."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["runtime", "train", "export", "benchmarks"]


def module_imports(path: Path) -> set[str]:
    """Every ``dbsi.*`` module or name that ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dbsi."):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("dbsi."))
    return found


def package_modules(package: str) -> dict[str, set[str]]:
    """``dbsi.<package>.<module>`` -> the ``dbsi`` modules it imports."""
    return {
        f"dbsi.{package}.{path.stem}": module_imports(path)
        for path in sorted((ROOT / package).glob("*.py"))
    }


@pytest.mark.parametrize("package", ORDER)
def test_a_package_imports_only_itself_and_the_packages_below(package):
    allowed = set(ORDER[: ORDER.index(package) + 1])
    upward = [
        f"{module} imports {name}"
        for module, names in package_modules(package).items()
        for name in sorted(names)
        if name.split(".")[1] not in allowed
    ]
    assert not upward


@pytest.mark.parametrize("package", ORDER)
def test_the_modules_of_a_package_import_each_other_without_a_cycle(package):
    graph = package_modules(package)
    within = {module: names & graph.keys() for module, names in graph.items()}
    try:
        TopologicalSorter(within).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")
