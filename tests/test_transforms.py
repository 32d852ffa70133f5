"""Transform kinds, identity parameters and the affine algebra."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import stn_jax
from stn_jax import transforms

EXPECTED_PARAMS = {"translation": 2, "attention": 3, "similarity": 4, "affine": 6, "projective": 8,
                   "tps": 32}


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("kind", stn_jax.TRANSFORM_KINDS)
def test_identity_params_give_identity_grid(kind, align_corners):
    t = stn_jax.get_transform(kind)
    assert t.num_params == EXPECTED_PARAMS[kind] == t.identity.shape[0]
    assert t.identity.dtype == np.float32
    g = t.grid(np.stack([t.identity] * 2), (5, 7), align_corners=align_corners)
    ident = stn_jax.identity_grid((5, 7), align_corners=align_corners)
    assert g.shape == (2, 5, 7, 2)
    np.testing.assert_allclose(np.asarray(g), np.broadcast_to(ident, g.shape), atol=1e-6)
    assert t.is_affine == (kind in ("translation", "attention", "similarity", "affine"))


def test_tps_num_control_points():
    t = stn_jax.get_transform("tps", num_control_points=9)
    assert t.num_params == 18 and t.control_grid == (3, 3)
    np.testing.assert_allclose(np.asarray(t.grid(t.identity[None], (4, 4))),
                               np.asarray(stn_jax.identity_grid((4, 4)))[None], atol=1e-6)


def test_matrices_of_each_kind():
    np.testing.assert_allclose(np.asarray(transforms.translation_matrix(jnp.array([0.1, -0.2]))),
                               [[1, 0, 0.1], [0, 1, -0.2]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(transforms.attention_matrix(jnp.array([0.5, 0.1, -0.2]))),
                               [[0.5, 0, 0.1], [0, 0.5, -0.2]], atol=1e-7)
    np.testing.assert_allclose(np.asarray(transforms.similarity_matrix(jnp.array([0.6, 0.8, 0.1, 0.2]))),
                               [[0.6, -0.8, 0.1], [0.8, 0.6, 0.2]], atol=1e-7)
    p = np.arange(8, dtype=np.float32)
    np.testing.assert_allclose(np.asarray(transforms.projective_matrix(p)),
                               np.append(p, 1).reshape(3, 3))
    sim = np.asarray(stn_jax.rotation_params(np.pi / 6, scale=2.0, tx=0.1, ty=0.2))
    np.testing.assert_allclose(sim, [2 * np.cos(np.pi / 6), 2 * np.sin(np.pi / 6), 0.1, 0.2], atol=1e-6)


def test_compose_affine_is_matrix_product_and_invert_is_inverse():
    rng = np.random.default_rng(0)
    a = (np.eye(2, 3) + 0.3 * rng.normal(size=(2, 3))).astype(np.float32)
    b = (np.eye(2, 3) + 0.3 * rng.normal(size=(2, 3))).astype(np.float32)
    ha, hb = (np.vstack([m, [0, 0, 1]]) for m in (a, b))
    np.testing.assert_allclose(np.asarray(stn_jax.compose_affine(a, b)), (ha @ hb)[:2], atol=1e-5)
    np.testing.assert_allclose(np.asarray(stn_jax.invert_affine(a)), np.linalg.inv(ha)[:2], atol=1e-4)
    # composing a grid: affine_grid(compose(a, b)) == a applied to the points of affine_grid(b)
    gb = np.asarray(stn_jax.affine_grid(b, (3, 4)))
    want = gb @ a[:, :2].T + a[:, 2]
    np.testing.assert_allclose(np.asarray(stn_jax.affine_grid(stn_jax.compose_affine(a, b), (3, 4))),
                               want, atol=1e-5)
