"""Every ``python`` code block of README.md, BENCHMARKS.md and docs/**/*.md runs as written.

The blocks of one file run in order in one namespace, like a notebook, so a later block may use
names from an earlier one. A block that needs data or minutes of training is marked by the line
``<!-- skip-test: reason -->`` right before its opening fence; the marked blocks are listed in
``SKIPPED`` below, so that adding one is a visible change. ``bash``/``text`` blocks are not run.
"""

from __future__ import annotations

import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
FILES = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"(?:<!-- skip-test: (?P<reason>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)
SKIPPED = {
    ("docs/training.md", "needs MNIST and minutes of training"),
    ("docs/canonicalize.md", "needs a trained run directory and an image folder"),
    ("README.md", "needs a Ray cluster and a trained run"),
}


def _blocks(path: pathlib.Path) -> list[tuple[int, str, str | None]]:
    """(line number, code, skip reason or None) of every python block of `path`."""
    text = path.read_text()
    return [(text.count("\n", 0, m.start("code")) + 1, m.group("code"), m.group("reason"))
            for m in _BLOCK.finditer(text)]


@functools.cache
def _run(path: pathlib.Path) -> dict:
    """The namespace after running every unmarked block of `path` (once per test process)."""
    namespace: dict = {"__name__": f"doc_example_{path.stem}"}
    for line, code, reason in _blocks(path):
        if reason is None:
            exec(compile(code, f"{path.relative_to(ROOT)}:{line}", "exec"), namespace)  # noqa: S102
    return namespace


def test_skipped_blocks_are_the_documented_ones():
    found = {(str(p.relative_to(ROOT)), reason) for p in FILES for _, _, reason in _blocks(p) if reason}
    assert found == SKIPPED


@pytest.mark.parametrize("path", [p for p in FILES if any(r is None for _, _, r in _blocks(p))],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_code_blocks_run(path):
    _run(path)


def test_readme_quickstart_results():
    namespace = _run(ROOT / "README.md")
    assert namespace["crops"].shape == (8, 14, 14, 1)
    assert namespace["grads"].shape == (8, 2, 3)
    assert namespace["logits"].shape == (8, 10)


def test_core_api_example_runs():
    namespace = _run(ROOT / "docs" / "functional.md")
    assert namespace["same"].shape == (8, 28, 28, 1)
    assert namespace["zoom"].shape == (8, 14, 14, 1)
    assert namespace["vol_out"].shape == (2, 8, 16, 16, 1)
