"""The expert override stn_jax.sampler_implementation: nesting, contextvars isolation,
the environment-variable default, validation and trace-time semantics."""

from __future__ import annotations

import contextvars
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stn_jax
from stn_jax._src import dispatch

ENV = "STN_JAX_SAMPLER_IMPLEMENTATION"


@pytest.fixture(autouse=True)
def _no_env_default(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)


def test_default_is_auto():
    assert stn_jax.current_sampler_implementation() == "auto"
    assert stn_jax.sampling.SAMPLER_IMPLEMENTATIONS == ("auto", "fast", "generic")


def test_blocks_nest_and_restore():
    with stn_jax.sampler_implementation("generic"):
        assert stn_jax.current_sampler_implementation() == "generic"
        with stn_jax.sampler_implementation("fast"):
            assert stn_jax.current_sampler_implementation() == "fast"
            with stn_jax.sampler_implementation("auto"):
                assert stn_jax.current_sampler_implementation() == "auto"
            assert stn_jax.current_sampler_implementation() == "fast"
        assert stn_jax.current_sampler_implementation() == "generic"
    assert stn_jax.current_sampler_implementation() == "auto"


def test_restored_when_the_block_raises():
    with pytest.raises(RuntimeError, match="boom"):
        with stn_jax.sampler_implementation("generic"):
            raise RuntimeError("boom")
    assert stn_jax.current_sampler_implementation() == "auto"


@pytest.mark.parametrize("name", ["pallas", "", "Generic", None])
def test_unknown_names_raise_naming_the_choices(name):
    with pytest.raises(ValueError, match=r"unknown sampler implementation.*'auto', 'fast', 'generic'"):
        with stn_jax.sampler_implementation(name):
            pass
    assert stn_jax.current_sampler_implementation() == "auto"


def test_threads_do_not_see_each_others_setting():
    entered, checked = threading.Barrier(2), threading.Barrier(2)
    seen = {}

    def worker():
        seen["worker at start"] = stn_jax.current_sampler_implementation()
        with stn_jax.sampler_implementation("fast"):
            entered.wait()   # both threads are inside their blocks now
            seen["worker inside"] = stn_jax.current_sampler_implementation()
            checked.wait()
        seen["worker after"] = stn_jax.current_sampler_implementation()

    with stn_jax.sampler_implementation("generic"):
        thread = threading.Thread(target=worker)
        thread.start()
        entered.wait()
        seen["main inside"] = stn_jax.current_sampler_implementation()
        checked.wait()
        thread.join()
    assert seen == {"worker at start": "auto", "worker inside": "fast", "worker after": "auto",
                    "main inside": "generic"}


def test_copied_contexts_are_isolated():
    with stn_jax.sampler_implementation("generic"):
        snapshot = contextvars.copy_context()
    assert snapshot.run(stn_jax.current_sampler_implementation) == "generic"
    assert stn_jax.current_sampler_implementation() == "auto"

    def set_fast_and_read():
        with stn_jax.sampler_implementation("fast"):
            inner = stn_jax.current_sampler_implementation()
        return inner, stn_jax.current_sampler_implementation()

    assert contextvars.copy_context().run(set_fast_and_read) == ("fast", "auto")
    assert stn_jax.current_sampler_implementation() == "auto"


@pytest.mark.parametrize("value", ["generic", "fast", "auto"])
def test_environment_variable_is_the_default(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    assert stn_jax.current_sampler_implementation() == value
    with stn_jax.sampler_implementation("fast" if value != "fast" else "generic"):
        assert stn_jax.current_sampler_implementation() != value   # a block overrides it
    assert stn_jax.current_sampler_implementation() == value


def test_empty_environment_variable_means_auto(monkeypatch):
    monkeypatch.setenv(ENV, "")
    assert stn_jax.current_sampler_implementation() == "auto"


def test_invalid_environment_variable_raises_naming_it_and_the_choices(monkeypatch):
    monkeypatch.setenv(ENV, "pallas")
    pattern = r"'pallas'.*STN_JAX_SAMPLER_IMPLEMENTATION.*'auto', 'fast', 'generic'"
    with pytest.raises(ValueError, match=pattern):
        stn_jax.current_sampler_implementation()
    with pytest.raises(ValueError, match=pattern):   # at trace time of a sampling call
        jax.jit(stn_jax.grid_sample).trace(jnp.zeros((1, 4, 4, 1)), jnp.zeros((1, 2, 2, 2)))
    with stn_jax.sampler_implementation("generic"):  # an explicit block does not read it
        assert stn_jax.current_sampler_implementation() == "generic"


def test_environment_variable_selects_the_kernel(monkeypatch):
    monkeypatch.setenv(ENV, "generic")
    assert dispatch.choose_kernel("bilinear", 2) == ("generic", 1)
    image, grid = jnp.ones((1, 4, 4, 1)), jnp.zeros((1, 3, 3, 2))

    def forward_jaxpr():  # a new function object per trace: traces are cached per function
        return str(jax.make_jaxpr(lambda a, g: stn_jax.grid_sample(a, g))(image, grid))

    # the window kernel is a custom_jvp function; the generic one is plain jax
    assert "custom_jvp_call" not in forward_jaxpr()
    monkeypatch.setenv(ENV, "fast")
    assert "custom_jvp_call" in forward_jaxpr()


def test_read_at_trace_time_and_a_jitted_function_keeps_its_trace():
    traced_with = []

    @jax.jit
    def sample(a, g):
        traced_with.append(stn_jax.current_sampler_implementation())
        return stn_jax.grid_sample(a, g)

    image, grid = jnp.ones((1, 4, 4, 1)), jnp.zeros((1, 3, 3, 2))
    with stn_jax.sampler_implementation("fast"):
        first = sample(image, grid)
    with stn_jax.sampler_implementation("generic"):
        second = sample(image, grid)          # cached: not traced again
        sample(image[:, :3], grid)            # a new shape: traced with "generic"
    assert traced_with == ["fast", "generic"]
    np.testing.assert_array_equal(first, second)
