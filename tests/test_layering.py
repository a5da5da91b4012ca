"""The layering rule of `siegecraft/__init__.py`, checked on the import graph of `src/`.

Every `import` / `from ... import` of a siegecraft module is an edge, wherever it appears (module level,
inside a function, or under TYPE_CHECKING): a type-only upward import is still an upward dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "siegecraft"

# layer of each top-level unit; a module may import its own unit and any unit of a lower layer
# flower (the Flower bridge) wraps engines and add-ons, so it sits between the add-ons and the drivers
LAYERS = {"core": 0, "engines": 1, "attacks": 2, "defenses": 2, "enclave": 2, "flower": 3, "drivers": 4}
# imports allowed between units of the same layer (engines never import each other)
SIDEWAYS = {("attacks", "defenses")}


def unit_of(module: str) -> str:
    """`siegecraft.engines.federated.engine` -> `engines.federated`; `siegecraft.core.data` -> `core`."""
    parts = module.split(".")
    if len(parts) < 2:
        return "(package)"
    if parts[1] == "engines" and len(parts) > 2:
        return f"engines.{parts[2]}"
    return parts[1]


def layer_of(unit: str) -> int:
    return LAYERS[unit.split(".")[0]]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported siegecraft module, line) for every import statement in `path`."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.startswith("siegecraft")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("siegecraft"):
            out.append((node.module, node.lineno))
    return out


def import_graph() -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) over the whole package."""
    return [(module_name(p), target, line) for p in sorted(PACKAGE.rglob("*.py")) for target, line in imports_of(p)]


def violations(edges: list[tuple[str, str, int]]) -> list[str]:
    """Upward imports, and imports between units of one layer that are not allowed sideways."""
    bad = []
    for src, dst, line in edges:
        a, b = unit_of(src), unit_of(dst)
        if a == b or "(package)" in (a, b):
            continue
        la, lb = layer_of(a), layer_of(b)
        if lb > la or (lb == la and (a, b) not in SIDEWAYS):
            bad.append(f"{src}:{line} imports {dst} ({a} -> {b})")
    return bad


def test_every_top_level_unit_has_a_layer() -> None:
    units = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    loose = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    assert units == set(LAYERS), f"packages without a layer: {units ^ set(LAYERS)}"
    assert not loose, f"modules outside every layer: {sorted(loose)}"


def test_no_upward_or_sideways_imports() -> None:
    bad = violations(import_graph())
    assert not bad, "layering violations:\n  " + "\n  ".join(bad)


def test_no_package_import_cycles() -> None:
    """Units form a DAG (the same-layer sideways edges included)."""
    edges: dict[str, set[str]] = {}
    for src, dst, _ in import_graph():
        a, b = unit_of(src), unit_of(dst)
        if a != b and "(package)" not in (a, b):
            edges.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join([*path, node, nxt])}")
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for unit in sorted(edges):
        if unit not in state:
            visit(unit, [])


@pytest.mark.parametrize(("src", "dst", "upward"), [
    ("siegecraft.core.config", "siegecraft.engines.federated.config", True),
    ("siegecraft.engines.federated.engine", "siegecraft.enclave.federated_bridge", True),
    ("siegecraft.engines.hogwild.runner", "siegecraft.attacks.game_of_threads", True),
    ("siegecraft.engines.hogwild.runner", "siegecraft.engines.federated.strategy", True),
    ("siegecraft.defenses.fltrust", "siegecraft.attacks.poisoning", True),
    ("siegecraft.attacks.poisoning", "siegecraft.engines.federated.extensions", False),
    ("siegecraft.drivers.cli", "siegecraft.core.config", False),
    ("siegecraft.engines.federated.runners", "siegecraft.flower.runner", True),
    ("siegecraft.flower.runner", "siegecraft.drivers.plugins", True),
    ("siegecraft.flower.clients", "siegecraft.attacks.hijackfl.adversary", False),
])
def test_the_check_catches_what_it_should(src: str, dst: str, upward: bool) -> None:
    assert bool(violations([(src, dst, 1)])) is upward
