"""The shape of the code: each layer imports only the layers below it; files and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "flowdiff"

LAYERS = {"dynamics": 1, "paths": 2, "learning": 3, "data": 4, "runs": 5, "plots": 6, "cli": 7}
"""Layer of each subpackage (DESIGN.md): 1-3 the library's floors, 4-7 its edges in the order they may import."""

SHARED = {"errors": 0, "registry": 0, "_version": 0, "atomic": 4}
"""Top-level modules: errors and the registry serve every layer; atomic file writes serve the edges only."""

MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 60


def _modules() -> list[Path]:
    return sorted(p for p in SOURCE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
                  or p.parent != SOURCE)


def _layer(module: str) -> int | None:
    """The layer of a dotted module name inside flowdiff (None for the package face)."""
    parts = module.split(".")
    if parts[0] != "flowdiff" or len(parts) < 2:
        return None
    return LAYERS.get(parts[1], SHARED.get(parts[1]))


def _imports(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names += [f"{node.module}.{alias.name}" for alias in node.names]
            names += [node.module] if node.module != "flowdiff" else []
    return [name for name in names if name.startswith("flowdiff")]


def test_each_layer_imports_only_the_layers_below_it():
    wrong = []
    for file in _modules():
        own = _layer("flowdiff." + ".".join(file.relative_to(SOURCE).with_suffix("").parts))
        for name in _imports(ast.parse(file.read_text())):
            if name == "flowdiff":
                wrong.append(f"{file.relative_to(SOURCE)} imports the package face")
                continue
            layer = _layer(name)
            if own is not None and layer is not None and layer > own:
                wrong.append(f"{file.relative_to(SOURCE)} (layer {own}) imports {name} (layer {layer})")
    assert not sorted(set(wrong))


def test_the_layer_check_catches_an_upward_import(tmp_path):
    tree = ast.parse("from flowdiff.runs.load import load\nimport flowdiff.cli.app\nfrom flowdiff import atomic\n")
    assert sorted(_layer(name) for name in _imports(tree)) == [4, 5, 5, 7]
    assert _layer("flowdiff.learning.sampling") == 3 and _layer("flowdiff.atomic") == 4


def test_no_file_over_400_lines():
    long = {str(f.relative_to(SOURCE)): n for f in SOURCE.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_FILE_LINES}
    assert not long


def _body_lines(node: ast.FunctionDef) -> int:
    """Lines of a function's body, from its first statement after the docstring (typer signatures excluded)."""
    body = node.body[1:] if (node.body and isinstance(node.body[0], ast.Expr)
                             and isinstance(getattr(node.body[0], "value", None), ast.Constant)) else node.body
    return 0 if not body else node.end_lineno - body[0].lineno + 1


@pytest.mark.parametrize("folder", sorted(LAYERS))
def test_no_function_body_over_60_lines(folder):
    long = []
    for file in (SOURCE / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _body_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{file.relative_to(SOURCE)}:{node.lineno} {node.name} ({_body_lines(node)} lines)")
    assert not long
