"""The import graph of stn_jax: no cycles, no reading of another module's private names, and a
layered core (stn_jax._src imports only itself; the core imports stn_jax at module top only).

The graph is read from the source with ``ast`` (nothing is imported), counting every import,
including imports inside functions: a cycle through a lazy import is still a cycle.
"""

from __future__ import annotations

import ast
import functools
import pathlib

import pytest

import stn_jax

PACKAGE = "stn_jax"
ROOT = pathlib.Path(stn_jax.__file__).parent

# The sampler core: thin public wrappers over the private stn_jax._src package.
CORE = ("stn_jax", "stn_jax.sampling", "stn_jax.grids", "stn_jax.warping", "stn_jax.separable",
        "stn_jax.transforms")


def _module_files() -> dict[str, pathlib.Path]:
    files = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = (PACKAGE,) + path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if _is_package(module) else base[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _owning_module(name: str) -> str | None:
    """The longest prefix of a dotted name that is a module of the package."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


@functools.cache
def _tree(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))


def _imports(module: str) -> list[tuple[str, ast.stmt, str | None]]:
    """(imported stn_jax module, import statement, name imported from it or None) per import."""
    found = []
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _owning_module(alias.name)
                if target:
                    found.append((target, node, None))
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                if submodule in MODULES:
                    found.append((submodule, node, None))
                elif source in MODULES:
                    found.append((source, node, alias.name))
    return found


def _graph() -> dict[str, set[str]]:
    return {m: {target for target, _, _ in _imports(m) if target != m} for m in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle ``[a, b, ..., a]`` of the directed graph, or None when it is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_a_planted_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_the_core_edges():
    graph = _graph()
    assert "stn_jax._src.dispatch" in graph["stn_jax.sampling"]
    assert "stn_jax._src.bilinear" in graph["stn_jax._src.dispatch"]
    assert "stn_jax.grids" in graph["stn_jax.transforms"]


def test_the_import_graph_of_stn_jax_has_no_cycle():
    cycle = find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _private_reads(module: str) -> list[str]:
    """``from stn_jax.x import _name`` and ``x._name`` where ``x`` names another stn_jax module."""
    aliases: dict[str, str] = {}
    problems = []
    for target, node, name in _imports(module):
        if name is not None and name.startswith("_") and target != module:
            problems.append(f"{module}:{node.lineno} imports {target}.{name}")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and _owning_module(alias.name) == alias.name:
                    aliases[alias.asname] = alias.name
        else:
            for alias in node.names:
                if f"{_resolve(module, node)}.{alias.name}" == target:
                    aliases[alias.asname or alias.name] = target
    for node in ast.walk(_tree(module)):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                and node.value.id in aliases and aliases[node.value.id] != module):
            problems.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    return problems


def test_private_read_check_flags_a_planted_read(tmp_path, monkeypatch):
    fake = tmp_path / "fake.py"
    fake.write_text("from stn_jax import grids\nfrom stn_jax.sampling import _resolve_layout\n"
                    "grids._check_float\n")
    monkeypatch.setitem(MODULES, "stn_jax.fake", fake)
    assert _private_reads("stn_jax.fake") == ["stn_jax.fake:2 imports stn_jax.sampling._resolve_layout",
                                              "stn_jax.fake:3 reads stn_jax.grids._check_float"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_another_modules_private_names(module):
    assert _private_reads(module) == []


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("stn_jax._src")))
def test_src_imports_only_src(module):
    outside = {t for t, _, _ in _imports(module) if not t.startswith("stn_jax._src")}
    assert not outside, f"{module} imports {sorted(outside)}: stn_jax._src must not import upwards"


def _late_imports(module: str) -> list[int]:
    """Lines of stn_jax imports that are not at module top (inside functions or classes)."""
    top_level = {id(node) for node in _tree(module).body}
    return sorted({node.lineno for _, node, _ in _imports(module) if id(node) not in top_level})


def test_late_import_check_flags_a_planted_import(tmp_path, monkeypatch):
    fake = tmp_path / "fake_late.py"
    fake.write_text("import jax\nfrom stn_jax import grids\n\n\ndef f():\n    from stn_jax import sampling\n")
    monkeypatch.setitem(MODULES, "stn_jax.fake_late", fake)
    assert _late_imports("stn_jax.fake_late") == [6]


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m in CORE or m.startswith("stn_jax._src")))
def test_core_imports_stn_jax_at_module_top_only(module):
    late = _late_imports(module)
    assert not late, f"{module} imports stn_jax modules inside functions at lines {late}"
