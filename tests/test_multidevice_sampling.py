"""grid_sample + grad under a device mesh with the batch sharded equals the single-device result."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import stn_jax


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_sharded_batch_matches_single_device(mode):
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs the 8 fake CPU devices set up by conftest.py")
    mesh = Mesh(np.array(devices[:8]), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 6, 7, 2)).astype(np.float32)
    theta = (np.eye(2, 3)[None] + 0.2 * rng.normal(size=(16, 2, 3))).astype(np.float32)

    def loss(t, im):
        out = stn_jax.warp(im, t, mode=mode, padding_mode="reflection")
        return jnp.sum(out ** 2), out

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))
    (ref_loss, ref_out), ref_grads = step(jnp.asarray(theta), jnp.asarray(image))

    s_theta, s_image = jax.device_put(theta, sharding), jax.device_put(image, sharding)
    (loss_v, out), grads = step(s_theta, s_image)
    assert out.sharding.is_equivalent_to(sharding, out.ndim)
    assert grads[1].sharding.is_equivalent_to(sharding, image.ndim)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(float(loss_v), float(ref_loss), rtol=1e-5)
    for a, b in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_sharded_3d_grid_sample():
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs the 8 fake CPU devices set up by conftest.py")
    mesh = Mesh(np.array(devices[:8]), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    rng = np.random.default_rng(1)
    image = rng.normal(size=(8, 3, 4, 5, 1)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (8, 2, 3, 2, 3)).astype(np.float32)
    f = jax.jit(jax.grad(lambda im, g: jnp.sum(stn_jax.grid_sample(im, g) ** 2), argnums=(0, 1)))
    ref = f(image, grid)
    got = f(jax.device_put(image, sharding), jax.device_put(grid, sharding))
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_sharded_axis_aligned_warp():
    """The matrix-product path (batched dots) keeps the batch sharding and the result."""
    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs the 8 fake CPU devices set up by conftest.py")
    sharding = NamedSharding(Mesh(np.array(devices[:8]), ("data",)), P("data"))
    rng = np.random.default_rng(2)
    image = rng.normal(size=(16, 9, 8, 2)).astype(np.float32)
    scale = rng.uniform(0.4, 1.2, (16, 2)).astype(np.float32)
    shift = rng.uniform(-0.5, 0.5, (16, 2)).astype(np.float32)

    def loss(im, s, t):
        out = stn_jax.axis_aligned_warp(im, s, t, size=(5, 6))
        return jnp.sum(out ** 2), out

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
    (_, ref_out), ref_grads = step(image, scale, shift)
    (_, out), grads = step(*(jax.device_put(a, sharding) for a in (image, scale, shift)))
    assert out.sharding.is_equivalent_to(sharding, out.ndim)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref_out), rtol=1e-6, atol=1e-6)
    for a, b in zip(grads, ref_grads, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
