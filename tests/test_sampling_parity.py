"""Parity of grid_sample / affine_grid with PyTorch (CPU), values and gradients.

Random cases are batched into one call per option combination (one compile each). Every batch
mixes sample points inside [-1, 1], just outside, far outside, exactly at pixel centres
(integer sample positions, where a known class of bug returns zero gradient), exactly at the
image borders (-1, +1) and half-way between pixels.
"""

from __future__ import annotations

import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stn_jax

torch = pytest.importorskip("torch")
F = torch.nn.functional

MODES_2D = ("bilinear", "nearest", "bicubic")
MODES_3D = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")


def _pixel_to_norm(i: np.ndarray, n: int, align_corners: bool) -> np.ndarray:
    if align_corners:
        return 2.0 * i / max(n - 1, 1) - 1.0
    return (2.0 * i + 1.0) / n - 1.0


def _make_grid(rng: np.random.Generator, n: int, out: tuple[int, ...], spatial: tuple[int, ...],
               align_corners: bool) -> np.ndarray:
    """(n, *out, d) grid whose points mix every region of interest, ordered (x, y[, z])."""
    d = len(spatial)
    sizes = spatial[::-1]  # sizes along x, y, z
    shape = (n,) + out + (d,)
    kind = rng.integers(0, 6, size=shape[:-1] + (1,))
    inside = rng.uniform(-1, 1, shape)
    near = rng.uniform(-1.3, 1.3, shape)
    far = rng.uniform(-6, 6, shape) * rng.choice([1.0, 30.0], shape)
    centres = np.stack([_pixel_to_norm(rng.integers(-2, s + 2, shape[:-1]), s, align_corners)
                        for s in sizes], axis=-1)
    halves = np.stack([_pixel_to_norm(rng.integers(-1, s + 1, shape[:-1]) + 0.5, s, align_corners)
                       for s in sizes], axis=-1)
    borders = rng.choice([-1.0, 1.0, 0.0], shape)
    grid = np.select([kind == k for k in range(6)], [inside, near, far, centres, halves, borders])
    return grid


def _torch_sample(image: np.ndarray, grid: np.ndarray, cot: np.ndarray, mode: str, padding: str,
                  align_corners: bool, grid_grad: bool):
    d = grid.shape[-1]
    perm_in = (0, d + 1) + tuple(range(1, d + 1))       # NHWC -> NCHW
    perm_out = (0,) + tuple(range(2, d + 2)) + (1,)     # NCHW -> NHWC
    t_img = torch.tensor(image).permute(*perm_in).contiguous().requires_grad_(True)
    t_grid = torch.tensor(grid).requires_grad_(grid_grad)
    out = F.grid_sample(t_img, t_grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    out.backward(torch.tensor(cot).permute(*perm_in))
    g_grid = t_grid.grad.numpy() if grid_grad else None
    g_img = t_img.grad.permute(*perm_out).numpy()
    return out.detach().permute(*perm_out).numpy(), g_img, g_grid


def _jax_sample(image, grid, cot, mode, padding, align_corners):
    def f(im, g):
        return stn_jax.grid_sample(im, g, mode=mode, padding_mode=padding, align_corners=align_corners)

    @jax.jit  # forward and both gradients in one compilation
    def fwd_bwd(im, g, c):
        out, vjp = jax.vjp(f, im, g)
        return (out,) + vjp(c)

    return tuple(np.asarray(x) for x in fwd_bwd(jnp.asarray(image), jnp.asarray(grid), jnp.asarray(cot)))


def _check_case(seed: int, spatial: tuple[int, ...], out: tuple[int, ...], channels: int,
                mode: str, padding: str, align_corners: bool, dtype=np.float32,
                rtol: float = 2e-5, atol: float = 2e-5) -> None:
    rng = np.random.default_rng(seed)
    n = 4
    image = rng.normal(size=(n,) + spatial + (channels,)).astype(dtype)
    grid = _make_grid(rng, n, out, spatial, align_corners).astype(dtype)
    cot = rng.normal(size=(n,) + out + (channels,)).astype(dtype)
    want = _torch_sample(image, grid, cot, mode, padding, align_corners, grid_grad=mode != "nearest")
    got = _jax_sample(image, grid, cot, mode, padding, align_corners)
    scale = max(spatial)  # grid gradients carry the unnormalisation factor (size / 2)
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=atol, err_msg="forward")
    np.testing.assert_allclose(got[1], want[1], rtol=rtol, atol=atol, err_msg="image gradient")
    if mode != "nearest":
        np.testing.assert_allclose(got[2], want[2], rtol=rtol, atol=atol * scale,
                                   err_msg="grid gradient")
    else:
        # nearest has no grid gradient; ours is exactly zero (torch's is zero too).
        assert np.all(got[2] == 0)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES_2D)
def test_grid_sample_2d_matches_torch(mode, padding, align_corners):
    seed = zlib.crc32(f"{mode}{padding}{align_corners}".encode())
    # odd, non-square input, C=3 and a different non-square output size
    _check_case(seed, (5, 7), (6, 3), 3, mode, padding, align_corners)
    # single-channel, size-1 axis, output larger than input
    _check_case(seed + 1, (1, 4), (3, 5), 1, mode, padding, align_corners)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("mode", MODES_3D)
def test_grid_sample_3d_matches_torch(mode, padding, align_corners):
    seed = zlib.crc32(f"3d{mode}{padding}{align_corners}".encode())
    # odd, non-square volume with C=3; C=1 and a size-1 axis are covered in 2-D
    _check_case(seed, (3, 1, 5) if align_corners else (3, 4, 5), (2, 3, 4), 3, mode, padding,
                align_corners)


@pytest.mark.parametrize("mode,padding,align_corners", [
    ("bilinear", "zeros", False), ("bilinear", "reflection", True), ("bicubic", "border", False),
    ("bicubic", "reflection", False), ("nearest", "reflection", True)])
def test_grid_sample_float64_matches_torch_to_1e12(mode, padding, align_corners):
    with jax.enable_x64(True):
        _check_case(7, (5, 6), (4, 3), 2, mode, padding, align_corners, dtype=np.float64,
                    rtol=1e-12, atol=1e-12)
        rng = np.random.default_rng(3)
        out = stn_jax.grid_sample(jnp.asarray(rng.normal(size=(1, 3, 3, 1))),
                                  jnp.asarray(rng.uniform(-1, 1, (1, 2, 2, 2))), mode=mode,
                                  padding_mode=padding, align_corners=align_corners)
        assert out.dtype == jnp.float64


@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
@pytest.mark.parametrize("align_corners", [False, True])
def test_gradient_at_integer_sample_positions_is_not_zero(mode, align_corners):
    """Exactly at pixel centres the grid gradient is the one-sided (forward) difference, not 0."""
    h, w = 4, 5
    ramp = np.arange(h * w, dtype=np.float32).reshape(1, h, w, 1) ** 1.5  # strictly increasing
    grid = np.asarray(stn_jax.identity_grid((h, w), align_corners=align_corners))[None]
    cot = np.ones((1, h, w, 1), np.float32)
    want = _torch_sample(ramp, grid, cot, mode, "border", align_corners, grid_grad=True)
    got = _jax_sample(ramp, grid, cot, mode, "border", align_corners)
    np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-4)
    interior = got[2][0, 1:-1, 1:-1]
    assert np.all(np.abs(interior) > 1.0), "grid gradient vanished at integer sample positions"


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(1, 1), (1, 4), (5, 1), (3, 7), (6, 6)])
def test_affine_grid_2d_matches_torch(size, align_corners):
    rng = np.random.default_rng(sum(size))
    theta = rng.normal(size=(3, 2, 3)).astype(np.float32)
    want = F.affine_grid(torch.tensor(theta), (3, 2) + size, align_corners=align_corners).numpy()
    got = np.asarray(stn_jax.affine_grid(theta, size, align_corners=align_corners))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size", [(1, 1, 1), (2, 1, 3), (3, 4, 5)])
def test_affine_grid_3d_matches_torch(size, align_corners):
    rng = np.random.default_rng(sum(size) + 10)
    theta = rng.normal(size=(2, 3, 4)).astype(np.float32)
    want = F.affine_grid(torch.tensor(theta), (2, 1) + size, align_corners=align_corners).numpy()
    got = np.asarray(stn_jax.affine_grid(theta, size, align_corners=align_corners))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_warp_matches_torch_affine_pipeline():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 6, 5, 2)).astype(np.float32)
    theta = (np.eye(2, 3)[None] + 0.3 * rng.normal(size=(2, 2, 3))).astype(np.float32)
    for pad, ac in itertools.product(PADDINGS, (False, True)):
        t_grid = F.affine_grid(torch.tensor(theta), (2, 2, 4, 7), align_corners=ac)
        want = F.grid_sample(torch.tensor(image).permute(0, 3, 1, 2), t_grid, padding_mode=pad,
                             align_corners=ac).permute(0, 2, 3, 1).numpy()
        got = stn_jax.warp(image, theta, size=(4, 7), padding_mode=pad, align_corners=ac)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
