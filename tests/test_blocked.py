"""The cache-blocked derivative (stn_jax._src.blocked): exact parity with the unblocked sampler, dispatch."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stn_jax
from stn_jax._src import bilinear, blocked, dispatch

CASES = list(itertools.product(("zeros", "border", "reflection"), (False, True)))


def _problem(seed=0, n=8, h=5, w=7, c=2, ho=4, wo=6):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.standard_normal((n, h, w, c)), jnp.float32)
    grid = rng.uniform(-1.3, 1.3, (n, ho, wo, 2)).astype(np.float32)
    grid[0, 0, 0] = [np.nan, 0.2]  # non-finite points are outside, with zero gradients
    grid[1, 0, 0] = [-1.0, 1.0]
    ct = jnp.asarray(rng.standard_normal((n, ho, wo, c)), jnp.float32)
    return image, jnp.asarray(grid), ct


def _pair(padding_mode, align_corners, steps=4):
    options = dict(padding_mode=padding_mode, align_corners=align_corners, compute_dtype=jnp.float32)
    chunked = lambda a, g: blocked.sample_batched(a, g, steps=steps, **options)  # noqa: E731
    plain = jax.vmap(lambda a, g: bilinear.sample_one(a, g, **options))
    return chunked, plain


@pytest.mark.parametrize("padding_mode,align_corners", CASES)
def test_values_and_reverse_mode_equal_the_unblocked_sampler(padding_mode, align_corners):
    image, grid, ct = _problem()
    chunked, plain = _pair(padding_mode, align_corners)
    np.testing.assert_array_equal(chunked(image, grid), plain(image, grid))
    for argnums in ((0, 1), 0, 1):
        got = jax.jit(jax.grad(lambda a, g: jnp.vdot(chunked(a, g), ct), argnums=argnums))(image, grid)
        want = jax.jit(jax.grad(lambda a, g: jnp.vdot(plain(a, g), ct), argnums=argnums))(image, grid)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-6)
            assert np.all(np.isfinite(x))


def test_forward_mode_second_order_and_vmap_equal_the_unblocked_sampler():
    image, grid, ct = _problem(seed=1)
    chunked, plain = _pair("zeros", False, steps=2)
    rng = np.random.default_rng(2)
    t_image = jnp.asarray(rng.standard_normal(image.shape), jnp.float32)
    t_grid = jnp.asarray(rng.standard_normal(grid.shape), jnp.float32)
    primals, tangents = (image, grid), (t_image, t_grid)
    (o1, t1), (o2, t2) = jax.jvp(chunked, primals, tangents), jax.jvp(plain, primals, tangents)
    np.testing.assert_allclose(o1, o2, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(t1, t2, rtol=1e-5, atol=1e-5)
    # Hessian-vector product w.r.t. the grid of a loss that also depends on the image gradient.
    def loss(fn):
        def f(g):
            gi = jax.grad(lambda a: jnp.sum(fn(a, g) ** 2))(image)
            return jnp.sum(gi ** 2)
        return f
    hv1 = jax.jvp(jax.grad(loss(chunked)), (grid,), (t_grid,))[1]
    hv2 = jax.jvp(jax.grad(loss(plain)), (grid,), (t_grid,))[1]
    np.testing.assert_allclose(hv1, hv2, rtol=1e-4, atol=1e-4)
    # vmap over an extra leading axis.
    stacked = jnp.stack([image, image[::-1]]), jnp.stack([grid, grid[::-1]])
    g1 = jax.vmap(jax.grad(lambda a, g: jnp.vdot(chunked(a, g), ct)))(*stacked)
    g2 = jax.vmap(jax.grad(lambda a, g: jnp.vdot(plain(a, g), ct)))(*stacked)
    np.testing.assert_allclose(g1, g2, rtol=1e-6, atol=1e-6)


def test_steps_must_divide_the_batch():
    image, grid, _ = _problem(n=6)
    with pytest.raises(ValueError, match="positive divisor of the batch size 6"):
        blocked.sample_batched(image, grid, padding_mode="zeros", align_corners=False,
                               compute_dtype=jnp.float32, steps=4)


@pytest.mark.parametrize("batch,points,expected", [
    (256, 28 * 28, 1),        # below BLOCK_MIN_POINTS: the measured slowdown case
    (256, 60 * 60, 8),        # BLOCK_MIN_STEPS
    (32, 224 * 224, 8),       # 1.6M points: 8 steps of 200K (4 examples)
    (64, 96 * 96, 8),
    (257, 60 * 60, 1),        # prime batch: the only divisor leaves 3600 points per step
    (2, 1024 * 1024, 2),      # fewer examples than MIN_STEPS
])
def test_blocked_steps(batch, points, expected):
    steps = dispatch.blocked_steps(batch, points)
    assert steps == expected
    assert batch % steps == 0


def _grad_jaxpr(argnums):
    image, grid, ct = _problem()
    loss = lambda a, g: jnp.vdot(stn_jax.grid_sample(a, g), ct)  # noqa: E731
    return str(jax.make_jaxpr(jax.grad(loss, argnums=argnums))(image, grid)), (image, grid, ct, loss)


def test_grid_sample_blocks_the_image_gradient_only_when_enabled(monkeypatch):
    # The test process has 8 CPU devices (conftest), where blocking is off by design.
    assert not dispatch.on_single_cpu_device()
    assert dispatch.choose_kernel("bilinear", 2, batch=256, points_per_example=60 * 60) == ("window", 1)
    assert "scan" not in _grad_jaxpr((0, 1))[0]
    # As on a one-device CPU process (the "auto" check stays).
    monkeypatch.setattr(dispatch, "on_single_cpu_device", lambda: True)
    monkeypatch.setattr(dispatch, "blocked_steps", lambda batch, points: 4)
    assert dispatch.choose_kernel("bilinear", 2, batch=8, points_per_example=24) == ("blocked", 4)
    assert dispatch.choose_kernel("bilinear", 2) == ("window", 1)  # unbatched: never blocked
    text, (image, grid, ct, loss) = _grad_jaxpr((0, 1))
    assert "scan" in text
    assert "scan" not in _grad_jaxpr(1)[0]  # constant image: the unblocked grid-only rule
    got = jax.grad(loss, argnums=(0, 1))(image, grid)
    with stn_jax.sampler_implementation("fast"):  # pins the unblocked path
        assert "scan" not in _grad_jaxpr((0, 1))[0]
        want = jax.grad(loss, argnums=(0, 1))(image, grid)
    for x, y in zip(got, want, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)
