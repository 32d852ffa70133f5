"""The examples in the docstrings of every ``stn_jax`` module run as doctests."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import stn_jax

MODULES = sorted(m.name for m in pkgutil.walk_packages(stn_jax.__path__, prefix="stn_jax."))
OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


@pytest.mark.parametrize("name", ["stn_jax", *MODULES])
def test_docstring_examples(name):
    module = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"


def test_there_are_docstring_examples():
    """Guards the test above against finding nothing (e.g. a broken module walk)."""
    attempted = 0
    for name in ("stn_jax", "stn_jax.nnx"):
        module = importlib.import_module(name)
        attempted += sum(len(t.examples) for t in doctest.DocTestFinder().find(module, name))
    assert attempted > 0
