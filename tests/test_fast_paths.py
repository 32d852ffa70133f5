"""Parity of the fast paths (stn_jax._src.bilinear, stn_jax._src.affine_grid) with the generic
sampler and PyTorch; which kernel the dispatch picks."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stn_jax
from stn_jax._src import affine_grid, dispatch

torch = pytest.importorskip("torch")
F = torch.nn.functional

PADDINGS = ("zeros", "border", "reflection")
CASES = list(itertools.product(PADDINGS, (False, True)))


def _problem(seed=0, n=2, h=5, w=7, c=2, ho=4, wo=6, spread=1.4):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, h, w, c)).astype(np.float32)
    grid = rng.uniform(-spread, spread, (n, ho, wo, 2)).astype(np.float32)
    ct = rng.standard_normal((n, ho, wo, c)).astype(np.float32)
    return image, grid, ct


def _with_integer_points(grid, h, w, align_corners):
    """Put exact pixel centres, corners and edge points into the grid (a classic bug site)."""
    grid = grid.copy()
    def centre(i, n):
        return 2 * i / (n - 1) - 1 if align_corners else (2 * i + 1) / n - 1
    grid[0, 0, 0] = [centre(2, w), centre(1, h)]
    grid[0, 0, 1] = [centre(0, w), centre(0, h)]
    grid[0, 0, 2] = [centre(w - 1, w), centre(h - 1, h)]
    grid[0, 0, 3] = [-1.0, 1.0]
    grid[0, 1, 0] = [1.0, 0.0]
    return grid


def _run(impl, image, grid, ct, padding_mode, align_corners):
    with stn_jax.sampler_implementation(impl):
        def loss(a, g):
            out = stn_jax.grid_sample(a, g, padding_mode=padding_mode, align_corners=align_corners)
            return jnp.vdot(out, ct)
        out = stn_jax.grid_sample(image, grid, padding_mode=padding_mode, align_corners=align_corners)
        gi, gg = jax.jit(jax.grad(loss, argnums=(0, 1)))(image, grid)
    return np.asarray(out), np.asarray(gi), np.asarray(gg)


def _torch(image, grid, ct, padding_mode, align_corners):
    ti = torch.tensor(image.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tg = torch.tensor(grid, requires_grad=True)
    out = F.grid_sample(ti, tg, mode="bilinear", padding_mode=padding_mode, align_corners=align_corners)
    out.backward(torch.tensor(ct.transpose(0, 3, 1, 2).copy()))
    return (out.detach().numpy().transpose(0, 2, 3, 1), ti.grad.numpy().transpose(0, 2, 3, 1),
            tg.grad.numpy())


def test_fast_path_is_the_default_for_2d_bilinear():
    assert dispatch.choose_kernel("bilinear", 2) == ("window", 1)
    assert dispatch.choose_kernel("nearest", 2) == ("generic", 1)
    assert dispatch.choose_kernel("bicubic", 2) == ("generic", 1)
    assert dispatch.choose_kernel("bilinear", 3) == ("generic", 1)
    with stn_jax.sampler_implementation("generic"):
        assert dispatch.choose_kernel("bilinear", 2) == ("generic", 1)
    with stn_jax.sampler_implementation("fast"):
        assert dispatch.choose_kernel("bilinear", 2) == ("window", 1)
    assert dispatch.choose_kernel("bilinear", 2) == ("window", 1)


def test_unknown_implementation_raises():
    with pytest.raises(ValueError, match="unknown sampler implementation"):
        with stn_jax.sampler_implementation("pallas"):
            pass


@pytest.mark.parametrize("padding_mode,align_corners", CASES)
def test_fast_matches_torch_values_and_both_gradients(padding_mode, align_corners):
    image, grid, ct = _problem()
    grid = _with_integer_points(grid, 5, 7, align_corners)
    want = _torch(image, grid, ct, padding_mode, align_corners)
    got = _run("fast", image, grid, ct, padding_mode, align_corners)
    for name, g, w in zip(("output", "image grad", "grid grad"), got, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-5, err_msg=name)


@pytest.mark.parametrize("padding_mode,align_corners", CASES)
def test_fast_matches_generic_with_non_finite_and_huge_coordinates(padding_mode, align_corners):
    image, grid, ct = _problem(seed=1)
    grid[1, 0, 0] = [np.nan, 0.3]
    grid[1, 0, 1] = [np.inf, 0.0]
    grid[1, 0, 2] = [0.1, -np.inf]
    grid[1, 0, 3] = [1e30, 0.2]
    grid[1, 1, 0] = [-3.0, 5.0]
    fast = _run("fast", image, grid, ct, padding_mode, align_corners)
    generic = _run("generic", image, grid, ct, padding_mode, align_corners)
    for g, w in zip(fast, generic, strict=True):
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-5)
    # non-finite points: zero output and zero grid gradient in every padding mode
    np.testing.assert_array_equal(fast[0][1, 0, :3], 0.0)
    np.testing.assert_array_equal(fast[2][1, 0, :3], 0.0)


@pytest.mark.parametrize("padding_mode", PADDINGS)
def test_second_order_and_forward_mode_match_generic(padding_mode):
    image, grid, ct = _problem(seed=2, n=1, h=4, w=5, c=1, ho=3, wo=3)

    def derived(impl):
        with stn_jax.sampler_implementation(impl):
            def loss(a, g):
                return jnp.vdot(stn_jax.grid_sample(a, g, padding_mode=padding_mode), ct)

            def grad_norm(a, g):
                gi, gg = jax.grad(loss, argnums=(0, 1))(a, g)
                return jnp.sum(gi ** 2) + jnp.sum(jnp.sin(gg))

            second = jax.grad(grad_norm, argnums=(0, 1))(image, grid)
            tangent = jax.jvp(lambda a, g: stn_jax.grid_sample(a, g, padding_mode=padding_mode),
                              (image, grid), (0.3 * image, 0.1 * grid + 0.01))[1]
            hess = jax.hessian(lambda g: loss(image, g))(grid)
        return [np.asarray(x) for x in (*second, tangent, hess)]

    for f, g in zip(derived("fast"), derived("generic"), strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-5, atol=1e-5)


def test_vmap_jit_checkpoint_and_unbatched_agree():
    image, grid, ct = _problem(seed=3)
    ref = stn_jax.grid_sample(image, grid)
    per_example = jax.vmap(lambda a, g: stn_jax.grid_sample(a, g))(image, grid)
    np.testing.assert_allclose(per_example, ref, rtol=1e-6, atol=1e-6)

    def loss(a, g):
        return jnp.vdot(stn_jax.grid_sample(a, g), ct)

    plain = jax.grad(loss, argnums=(0, 1))(image, grid)
    remat = jax.jit(jax.grad(jax.checkpoint(loss), argnums=(0, 1)))(image, grid)
    for p, r in zip(plain, remat, strict=True):
        np.testing.assert_allclose(p, r, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_half_precision_inputs_follow_the_dtype_policy(dtype):
    image, grid, ct = _problem(seed=4)
    img_h = jnp.asarray(image, dtype)
    out = stn_jax.grid_sample(img_h, jnp.asarray(grid, dtype))
    assert out.dtype == dtype
    with stn_jax.sampler_implementation("generic"):
        want = stn_jax.grid_sample(img_h, jnp.asarray(grid, dtype))
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(want, np.float32), atol=1e-2)
    gi, gg = jax.grad(lambda a, g: jnp.sum(stn_jax.grid_sample(a, g).astype(jnp.float32)),
                      argnums=(0, 1))(img_h, jnp.asarray(grid, dtype))
    assert gi.dtype == dtype and gg.dtype == dtype


@pytest.mark.parametrize("size,align_corners", [((5, 7), False), ((5, 7), True), ((3, 4, 5), False)])
def test_affine_grid_values_and_derivatives_match_torch(size, align_corners):
    rng = np.random.default_rng(5)
    d = len(size)
    theta = rng.standard_normal((2, d, d + 1)).astype(np.float32)
    grid = stn_jax.affine_grid(theta, size, align_corners=align_corners)
    tt = torch.tensor(theta, requires_grad=True)
    want = F.affine_grid(tt, (2, 1) + size, align_corners=align_corners)
    np.testing.assert_allclose(grid, want.detach().numpy(), rtol=1e-6, atol=1e-6)
    ct = rng.standard_normal(grid.shape).astype(np.float32)
    want.backward(torch.tensor(ct))
    got = jax.grad(lambda t: jnp.vdot(stn_jax.affine_grid(t, size, align_corners=align_corners), ct))(theta)
    np.testing.assert_allclose(got, tt.grad.numpy(), rtol=1e-5, atol=1e-5)
    # forward mode: the grid is linear in theta, so its JVP along t is the grid of t itself.
    t = rng.standard_normal(theta.shape).astype(np.float32)
    tangent = jax.jvp(lambda th: affine_grid.affine_grid(th, size, align_corners), (theta,), (t,))[1]
    np.testing.assert_allclose(tangent, stn_jax.affine_grid(t, size, align_corners=align_corners),
                               rtol=1e-5, atol=1e-5)


def test_warp_fast_path_matches_generic_gradients_wrt_image_and_theta():
    rng = np.random.default_rng(6)
    image = rng.standard_normal((3, 9, 8, 2)).astype(np.float32)
    theta = (np.eye(2, 3)[None] + 0.3 * rng.standard_normal((3, 2, 3))).astype(np.float32)
    ct = rng.standard_normal((3, 9, 8, 2)).astype(np.float32)
    results = {}
    for impl in ("fast", "generic"):
        with stn_jax.sampler_implementation(impl):
            results[impl] = jax.grad(lambda a, t: jnp.vdot(stn_jax.warp(a, t), ct), argnums=(0, 1))(image, theta)
    for f, g in zip(results["fast"], results["generic"], strict=True):
        np.testing.assert_allclose(f, g, rtol=1e-5, atol=1e-5)
