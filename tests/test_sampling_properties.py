"""Invariants of grid_sample: round trips, shifts, rotations, channels, dtypes, transformations.

The chex test cases run each check under every chex variant (with and without jit, on device,
and pmapped), as dm-pix does.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import stn_jax

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)
PADDINGS = ("zeros", "border", "reflection")


def _image(seed: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


@SETTINGS
@given(h=st.integers(1, 6), w=st.integers(1, 6), align_corners=st.booleans(),
       mode=st.sampled_from(["bilinear", "nearest", "bicubic"]))
def test_identity_round_trip(h, w, align_corners, mode):
    image = _image(h * 7 + w, (2, h, w, 3))
    grid = jnp.broadcast_to(stn_jax.identity_grid((h, w), align_corners=align_corners), (2, h, w, 2))
    out = stn_jax.grid_sample(image, grid, mode=mode, align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(out), image, atol=1e-5)


@SETTINGS
@given(dx=st.integers(-3, 3), dy=st.integers(-3, 3), padding=st.sampled_from(PADDINGS))
def test_integer_pixel_translation_is_a_shift(dx, dy, padding):
    """Sampling at pixel (col + dx, row + dy) equals the image shifted with the padding rule."""
    h, w = 4, 5
    image = _image((dx + 3) * 10 + dy + 3, (1, h, w, 2))
    theta = stn_jax.pixel_affine_to_theta(jnp.asarray([[1.0, 0.0, dx], [0.0, 1.0, dy]]), (h, w))
    out = np.asarray(stn_jax.warp(image, theta[None], padding_mode=padding))
    rows, cols = np.arange(h)[:, None] + dy, np.arange(w)[None, :] + dx
    if padding == "zeros":
        inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
        want = np.where(inside[..., None], image[0, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)], 0)
    elif padding == "border":
        want = image[0, np.clip(rows, 0, h - 1), np.clip(cols, 0, w - 1)]
    else:  # reflection about the outer pixel edges (align_corners=False): -1 -> 0, -2 -> 1, h -> h-1

        def refl(i, n):
            i = np.where(i < 0, -i - 1, i)
            return np.where(i >= n, 2 * n - 1 - i, i)

        want = image[0, refl(rows, h), refl(cols, w)]
    np.testing.assert_allclose(out[0], want, atol=1e-5)


class VariantsTest(chex.TestCase):

    @chex.all_variants
    @parameterized.product(k=(1, 2, 3), align_corners=(False, True))
    def test_rotation_by_90_degrees_equals_rot90(self, k, align_corners):
        n = 5  # square, so a rotation about the centre maps pixel centres onto pixel centres
        image = _image(k, (1, n, n, 2))
        params = stn_jax.rotation_params(k * np.pi / 2)
        theta = stn_jax.get_transform("similarity").matrix(params[None])
        theta = jnp.round(theta)  # exact 0/+-1 entries (cos(pi/2) is 6e-17, not 0)
        warp = self.variant(lambda a, t: stn_jax.warp(a, t, align_corners=align_corners))
        out = np.asarray(warp(image, theta))
        # theta maps output (x, y) to source (x cos - y sin, x sin + y cos); for 90 deg the source
        # of output (row i, col j) is (row j, col n-1-i): numpy's rot90 over (rows, cols).
        want = np.rot90(image[0], k=k, axes=(0, 1))
        np.testing.assert_allclose(out[0], want, atol=1e-5)

    @chex.all_variants
    @parameterized.parameters("bilinear", "nearest", "bicubic")
    def test_each_channel_alone_equals_multichannel(self, mode):
        rng = np.random.default_rng(0)
        image = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
        grid = rng.uniform(-1.2, 1.2, (2, 4, 3, 2)).astype(np.float32)
        sample = self.variant(lambda a, g: stn_jax.grid_sample(a, g, mode=mode, padding_mode="reflection"))
        full = sample(image, grid)
        for c in range(3):
            one = sample(image[..., c:c + 1], grid)
            np.testing.assert_allclose(np.asarray(one), np.asarray(full[..., c:c + 1]), atol=1e-6)


@pytest.mark.parametrize("ndim", [2, 3])
def test_jit_vmap_unbatched_agree(ndim):
    rng = np.random.default_rng(ndim)
    spatial = (3, 4, 5)[-ndim:]
    image = rng.normal(size=(3,) + spatial + (2,)).astype(np.float32)
    grid = rng.uniform(-1.2, 1.2, (3,) + (2,) * ndim + (ndim,)).astype(np.float32)
    batched = np.asarray(stn_jax.grid_sample(image, grid, padding_mode="border"))
    jitted = jax.jit(lambda a, b: stn_jax.grid_sample(a, b, padding_mode="border"))(image, grid)
    vmapped = jax.vmap(lambda a, b: stn_jax.grid_sample(a, b, padding_mode="border"))(image, grid)
    single = np.stack([stn_jax.grid_sample(image[i], grid[i], padding_mode="border") for i in range(3)])
    for other in (jitted, vmapped, single):
        np.testing.assert_allclose(np.asarray(other), batched, atol=1e-6)


def test_grad_and_checkpoint_agree():
    rng = np.random.default_rng(1)
    image = jnp.asarray(rng.normal(size=(2, 5, 5, 1)), jnp.float32)
    theta = jnp.asarray(np.eye(2, 3)[None].repeat(2, 0) + 0.1 * rng.normal(size=(2, 2, 3)), jnp.float32)

    def loss(t, im):
        return jnp.sum(stn_jax.warp(im, t, padding_mode="border") ** 2)

    plain = jax.grad(loss, argnums=(0, 1))(theta, image)
    remat = jax.jit(jax.grad(jax.checkpoint(loss), argnums=(0, 1)))(theta, image)
    for a, b in zip(plain, remat, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(plain[0]).sum()) > 0


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_check_grads_smooth_case(mode):
    """Points strictly between pixel centres, inside the image: the sampler is smooth there."""
    rng = np.random.default_rng(2)
    h, w = 5, 6
    image = jnp.asarray(rng.normal(size=(1, h, w, 2)))
    # pixel coordinates in (1.2, 1.8) + integer offsets: away from the kinks at integers
    cols = rng.integers(1, w - 2, (1, 3, 3)) + rng.uniform(0.2, 0.8, (1, 3, 3))
    rows = rng.integers(1, h - 2, (1, 3, 3)) + rng.uniform(0.2, 0.8, (1, 3, 3))
    grid = stn_jax.pixel_to_normalized(jnp.stack([cols, rows], -1), (h, w))
    with jax.enable_x64(True):
        f = lambda im, g: stn_jax.grid_sample(im, g, mode=mode)
        check_grads(f, (jnp.asarray(image, jnp.float64), jnp.asarray(grid, jnp.float64)), order=2,
                    modes=("rev",), eps=1e-4, atol=1e-5, rtol=1e-5)  # O(eps^2) FD error


@SETTINGS
@given(seed=st.integers(0, 1000))
def test_compose_affine_equals_sampling_twice_inside(seed):
    """Inside the image, one warp by compose_affine(a, b) equals warping by a then by b."""
    rng = np.random.default_rng(seed)
    h = w = 16
    yy, xx = np.mgrid[0:h, 0:w] / 15.0
    image = np.sin(3 * xx + 2 * yy)[None, :, :, None].astype(np.float32)  # smooth image
    a = np.eye(2, 3) + 0.05 * rng.normal(size=(2, 3))
    b = np.eye(2, 3) + 0.05 * rng.normal(size=(2, 3))
    a, b = a[None].astype(np.float32), b[None].astype(np.float32)
    twice = stn_jax.warp(stn_jax.warp(image, a, align_corners=True), b, align_corners=True)
    once = stn_jax.warp(image, stn_jax.compose_affine(a, b), align_corners=True)
    # compare away from the border, where neither warp sampled outside the image
    inner = np.s_[:, 4:-4, 4:-4]
    np.testing.assert_allclose(np.asarray(once)[inner], np.asarray(twice)[inner], atol=0.05)


@SETTINGS
@given(seed=st.integers(0, 1000), three_d=st.booleans())
def test_invert_affine_round_trip(seed, three_d):
    rng = np.random.default_rng(seed)
    d = 3 if three_d else 2
    theta = (np.eye(d, d + 1) + 0.3 * rng.normal(size=(2, d, d + 1))).astype(np.float32)
    ident = stn_jax.compose_affine(theta, stn_jax.invert_affine(theta))
    np.testing.assert_allclose(np.asarray(ident), np.broadcast_to(np.eye(d, d + 1), ident.shape), atol=1e-4)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_half_precision_returns_input_dtype_and_is_close(dtype, mode):
    rng = np.random.default_rng(4)
    image = rng.uniform(0, 1, (2, 6, 5, 2)).astype(np.float32)
    grid = rng.uniform(-1.1, 1.1, (2, 4, 4, 2)).astype(np.float32)
    ref = np.asarray(stn_jax.grid_sample(jnp.asarray(image).astype(dtype), grid, mode=mode))
    out = stn_jax.grid_sample(jnp.asarray(image).astype(dtype), jnp.asarray(grid).astype(dtype), mode=mode)
    assert out.dtype == dtype
    full = np.asarray(stn_jax.grid_sample(image, grid, mode=mode))
    assert ref.dtype == dtype
    if mode != "nearest":  # nearest can snap to a neighbour when the grid itself is rounded
        np.testing.assert_allclose(np.asarray(out, np.float32), full, atol=0.05)
    np.testing.assert_allclose(np.asarray(ref, np.float32), full, atol=0.02)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", ["bilinear", "nearest", "bicubic"])
def test_non_finite_grid_gives_zero_output_and_zero_gradients(mode, padding):
    image = jnp.asarray(_image(5, (1, 4, 4, 2)))
    bad = np.array([np.nan, np.inf, -np.inf], np.float32)
    grid = np.zeros((1, 3, 3, 2), np.float32)
    grid[0, 0, :, 0] = bad          # bad x
    grid[0, 1, :, 1] = bad          # bad y
    grid[0, 2, :, :] = bad[:, None]  # both bad
    grid[0, 2, 2, :] = 0.25          # one finite point
    grid = jnp.asarray(grid)

    def f(im, g):
        return stn_jax.grid_sample(im, g, mode=mode, padding_mode=padding)

    out = np.asarray(f(image, grid))
    assert np.all(out[0, :2] == 0) and np.all(out[0, 2, :2] == 0)
    assert np.all(np.isfinite(out)) and np.any(out[0, 2, 2] != 0)
    g_img, g_grid = jax.grad(lambda im, g: jnp.sum(f(im, g)), argnums=(0, 1))(image, grid)
    assert np.all(np.isfinite(np.asarray(g_img))) and np.all(np.isfinite(np.asarray(g_grid)))
    assert np.all(np.asarray(g_grid)[0, :2] == 0) and np.all(np.asarray(g_grid)[0, 2, :2] == 0)
    # only the single finite point contributes to the image gradient
    g_one = jax.grad(lambda im: jnp.sum(f(im, grid[:, 2:, 2:])))(image)
    np.testing.assert_allclose(np.asarray(g_img), np.asarray(g_one), atol=1e-6)


def test_non_finite_grid_in_3d():
    image = jnp.asarray(_image(6, (1, 2, 3, 3, 1)))
    grid = jnp.full((1, 1, 2, 2, 3), jnp.nan).at[0, 0, 0, 0].set(jnp.asarray([0.1, 0.2, jnp.inf]))
    out, vjp = jax.vjp(lambda im, g: stn_jax.grid_sample(im, g, padding_mode="border"), image, grid)
    assert np.all(np.asarray(out) == 0)
    for g in vjp(jnp.ones_like(out)):
        assert np.all(np.asarray(g) == 0)
