"""The matrix-product path for axis-aligned warps (stn_jax.separable) against the gather
sampler, PyTorch and finite differences; its dispatch from the spatial-transformer modules."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

import stn_jax
from stn_jax import linen, localization, separable

torch = pytest.importorskip("torch")
F = torch.nn.functional

MODES = ("bilinear", "nearest", "bicubic")
PADDINGS = ("zeros", "border", "reflection")


def _theta(scale, translation):
    scale, translation = jnp.asarray(scale), jnp.asarray(translation)
    zero = jnp.zeros_like(scale[:, 0])
    return jnp.stack([jnp.stack([scale[:, 0], zero, translation[:, 0]], -1),
                      jnp.stack([zero, scale[:, 1], translation[:, 1]], -1)], 1)


def _problem(seed, n=3, h=5, w=7, c=2):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, h, w, c)).astype(np.float32)
    scale = rng.uniform(0.3, 1.6, (n, 2)).astype(np.float32)
    translation = rng.uniform(-0.7, 0.7, (n, 2)).astype(np.float32)
    # example 0: the identity, so every sample point is exactly a pixel centre (the classic
    # site of zero-gradient bugs); example 1: a shift by exactly one pixel along x
    scale[0] = scale[1] = 1.0
    translation[0] = 0.0
    translation[1] = (2.0 / w, 0.0)
    return image, scale, translation


def _grads(fn, image, scale, translation, ct):
    def loss(a, s, t):
        return jnp.vdot(fn(a, s, t), ct)
    return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(image, scale, translation)


@pytest.mark.parametrize("mode,padding,align_corners",
                         list(itertools.product(MODES, PADDINGS, (False, True))))
def test_matches_gather_sampler_values_and_gradients(mode, padding, align_corners):
    image, scale, translation = _problem(1)
    size = (4, 6)
    opts = dict(mode=mode, padding_mode=padding, align_corners=align_corners)
    ct = np.random.default_rng(2).standard_normal((3, *size, 2)).astype(np.float32)

    def reference(a, s, t):
        with stn_jax.sampler_implementation("generic"):
            return stn_jax.warp(a, _theta(s, t), size=size, **opts)

    def ours(a, s, t):
        return separable.axis_aligned_warp(a, s, t, size=size, **opts)

    np.testing.assert_allclose(ours(image, scale, translation), reference(image, scale, translation),
                               rtol=1e-5, atol=1e-5)
    for got, want in zip(_grads(ours, image, scale, translation, ct),
                         _grads(reference, image, scale, translation, ct), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
def test_matches_torch_values_and_theta_gradient(mode, padding):
    image, scale, translation = _problem(3, h=6, w=5, c=3)
    ho, wo = 7, 4
    ct = np.random.default_rng(4).standard_normal((3, ho, wo, 3)).astype(np.float32)
    theta = np.asarray(_theta(scale, translation))
    ti = torch.tensor(image.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    tt = torch.tensor(theta, requires_grad=True)
    grid = F.affine_grid(tt, (3, 3, ho, wo), align_corners=False)
    out = F.grid_sample(ti, grid, mode=mode, padding_mode=padding, align_corners=False)
    out.backward(torch.tensor(ct.transpose(0, 3, 1, 2).copy()))

    ours = lambda a, s, t: separable.axis_aligned_warp(a, s, t, size=(ho, wo), mode=mode,
                                                       padding_mode=padding)
    np.testing.assert_allclose(ours(image, scale, translation),
                               out.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)
    g_image, g_scale, g_translation = _grads(ours, image, scale, translation, ct)
    np.testing.assert_allclose(g_image, ti.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-4)
    if mode != "nearest":  # nearest: torch defines no grid gradient (ours is 0 as well)
        tg = tt.grad.numpy()
        np.testing.assert_allclose(g_scale, tg[:, [0, 1], [0, 1]], rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(g_translation, tg[:, [0, 1], [2, 2]], rtol=1e-4, atol=1e-3)
    else:
        assert not np.any(np.asarray(g_scale)) and not np.any(np.asarray(g_translation))


def test_one_sided_gradient_at_integer_positions_is_not_zero():
    """Identity warp: every point is a pixel centre; the translation gradient is the forward
    difference of the image (PyTorch's convention), not 0."""
    h, w = 4, 5
    image = jnp.arange(h * w, dtype=jnp.float32).reshape(1, h, w, 1) ** 1.5
    g_t = jax.grad(lambda t: separable.axis_aligned_warp(
        image, jnp.ones((1, 2)), t, align_corners=True).sum())(jnp.zeros((1, 2)))
    # d out / d ix at a pixel centre is the forward difference v[x + 1] - v[x]; the last
    # column's right tap is outside (zeros), so there it is -v[W - 1]. d ix / d tx = (W - 1) / 2.
    v = np.asarray(image[0, :, :, 0], np.float64)
    forward_x = np.concatenate([np.diff(v, axis=1), -v[:, -1:]], axis=1)
    want_tx = forward_x.sum() * (w - 1) / 2
    assert want_tx != 0
    assert float(g_t[0, 0]) == pytest.approx(want_tx, rel=1e-5)
    assert float(g_t[0, 1]) != 0


def test_finite_differences_smooth_case():
    rng = np.random.default_rng(5)
    with jax.enable_x64(True):
        image = jnp.asarray(rng.normal(size=(2, 6, 7, 2)))
        # scales and shifts that keep every sample strictly between pixel centres
        scale = jnp.asarray([[0.63, 0.71], [0.77, 0.58]])
        translation = jnp.asarray([[0.031, -0.047], [-0.052, 0.043]])
        for mode in ("bilinear", "bicubic"):
            f = lambda a, s, t, mode=mode: separable.axis_aligned_warp(a, s, t, size=(5, 4), mode=mode)
            check_grads(f, (image, scale, translation), order=2, modes=("rev",), eps=1e-5,
                        atol=1e-6, rtol=1e-6)


def test_non_finite_parameters_read_as_outside():
    image = jnp.ones((2, 4, 4, 1))
    scale = jnp.asarray([[jnp.nan, 1.0], [1.0, 1.0]])
    translation = jnp.asarray([[0.0, 0.0], [0.0, jnp.inf]])
    out = separable.axis_aligned_warp(image, scale, translation)
    assert not np.any(np.asarray(out))
    grads = jax.grad(lambda a, s, t: separable.axis_aligned_warp(a, s, t).sum(), argnums=(0, 1, 2))(
        image, scale, translation)
    for g in grads:
        assert np.all(np.asarray(g) == 0)


@settings(max_examples=25, deadline=None)
@given(sx=st.floats(-3, 3), sy=st.floats(-3, 3), tx=st.floats(-2, 2), ty=st.floats(-2, 2),
       align_corners=st.booleans())
def test_property_equals_warp(sx, sy, tx, ty, align_corners):
    image = jnp.asarray(np.random.default_rng(0).standard_normal((1, 5, 6, 1)), jnp.float32)
    s, t = jnp.asarray([[sx, sy]], jnp.float32), jnp.asarray([[tx, ty]], jnp.float32)
    with stn_jax.sampler_implementation("generic"):
        want = stn_jax.warp(image, _theta(s, t), size=(4, 5), align_corners=align_corners)
    got = separable.axis_aligned_warp(image, s, t, size=(4, 5), align_corners=align_corners)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_dtypes_follow_the_image():
    image = jnp.ones((1, 3, 3, 1), jnp.bfloat16)
    out = separable.axis_aligned_warp(image, jnp.ones((1, 2)), jnp.zeros((1, 2)))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), 1.0)


@pytest.mark.parametrize("args,error,match", [
    ((np.ones((3, 3, 1)), np.ones((1, 2)), np.zeros((1, 2))), ValueError, r"\(N, H, W, C\)"),
    ((np.ones((2, 3, 3, 1)), np.ones((1, 2)), np.zeros((2, 2))), ValueError, r"scale must have shape"),
    ((np.ones((2, 3, 3, 1)), np.ones((2, 2)), np.zeros((2, 3))), ValueError, r"translation must"),
    ((np.ones((1, 3, 3, 1), np.int32), np.ones((1, 2)), np.zeros((1, 2))), TypeError, "image"),
    ((np.ones((1, 3, 3, 1)), np.ones((1, 2), np.int32), np.zeros((1, 2))), TypeError, "scale"),
])
def test_bad_input_raises_at_trace_time(args, error, match):
    with pytest.raises(error, match=match):
        jax.jit(separable.axis_aligned_warp)(*args)


def test_bad_options_raise():
    args = (np.ones((1, 3, 3, 1), np.float32), np.ones((1, 2), np.float32), np.zeros((1, 2), np.float32))
    with pytest.raises(ValueError, match="unknown mode"):
        separable.axis_aligned_warp(*args, mode="linear")
    with pytest.raises(ValueError, match="size must be"):
        separable.axis_aligned_warp(*args, size=(0, 3))


def test_prefer_separable_crossover():
    for in_size, out_size in (((28, 28), (28, 28)), ((60, 60), (30, 30)), ((224, 224), (224, 224))):
        assert separable.prefer_separable(in_size, out_size)
    assert not separable.prefer_separable((512, 512), (512, 512))
    assert not separable.prefer_separable((300, 300), (100, 100))


def _attention_module_and_input():
    module = linen.SpatialTransformer(transform="attention", output_size=(10, 12),
                                      initial_params=(0.6, 0.1, -0.2))
    x = jnp.asarray(np.random.default_rng(6).standard_normal((2, 20, 24, 3)), jnp.float32)
    variables = module.init(jax.random.PRNGKey(0), x)
    # non-zero regression weights, so the parameters depend on the input
    variables = jax.tree_util.tree_map(lambda v: v + 0.01, variables)
    return module, variables, x


def _loss_grad(module):
    # a new function object per call: traces are cached per function, and the sampler
    # implementation is read at trace time
    return jax.grad(lambda v, x: jnp.sum(module.apply(v, x) ** 2), argnums=(0, 1))


def test_attention_module_takes_the_matrix_product_path_with_the_same_result():
    module, variables, x = _attention_module_and_input()
    jaxpr = str(jax.make_jaxpr(_loss_grad(module))(variables, x))
    assert "scatter" not in jaxpr and "gather" not in jaxpr  # deterministic: dots only
    got_out, got_grad = module.apply(variables, x), _loss_grad(module)(variables, x)
    with stn_jax.sampler_implementation("generic"):
        assert "scatter" in str(jax.make_jaxpr(_loss_grad(module))(variables, x))
        want_out, want_grad = module.apply(variables, x), _loss_grad(module)(variables, x)
    np.testing.assert_allclose(got_out, want_out, rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree_util.tree_leaves(got_grad), jax.tree_util.tree_leaves(want_grad),
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_translation_kind_and_large_images_dispatch():
    x = jnp.ones((1, 8, 8, 1))
    kind = stn_jax.get_transform("translation")
    params = jnp.asarray([[0.25, -0.5]])
    got = localization.apply_transform(x, params, kind)
    with stn_jax.sampler_implementation("generic"):
        want = localization.apply_transform(x, params, kind)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    # a large image keeps the gather sampler (the dense products would be slower): its gradient
    # has the scatter-add
    big = jnp.ones((1, 512, 512, 1))
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda x: localization.apply_transform(
        x, jnp.asarray([[0.5, 0.0, 0.0]]), stn_jax.get_transform("attention")).sum()))(big))
    assert "scatter" in jaxpr


def test_undifferentiated_call_is_the_gather_sampler_and_derivatives_are_products():
    image, scale, translation = _problem(7)
    fn = lambda a, s, t: separable.axis_aligned_warp(a, s, t, size=(4, 6))
    assert "gather" in str(jax.make_jaxpr(fn)(image, scale, translation))
    grad_jaxpr = str(jax.make_jaxpr(jax.grad(lambda *a: fn(*a).sum(), argnums=(0, 1, 2)))(
        image, scale, translation))
    assert "scatter" not in grad_jaxpr and "gather" not in grad_jaxpr
    # forward mode and second order go through the products too, and agree with the gather path
    tangents = tuple(np.ones_like(a) for a in (image, scale, translation))
    _, got = jax.jvp(fn, (image, scale, translation), tangents)
    with stn_jax.sampler_implementation("generic"):
        _, want = jax.jvp(lambda a, s, t: stn_jax.warp(a, _theta(s, t), size=(4, 6)),
                          (image, scale, translation), tangents)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    hess = jax.hessian(lambda t: fn(image, scale, t).sum())(translation)
    assert hess.shape == translation.shape * 2 and np.all(np.isfinite(np.asarray(hess)))
