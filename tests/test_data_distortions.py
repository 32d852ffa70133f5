"""Distortions: identities at zero strength, keep-inside rules, projective helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stn_jax.data import distortions as D


def _digit(seed=0, m=1):
    rng = np.random.default_rng(seed)
    x = np.zeros((m, 28, 28, 1), np.float32)
    x[:, 4:24, 4:24] = rng.uniform(0, 1, (m, 20, 20, 1))
    return jnp.asarray(x)


@pytest.mark.parametrize("name, zero", [
    ("r", dict(max_angle=0.0)),
    ("p", dict(scale_range=(1.0, 1.0), sigma=0.0)),
    ("e", dict(sigma=0.0)),
])
def test_zero_strength_is_identity(name, zero):
    dist = jax.jit(D.get_distortion(name, **zero))
    x = _digit()
    out = dist(jax.random.PRNGKey(0), x)
    np.testing.assert_allclose(np.asarray(out), np.asarray(x[0]), atol=1e-5)


def test_zero_strength_rts_and_tc_centre_the_digit():
    x = _digit(m=7)
    rts = jax.jit(D.get_distortion("rts", max_angle=0.0, scale_range=(1.0, 1.0), translate=False))
    np.testing.assert_allclose(np.asarray(rts(jax.random.PRNGKey(1), x[:1])),
                               np.pad(np.asarray(x[0]), ((7, 7), (7, 7), (0, 0))), atol=1e-5)
    tc = jax.jit(D.get_distortion("tc", num_clutter=0, translate=False))
    out = tc(jax.random.PRNGKey(1), x[:1])
    np.testing.assert_allclose(np.asarray(out), np.pad(np.asarray(x[0]), ((16, 16), (16, 16), (0, 0))), atol=1e-5)


_RTS_UNIT = jax.jit(D.get_distortion("rts", scale_range=(1.0, 1.0)))
_RTS_BIG = jax.jit(D.get_distortion("rts", scale_range=(1.2, 1.2)))
_TC_PLAIN = jax.jit(D.get_distortion("tc", num_clutter=0))
_TC = jax.jit(D.get_distortion("tc"))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_rts_keeps_digit_inside_canvas(seed):
    # Unit scale: a digit fully inside the canvas keeps its total ink (bilinear preserves mass
    # up to resampling error); anything cut off by the border would be lost.
    x = jnp.zeros((1, 28, 28, 1)).at[0, 4:24, 4:24].set(1.0)
    out = _RTS_UNIT(jax.random.PRNGKey(seed), x)
    assert abs(float(out.sum()) - 400.0) < 400 * 0.02
    # Max scale and worst angle still fit: the content box corners land inside.
    out = _RTS_BIG(jax.random.PRNGKey(seed), x)
    assert abs(float(out.sum()) - 400.0 * 1.44) < 400 * 1.44 * 0.03


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_tc_digit_inside_canvas_and_clutter_small(seed):
    x = _digit(seed % 100, m=7)
    plain = _TC_PLAIN(jax.random.PRNGKey(seed), x[:1])
    # Integer placement: the digit is copied exactly, whole, somewhere in the canvas.
    np.testing.assert_allclose(float(plain.sum()), float(x[0].sum()), rtol=1e-5)
    nz = np.argwhere(np.asarray(plain[..., 0]) > 0)
    assert nz.min() >= 0 and nz.max() <= 59
    cluttered = _TC(jax.random.PRNGKey(seed), x)
    extra = np.asarray(cluttered) - np.asarray(plain)
    assert (extra >= -1e-6).all()  # max-composite never removes ink
    assert (extra > 1e-6).sum() <= 6 * 36


def test_projective_homography_and_convexity():
    src = jnp.asarray([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])
    dst = src * 0.8 + 0.1 * jnp.asarray([[1.0, 2.0], [-1.0, 0.5], [0.3, -1.0], [2.0, 1.0]])
    h = D.homography_from_points(dst, src)
    p = jnp.concatenate([dst, jnp.ones((4, 1))], 1) @ h.T
    np.testing.assert_allclose(np.asarray(p[:, :2] / p[:, 2:]), np.asarray(src), atol=1e-5)
    assert bool(D.is_convex(src)) and not bool(D.is_convex(src[jnp.asarray([0, 2, 1, 3])]))



@pytest.mark.parametrize("method", ["window", "matmul"])
def test_paste_matches_numpy_placement(method):
    patch = jnp.arange(1, 13, dtype=jnp.float32).reshape(3, 4)
    fn = jax.jit(lambda p, tl: D.paste(p, tl, 7, method=method))
    for top, left in [(0, 0), (2, 3), (4, 3), (-1, 5), (6, -3), (9, 0)]:
        want = np.zeros((7 + 20, 7 + 20), np.float32)
        want[10 + top:10 + top + 3, 10 + left:10 + left + 4] = np.asarray(patch)
        np.testing.assert_array_equal(np.asarray(fn(patch, jnp.array([top, left]))), want[10:17, 10:17])
    with pytest.raises(ValueError, match="method"):
        D.paste(patch, jnp.array([0, 0]), 7, method="scatter")


def test_parse_overrides_converts_each_value_to_its_fields_type():
    assert D.parse_overrides("p", "") == {} and D.parse_overrides("p", " , ") == {}
    assert D.parse_overrides("p", "sigma=3") == {"sigma": 3.0}
    got = D.parse_overrides("rts", "max_angle=30, scale_range=0.8:1.2, canvas=50, translate=false")
    assert got == {"max_angle": 30.0, "scale_range": (0.8, 1.2), "canvas": 50, "translate": False}
    assert type(got["canvas"]) is int and type(got["scale_range"][0]) is float
    assert D.parse_overrides("e", "control_grid=3:5") == {"control_grid": (3, 5)}
    assert D.get_distortion("rts", **got).scale_range == (0.8, 1.2)


@pytest.mark.parametrize("name, text, match", [
    ("p", "sigma", "must be key=value"),
    ("p", "max_angle=3", r"unknown distortion option 'max_angle' for dataset 'p'; valid: \['min_corner_ratio'"),
    ("p", "sigma=abc", r"sigma='abc': expected a non-negative float"),
    ("p", "sigma=-1", "expected a non-negative float"),
    ("p", "sigma=nan", "expected a non-negative float"),
    ("rts", "canvas=42.5", "expected a non-negative int"),
    ("rts", "scale_range=0.8", "expected a range lo:hi of floats, e.g. 0.7:1.2"),
    ("rts", "scale_range=1.2:0.8", "expected lo <= hi"),
    ("rts", "translate=maybe", "expected true or false"),
    ("svhn", "sigma=1", "unknown dataset 'svhn'"),
])
def test_parse_overrides_rejects_bad_text(name, text, match):
    with pytest.raises(ValueError, match=match):
        D.parse_overrides(name, text)


def test_parse_overrides_reads_bracketed_ranges_and_dashed_keys():
    assert D.parse_overrides("rts", "scale_range=[0.8,1.1],max-angle=10,") == {
        "scale_range": (0.8, 1.1), "max_angle": 10.0}
