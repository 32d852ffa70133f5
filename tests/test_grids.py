"""Grid generators: identity, pixel helpers, projective vs affine, thin-plate spline."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from hypothesis import given, settings
from hypothesis import strategies as st

import stn_jax
from stn_jax import grids
from stn_jax._src import tps

SETTINGS = settings(max_examples=10, deadline=None, derandomize=True)


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_values(align_corners):
    g = np.asarray(stn_jax.identity_grid((2, 4), align_corners=align_corners))
    xs = [-1, -1 / 3, 1 / 3, 1] if align_corners else [-0.75, -0.25, 0.25, 0.75]
    ys = [-1, 1] if align_corners else [-0.5, 0.5]
    np.testing.assert_allclose(g[0, :, 0], xs, atol=1e-7)
    np.testing.assert_allclose(g[:, 0, 1], ys, atol=1e-7)
    g3 = np.asarray(stn_jax.identity_grid((3, 1, 2), align_corners=align_corners))
    assert g3.shape == (3, 1, 2, 3)
    np.testing.assert_allclose(g3[:, 0, 0, 2], [-1, 0, 1] if align_corners else [-2 / 3, 0, 2 / 3], atol=1e-7)


@SETTINGS
@given(h=st.integers(2, 9), w=st.integers(2, 9), align_corners=st.booleans(), seed=st.integers(0, 99))
def test_pixel_normalized_round_trip(h, w, align_corners, seed):
    rng = np.random.default_rng(seed)
    pix = rng.uniform(-3, 12, (5, 2)).astype(np.float32)
    norm = stn_jax.pixel_to_normalized(pix, (h, w), align_corners=align_corners)
    back = stn_jax.normalized_to_pixel(norm, (h, w), align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(back), pix, atol=1e-4)
    # pixel centres map onto the identity grid
    ident = stn_jax.identity_grid((h, w), align_corners=align_corners)
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    centres = stn_jax.pixel_to_normalized(np.stack([cols, rows], -1).astype(np.float32), (h, w),
                                          align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(centres), np.asarray(ident), atol=1e-6)


class VariantsTest(chex.TestCase):
    """Grid generators under every chex variant (with and without jit, on device, pmapped)."""

    @chex.all_variants
    @parameterized.parameters(False, True)
    def test_pixel_affine_to_theta_matches_hand_computed_translation(self, align_corners):
        h, w = 4, 8
        to_theta = self.variant(
            lambda m: stn_jax.pixel_affine_to_theta(m, (h, w), align_corners=align_corners))
        theta = np.asarray(to_theta(np.array([[1.0, 0, 2.0], [0, 1.0, -1.0]], np.float32)))
        # a shift of 2 px in x and -1 px in y is 2 * (2 / W) and -1 * (2 / H) normalised units
        # (2 / (W - 1), 2 / (H - 1) with align_corners=True)
        sx, sy = (2 / (w - 1), 2 / (h - 1)) if align_corners else (2 / w, 2 / h)
        np.testing.assert_allclose(theta, [[1, 0, 2 * sx], [0, 1, -1 * sy]], atol=1e-6)
        # different output size: the scale part maps output pixels to input pixels 1:1
        to_pixels = self.variant(lambda m: stn_jax.normalized_to_pixel(
            stn_jax.affine_grid(stn_jax.pixel_affine_to_theta(m, (h, w), size=(2, 4))[None], (2, 4)),
            (h, w)))
        pix = to_pixels(np.eye(2, 3, dtype=np.float32))
        cols, rows = np.meshgrid(np.arange(4), np.arange(2))
        np.testing.assert_allclose(np.asarray(pix[0]), np.stack([cols, rows], -1), atol=1e-5)

    @chex.all_variants
    @parameterized.product(control_grid=((4, 4), (2, 3)), align_corners=(False, True))
    def test_tps_zero_displacement_is_identity(self, control_grid, align_corners):
        k = control_grid[0] * control_grid[1]
        tps = self.variant(lambda d: stn_jax.tps_grid(d, (5, 6), control_grid=control_grid,
                                                      align_corners=align_corners))
        g = tps(np.zeros((2, k, 2), np.float32))
        ident = stn_jax.identity_grid((5, 6), align_corners=align_corners)
        np.testing.assert_allclose(np.asarray(g), np.broadcast_to(ident, g.shape), atol=1e-6)


@SETTINGS
@given(seed=st.integers(0, 1000), align_corners=st.booleans())
def test_projective_grid_with_affine_homography_equals_affine_grid(seed, align_corners):
    rng = np.random.default_rng(seed)
    theta = (np.eye(2, 3) + 0.3 * rng.normal(size=(2, 2, 3))).astype(np.float32)
    scale = rng.uniform(0.5, 2.0)  # homographies are defined up to scale
    hom = np.concatenate([theta, np.broadcast_to([[0, 0, 1.0]], (2, 1, 3))], axis=1) * scale
    a = stn_jax.affine_grid(theta, (5, 3), align_corners=align_corners)
    p = stn_jax.projective_grid(hom.astype(np.float32), (5, 3), align_corners=align_corners)
    np.testing.assert_allclose(np.asarray(p), np.asarray(a), atol=1e-5)


def test_projective_grid_behind_horizon_is_outside():
    hom = np.array([[1, 0, 0], [0, 1, 0], [1.0, 0, 0.0]], np.float32)  # w = x: <= 0 on the left half
    g = np.asarray(stn_jax.projective_grid(hom, (2, 4)))
    assert np.all(np.isinf(g[:, :2])) and np.all(np.isfinite(g[:, 2:]))
    out = stn_jax.grid_sample(np.ones((2, 4, 1), np.float32), g, padding_mode="border")
    assert np.all(np.asarray(out)[:, :2] == 0) and np.all(np.asarray(out)[:, 2:] == 1)


@SETTINGS
@given(seed=st.integers(0, 1000))
def test_tps_interpolates_its_control_points(seed):
    """With align_corners=True on a (3, 3) lattice and a 5x5 grid, pixels (0, 2, 4) sit exactly on
    the control points, so the grid there moves by exactly the control displacement."""
    rng = np.random.default_rng(seed)
    disp = (0.2 * rng.normal(size=(9, 2))).astype(np.float32)
    g = np.asarray(stn_jax.tps_grid(disp, (5, 5), control_grid=(3, 3), align_corners=True))
    ident = np.asarray(stn_jax.identity_grid((5, 5), align_corners=True))
    ctrl = stn_jax.tps_control_points((3, 3))
    for k, (cx, cy) in enumerate(ctrl):
        j, i = int(round((cx + 1) * 2)), int(round((cy + 1) * 2))
        np.testing.assert_allclose(g[i, j] - ident[i, j], disp[k], atol=1e-5)


def test_tps_basis_is_built_while_tracing():
    """The basis is numpy only, so a cold cache is filled inside jit / eval_shape (no warm-up)."""
    tps.tps_basis.cache_clear()
    g = jax.jit(lambda d: stn_jax.tps_grid(d, (7, 9)))(np.zeros((1, 16, 2), np.float32))
    np.testing.assert_allclose(np.asarray(g[0]), np.asarray(stn_jax.identity_grid((7, 9))), atol=1e-6)
    tps.tps_basis.cache_clear()
    out = jax.eval_shape(lambda d: stn_jax.tps_grid(d, (5, 6), align_corners=True),
                         jax.ShapeDtypeStruct((2, 9, 2), jnp.float32))
    assert out.shape == (2, 5, 6, 2) and tps.tps_basis.cache_info().currsize == 1


def test_tps_is_linear_in_displacements():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 16, 2)).astype(np.float32)
    ident = stn_jax.identity_grid((4, 6))
    ga, gb = (stn_jax.tps_grid(d, (4, 6)) - ident for d in (a, b))
    gab = stn_jax.tps_grid(a + 2 * b, (4, 6)) - ident
    np.testing.assert_allclose(np.asarray(gab), np.asarray(ga + 2 * gb), atol=1e-5)


def test_tps_control_point_order_is_row_major():
    ctrl = stn_jax.tps_control_points((2, 3))
    np.testing.assert_allclose(ctrl, [[-1, -1], [0, -1], [1, -1], [-1, 1], [0, 1], [1, 1]])


def test_base_coordinates_size_one_is_centre():
    assert grids.base_coordinates(1).tolist() == [0.0]
    assert jnp.asarray(stn_jax.affine_grid(np.eye(2, 3, dtype=np.float32), (1, 1))).tolist() == [[[0.0, 0.0]]]
