"""The import graph: ``model`` at the bottom, experiments apart from the library.

Each folder may import only the layers listed for it (and itself); the package root
(``gatesum/``: the command line and the public API) composes them all.
"""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ALLOWED = {
    "model": {"model"},
    "training": {"model", "training"},
    "service": {"model", "service"},
    "experiments": {"model", "training", "experiments"},
    "benchmarks": {"model", "service", "training", "benchmarks"},  # training: data loading (bench decode)
}


def gatesum_imports(path: Path) -> set[str]:
    """The gatesum sub-packages a file imports: {"model", "training", ...}."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] in ALLOWED:
                found.add(f"bare {parts[0]}")  # a bare "import model" would break the installed package
            elif parts[0] == "gatesum" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(folder):
    for path in sorted((REPO / folder).rglob("*.py")):
        imported = gatesum_imports(path) - {"__version__"}
        wrong = imported - ALLOWED[folder]
        assert not wrong, f"{path.relative_to(REPO)} imports {sorted(wrong)}"
