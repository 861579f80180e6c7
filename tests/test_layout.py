"""The import structure docs/design.md describes: no cycles (imports inside functions count: a lazy import
hides a cycle, it does not remove it), and the plumbing of ``orchestration/`` never imports the stages
built on it or the Dagster wiring above them."""

import ast
import graphlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("orchestration", "assets", "sensors", "bench")
# orchestration/ modules that wire the stages together (and so import assets/ and sensors/)
WIRING = {"orchestration.definitions", "orchestration.dagster_runs", "orchestration.cli"}
ABOVE_PLUMBING = ("assets", "sensors", "bench", *WIRING)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def _imports() -> dict[str, set[str]]:
    """Each module's imports of the project's own modules, wherever in the module they are."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
            elif isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names}
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def test_no_import_cycles():
    try:
        graphlib.TopologicalSorter(_imports()).prepare()
    except graphlib.CycleError as cycle:
        raise AssertionError(f"import cycle: {' -> '.join(cycle.args[1])}") from None


def test_plumbing_imports_nothing_above_it():
    upward = {
        (module, target)
        for module, targets in _imports().items()
        if module.startswith("orchestration.") and module not in WIRING
        for target in targets
        if any(target == above or target.startswith(above + ".") for above in ABOVE_PLUMBING)
    }
    assert upward == set()
