"""The training engine stays readable: no function in stn_jax/train/ reaches 60 lines."""

from __future__ import annotations

import ast
import pathlib

import pytest

import stn_jax.train

TRAIN_DIR = pathlib.Path(stn_jax.train.__file__).parent
MAX_LINES = 60


def _function_lengths(path: pathlib.Path) -> list[tuple[str, int]]:
    """(qualified name, lines from the first decorator or ``def`` to the last line) of every
    function and method in `path`, nested ones included."""
    out = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                out.append((prefix + child.name, child.end_lineno - first + 1))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text()), "")
    return out


def test_the_scan_finds_the_engine():
    names = {name for path in TRAIN_DIR.glob("*.py") for name, _ in _function_lengths(path)}
    assert {"train", "load_run", "evaluate", "write_figures", "make_train_fn"} <= names


@pytest.mark.parametrize("path", sorted(TRAIN_DIR.glob("*.py")), ids=lambda p: p.name)
def test_every_function_is_under_60_lines(path):
    too_long = [(name, n) for name, n in _function_lengths(path) if n >= MAX_LINES]
    assert not too_long, f"{path.name}: functions of {MAX_LINES}+ lines: {too_long}"
