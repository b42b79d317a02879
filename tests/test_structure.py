"""The package's shape (docs/design.md): imports point one way, no package imports another's
private names, no function in src/ is longer than 80 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "mriprior"
# docs/design.md: errors, launch, seeds -> io -> physics -> metrics -> data -> diffusion -> engine ->
# priors -> recon -> augment / unrolled -> experiments -> cli
ORDER = ["errors", "launch", "seeds", "io", "physics", "metrics", "data", "diffusion", "engine", "priors",
         "recon", ("augment", "unrolled"), "experiments", "cli"]
LAYER = {name: i for i, item in enumerate(ORDER)
         for name in (item if isinstance(item, tuple) else (item,))}


def _modules():
    for f in sorted(SRC.rglob("*.py")):
        top = f.relative_to(SRC).parts[0].removesuffix(".py")
        yield f, top, ast.parse(f.read_text(), filename=str(f))


def _imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "mriprior."):
            yield node


def test_every_package_has_a_layer():
    tops = {top for _, top, _ in _modules()} - {"__init__", "assets"}
    assert tops <= set(LAYER), sorted(tops - set(LAYER))


def test_imports_point_one_way():
    wrong = []
    for f, top, tree in _modules():
        if top not in LAYER:
            continue
        for node in _imports(tree):
            target = node.module.split(".")[1]
            if LAYER.get(target, -1) > LAYER[top]:
                wrong.append(f"{f.relative_to(SRC)}:{node.lineno} imports {node.module}")
    assert not wrong, "\n".join(wrong)


def test_no_private_name_crosses_a_package():
    wrong = []
    for f, top, tree in _modules():
        for node in _imports(tree):
            target = node.module.split(".")[1]
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and \
                        target != top:
                    wrong.append(f"{f.relative_to(SRC)}:{node.lineno} imports {alias.name} "
                                 f"from {node.module}")
    assert not wrong, "\n".join(wrong)


def test_no_function_over_80_lines():
    long = [f"{f.relative_to(SRC)}:{node.lineno} {node.name} ({n} lines)"
            for f, _, tree in _modules() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and (n := node.end_lineno - node.lineno + 1) > 80]
    assert not long, "\n".join(long)
