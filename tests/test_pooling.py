"""max_pool_2x2 against flax's max_pool (values and gradients bit for bit, ties included),
finite differences, and its input checks."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from stn_jax.pooling import max_pool_2x2


def _reference(x: jax.Array) -> jax.Array:
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


def _weighted_sum(pool):
    """A loss whose cotangent differs per output element, so a misrouted gradient shows."""
    def loss(x):
        y = pool(x)
        return jnp.sum(jnp.tanh(y) * jnp.arange(1, y.size + 1, dtype=y.dtype).reshape(y.shape))
    return loss


@settings(max_examples=12, deadline=None, derandomize=True)
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), c=st.integers(1, 4),
       levels=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_matches_flax_max_pool_bit_for_bit_with_ties(n, h, w, c, levels, seed):
    # few distinct values, so most windows hold tied maxima
    x = jax.random.randint(jax.random.PRNGKey(seed), (n, h, w, c), 0, levels).astype(jnp.float32)
    np.testing.assert_array_equal(max_pool_2x2(x), _reference(x))
    np.testing.assert_array_equal(jax.grad(_weighted_sum(max_pool_2x2))(x),
                                  jax.grad(_weighted_sum(_reference))(x))


def test_gradient_goes_to_the_first_maximum_in_row_major_order():
    x = jnp.array([[1.0, 3.0], [3.0, 3.0]])[None, :, :, None]
    g = jax.grad(lambda x: max_pool_2x2(x).sum())(x)
    np.testing.assert_array_equal(g[0, :, :, 0], [[0.0, 1.0], [0.0, 0.0]])


def test_odd_sizes_round_up_and_the_padding_never_wins():
    x = -jnp.arange(1.0, 10.0).reshape(1, 3, 3, 1)  # all negative: a 0 or finite pad would win
    y = max_pool_2x2(x)
    assert y.shape == (1, 2, 2, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], [[-1.0, -3.0], [-7.0, -9.0]])


def test_forward_and_reverse_mode_agree_with_finite_differences():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 6, 3))  # no ties
    check_grads(max_pool_2x2, (x,), order=1, modes=("fwd", "rev"), eps=1e-3)
    t = jax.random.normal(jax.random.PRNGKey(1), x.shape)
    np.testing.assert_array_equal(jax.jvp(max_pool_2x2, (x,), (t,))[1], jax.jvp(_reference, (x,), (t,))[1])


def test_single_image_jit_and_vmap():
    x = jax.random.normal(jax.random.PRNGKey(2), (4, 7, 8, 2))
    batched = jax.jit(max_pool_2x2)(x)
    np.testing.assert_array_equal(jax.vmap(max_pool_2x2)(x), batched)
    np.testing.assert_array_equal(max_pool_2x2(x[1]), batched[1])
    assert max_pool_2x2(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16


@pytest.mark.parametrize("x, error, match", [
    (jnp.zeros((2, 4, 4, 1, 1)), ValueError, r"\(N, H, W, C\)"),
    (jnp.zeros((4, 4)), ValueError, r"got shape \(4, 4\)"),
    (jnp.zeros((1, 4, 4, 1), jnp.int32), TypeError, "floating dtype"),
])
def test_bad_input_is_named(x, error, match):
    with pytest.raises(error, match=match):
        max_pool_2x2(x)


@pytest.mark.parametrize("model", ["cnn", "st-cnn"])
def test_zoo_models_have_the_gradients_they_had_with_flax_max_pool(model):
    from unittest import mock

    from stn_jax.models import create_model

    net = create_model(model, dataset="rts")
    # blank canvases with one bright square: the background gives tied maxima in every pool
    images = jnp.zeros((2, 42, 42, 1)).at[0, 5:15, 8:20].set(1.0).at[1, 20:34, 11:19].set(0.5)
    params = net.init(jax.random.PRNGKey(0), images, train=False)["params"]

    def loss(p):
        logits = net.apply({"params": p}, images, train=False)
        return -jnp.sum(jax.nn.log_softmax(logits)[jnp.arange(2), jnp.array([3, 7])])

    calls = []

    def flax_pool(x):
        calls.append(x.shape)
        return _reference(x)

    ours = jax.grad(loss)(params)
    with mock.patch("stn_jax.models.zoo.max_pool_2x2", flax_pool), \
            mock.patch("stn_jax.linen.max_pool_2x2", flax_pool):
        theirs = jax.grad(loss)(params)
    assert len(calls) == (2 if model == "cnn" else 4)  # the classifier's and the localization net's pools
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
