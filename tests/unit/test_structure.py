"""The house's seams, read from the code's own imports (ast, nothing imported).

- the engine knows no model: nothing under src/v2bgm/engine imports another v2bgm package;
- the serving layer names no composer: nothing under src/v2bgm/triton imports v2bgm.yue (it
  loads composers by name, v2bgm.composers);
- no circle between folders (a module at the package's top is a node of its own);
- the server stands on the contract, not on the client (only the demo and the benchmarks, which
  call the server as a client does, import v2bgm_client).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "v2bgm"
CLIENT_USERS = ("demo", "bench")  # tools that drive the server as a client


def node_of(module: str) -> str:
    """'v2bgm.yue.stage1' -> 'yue'; 'v2bgm.composer' -> 'composer' (top modules stand alone)."""
    return module.split(".")[1]


def imports() -> dict[str, set[str]]:
    """Module (dotted) -> the modules it imports, anywhere in it (lazy imports included)."""
    found: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        module = ".".join(("v2bgm", *path.relative_to(SRC).with_suffix("").parts))
        module = module.removesuffix(".__init__")
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        found[module] = names
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return imports()


def test_the_engine_imports_no_model_nor_anything_else_of_ours(graph):
    for module, names in graph.items():
        if module.startswith("v2bgm.engine"):
            ours = {n for n in names if n.startswith("v2bgm.")}
            assert all(n.startswith("v2bgm.engine") for n in ours), (module, ours)


def test_the_serving_layer_names_no_composer(graph):
    for module, names in graph.items():
        if module.startswith("v2bgm.triton"):
            assert not [n for n in names if n.startswith("v2bgm.yue")], module


def test_no_circle_between_folders(graph):
    edges: dict[str, set[str]] = {}
    for module, names in graph.items():
        if module == "v2bgm":
            continue
        source = node_of(module)
        for name in names:
            if name.startswith("v2bgm.") and node_of(name) != source:
                edges.setdefault(source, set()).add(node_of(name))
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        assert node not in visiting, f"circle: {' -> '.join([*visiting, node])}"
        if node in done:
            return
        visiting.append(node)
        for nxt in sorted(edges.get(node, ())):
            visit(nxt)
        visiting.pop()
        done.add(node)

    for node in sorted(edges):
        visit(node)
    assert edges["yue"] >= {"engine", "composer"} and "yue" not in edges.get("engine", set())


def test_the_server_stands_on_the_contract_not_on_the_client(graph):
    for module, names in graph.items():
        if module != "v2bgm" and node_of(module) in CLIENT_USERS:
            continue
        assert not [n for n in names if n.startswith("v2bgm_client")], module
