"""Bad input raises a ValueError/TypeError naming what was expected, eagerly and at trace time."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import stn_jax

IMG = np.zeros((2, 4, 5, 1), np.float32)
GRID = np.zeros((2, 3, 3, 2), np.float32)

SAMPLE_CASES = [
    # (image, grid, kwargs, exception, message regex)
    (IMG[0, 0], GRID, {}, ValueError, r"image rank 2 does not match grid rank 4"),
    (IMG, GRID[0], {}, ValueError, r"image rank 4 does not match grid rank 3"),
    (IMG, GRID[:1], {}, ValueError, r"batch sizes differ: image has 2, grid has 1"),
    (IMG, np.zeros((2, 3, 3, 4), np.float32), {}, ValueError, r"last axis must hold 2 \(x, y\) or 3"),
    (IMG, np.zeros((2, 3), np.float32), {}, ValueError, r"grid's last axis"),
    (IMG, np.zeros((2, 3, 3, 3, 3, 2), np.float32), {}, ValueError, r"must have rank 4 \(batched\) or 3"),
    (IMG, GRID, {"mode": "linear"}, ValueError, r"unknown mode 'linear'; expected one of"),
    (IMG, GRID, {"padding_mode": "wrap"}, ValueError, r"unknown padding_mode 'wrap'; expected one of"),
    (np.zeros((1, 2, 3, 4, 1), np.float32), np.zeros((1, 2, 2, 2, 3), np.float32),
     {"mode": "bicubic"}, ValueError, r"bicubic.*only 2-D"),
    (IMG, GRID.astype(np.int32), {}, TypeError, r"grid must be a floating-point array"),
    (IMG.astype(np.uint8), GRID, {}, TypeError, r"image must be a floating-point array"),
    (np.zeros((2, 0, 5, 1), np.float32), GRID, {}, ValueError, r"spatial size must be non-zero"),
]


@pytest.mark.parametrize("image,grid,kwargs,exc,match", SAMPLE_CASES)
def test_grid_sample_errors(image, grid, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        stn_jax.grid_sample(image, grid, **kwargs)
    # the same error at trace time under jit (no device computation needed to detect it)
    with pytest.raises(exc, match=match):
        jax.jit(lambda a, b: stn_jax.grid_sample(a, b, **kwargs)).trace(image, grid)


GRID_CASES = [
    (lambda: stn_jax.affine_grid(np.zeros((1, 2, 3), np.float32), (4,)), ValueError,
     r"size must be \(H, W\) or \(D, H, W\)"),
    (lambda: stn_jax.affine_grid(np.zeros((1, 2, 3), np.float32), (4, 0)), ValueError,
     r"positive entries"),
    (lambda: stn_jax.affine_grid(np.zeros((1, 2, 3), np.float32), 5), ValueError,
     r"size must be a tuple of spatial sizes"),
    (lambda: stn_jax.affine_grid(np.zeros((1, 2, 3), np.float32), (2, 4, 5)), ValueError,
     r"theta must have shape \(N, 3, 4\)"),
    (lambda: stn_jax.affine_grid(np.zeros((1, 3, 3), np.float32), (4, 5)), ValueError,
     r"theta must have shape \(N, 2, 3\) or \(2, 3\)"),
    (lambda: stn_jax.affine_grid(np.zeros((1, 2, 3), np.int32), (4, 5)), TypeError,
     r"theta must be a floating-point array"),
    (lambda: stn_jax.projective_grid(np.zeros((1, 2, 3), np.float32), (4, 5)), ValueError,
     r"homography must have shape \(N, 3, 3\)"),
    (lambda: stn_jax.tps_grid(np.zeros((1, 15, 2), np.float32), (4, 5)), ValueError,
     r"does not hold K=15 control points"),
    (lambda: stn_jax.tps_grid(np.zeros((1, 16, 2), np.float32), (4, 5), control_grid=(3, 4)),
     ValueError, r"control_grid \(3, 4\) does not hold K=16"),
    (lambda: stn_jax.tps_grid(np.zeros((1, 16, 3), np.float32), (4, 5)), ValueError,
     r"displacements must have shape \(N, K, 2\)"),
    (lambda: stn_jax.warp(IMG, np.zeros((2, 2, 2), np.float32)), ValueError,
     r"theta must have shape \(N, 2, 3\), \(N, 3, 4\)"),
    (lambda: stn_jax.warp(IMG[0], np.zeros((2, 2, 3), np.float32)), ValueError,
     r"image must have rank 4"),
    (lambda: stn_jax.get_transform("rigid"), ValueError, r"unknown transform kind 'rigid'; expected one of"),
    (lambda: stn_jax.get_transform("tps", num_control_points=10), ValueError, r"perfect square >= 4"),
    (lambda: stn_jax.get_transform("affine").grid(np.zeros((2, 5), np.float32), (4, 4)), ValueError,
     r"affine transform expects parameters of shape \(\.\.\., 6\)"),
    (lambda: stn_jax.get_transform("tps").matrix(np.zeros((2, 32), np.float32)), ValueError,
     r"tps transform has no matrix"),
    (lambda: stn_jax.compose_affine(np.zeros((2, 3)), np.zeros((3, 3))), ValueError,
     r"must have shape \(\.\.\., 2, 3\) \(2-D\) or \(\.\.\., 3, 4\)"),
    (lambda: stn_jax.pixel_to_normalized(np.zeros((4, 3), np.float32), (4, 5)), ValueError,
     r"coords must have shape \(\.\.\., 2\)"),
]


@pytest.mark.parametrize("call,exc,match", GRID_CASES)
def test_grid_and_transform_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_grid_errors_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"theta must have shape"):
        jax.jit(lambda t: stn_jax.affine_grid(t, (4, 5))).trace(jnp.zeros((1, 3, 3)))
    with pytest.raises(ValueError, match=r"K=9"):
        jax.jit(lambda d: stn_jax.tps_grid(d, (4, 5), control_grid=(2, 2))).trace(jnp.zeros((1, 9, 2)))
    with pytest.raises(ValueError, match=r"image must have rank"):
        jax.jit(lambda im, t: stn_jax.warp(im, t)).trace(jnp.zeros((4, 4, 1)), jnp.zeros((1, 2, 3)))
