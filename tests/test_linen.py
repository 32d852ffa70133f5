"""Linen SpatialTransformer: identity at init, gradients, dtypes, multiple heads, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stn_jax
from stn_jax import linen as stn
from stn_jax import localization as core
from stn_jax import pipeline

KINDS = ("translation", "attention", "similarity", "affine", "projective", "tps")


def _image(shape=(2, 12, 12, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bound", [None, "tanh"])
def test_fresh_module_is_identity(kind, bound):
    x = _image()
    module = stn.SpatialTransformer(transform=kind, num_control_points=9, bound=bound)
    variables = module.init(jax.random.key(1), x)
    y, params = module.apply(variables, x, return_params=True)
    np.testing.assert_allclose(y, x, atol=1e-5)
    ident = stn_jax.get_transform(kind, num_control_points=9).identity
    np.testing.assert_allclose(params, np.broadcast_to(ident, params.shape), atol=1e-6)


def test_identity_with_cnn_localization_and_feature_maps():
    x = _image((3, 16, 16, 7))  # a feature map: 7 channels
    module = stn.SpatialTransformer(transform="affine",
                                    localization=stn.LocalizationCNN(features=(4, 4), hidden=8))
    variables = module.init(jax.random.key(0), x)
    assert set(variables["params"]) == {"localization", "regression"}
    np.testing.assert_allclose(module.apply(variables, x), x, atol=1e-5)


def test_output_size_and_initial_params():
    x = _image((2, 16, 16, 1))
    module = stn.SpatialTransformer(transform="attention", output_size=(8, 8),
                                    initial_params=(0.5, 0.5, -0.5))
    variables = module.init(jax.random.key(0), x)
    y = module.apply(variables, x)
    expected = stn_jax.warp(x, jnp.asarray([[[0.5, 0, 0.5], [0, 0.5, -0.5]]] * 2), size=(8, 8))
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_sampling_options_pass_through():
    x = _image((1, 10, 10, 2))
    module = stn.SpatialTransformer(transform="affine", mode="nearest", padding_mode="border",
                                    align_corners=True, initial_params=(1.3, 0.2, 0.1, -0.1, 0.9, 0.2))
    variables = module.init(jax.random.key(0), x)
    theta = jnp.asarray([[[1.3, 0.2, 0.1], [-0.1, 0.9, 0.2]]])
    expected = stn_jax.warp(x, theta, mode="nearest", padding_mode="border", align_corners=True)
    np.testing.assert_allclose(module.apply(variables, x), expected, atol=1e-6)


def test_sown_params_and_penalty():
    x = _image()
    module = stn.SpatialTransformer(transform="similarity")
    variables = module.init(jax.random.key(0), x)
    _, state = module.apply(variables, x, mutable=["intermediates"])
    (params,) = state["intermediates"]["transform_params"]
    assert params.shape == (2, 4)
    assert float(stn.transform_penalty(state)) == 0.0
    shifted = jax.tree_util.tree_map(lambda a: a, variables)
    shifted["params"]["regression"]["bias"] = jnp.array([1.0, 0.0, 0.3, -0.4])
    _, state = module.apply(shifted, x, mutable=["intermediates"])
    np.testing.assert_allclose(stn.transform_penalty(state["intermediates"]),
                               (0.3 ** 2 + 0.4 ** 2) / 4, rtol=1e-6)


def _two_step_grads(module, x, target):
    variables = module.init(jax.random.key(0), x)

    @jax.jit
    def grads(params):
        def loss(p):
            return jnp.mean((module.apply({"params": p}, x) - target) ** 2)
        return jax.grad(loss)(params)

    g0 = grads(variables["params"])
    params1 = jax.tree_util.tree_map(lambda p, g: p - 10.0 * g, variables["params"], g0)
    return g0, grads(params1)


@pytest.mark.parametrize("kind", ["affine", "tps", "projective"])
def test_jit_grad_reaches_localization(kind):
    # a real signal: a blob that must move right to match the target
    yy, xx = np.mgrid[:16, :16]
    blob = lambda cx: np.exp(-((xx - cx) ** 2 + (yy - 8) ** 2) / 8.0)
    x = jnp.asarray(np.stack([blob(6), blob(7)])[..., None], jnp.float32)
    target = jnp.asarray(np.stack([blob(8), blob(9)])[..., None], jnp.float32)
    module = stn.SpatialTransformer(transform=kind, num_control_points=4)
    g0, g1 = _two_step_grads(module, x, target)
    assert float(jnp.abs(g0["regression"]["bias"]).max()) > 0
    assert float(jnp.abs(g0["regression"]["kernel"]).max()) > 0
    # the regression kernel starts at zero, so the localization gradient appears after a step
    loc_grads = jax.tree_util.tree_leaves(g1["localization"])
    assert max(float(jnp.abs(g).max()) for g in loc_grads) > 0
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(g1))


def test_bfloat16_compute_dtype():
    x = _image((2, 12, 12, 1)).astype(jnp.bfloat16)
    module = stn.SpatialTransformer(transform="affine", localization=stn.LocalizationCNN(
        features=(4,), hidden=8, dtype=jnp.bfloat16), dtype=jnp.bfloat16)
    variables = jax.jit(module.init)(jax.random.key(0), x)
    y, params = jax.jit(lambda v, x: module.apply(v, x, return_params=True))(variables, x)
    assert y.dtype == jnp.bfloat16 and params.dtype == jnp.float32
    np.testing.assert_allclose(y.astype(jnp.float32), x.astype(jnp.float32), atol=1e-2)
    g = jax.jit(jax.grad(lambda p: module.apply({"params": p}, x).astype(jnp.float32).sum()))(
        variables["params"])
    assert float(jnp.abs(g["regression"]["kernel"].astype(jnp.float32)).max()) > 0


@pytest.mark.parametrize("kind", ["attention", "affine", "tps", "translation"])
def test_parallel_heads_start_at_distinct_regions(kind):
    x = _image((2, 16, 16, 1))
    module = stn.ParallelSpatialTransformers(num_heads=4, transform=kind, num_control_points=9,
                                             localization=functools.partial(
                                                 stn.LocalizationMLP, features=(8,)))
    variables = module.init(jax.random.key(0), x)
    assert set(variables["params"]) == {f"head_{i}" for i in range(4)}
    assert set(variables["params"]["head_0"]) == {"localization", "regression"}
    y, params = module.apply(variables, x, return_params=True)
    assert y.shape == (2, 16, 16, 4)
    flat = np.stack([np.asarray(p[0]) for p in params])
    assert len({tuple(np.round(r, 5)) for r in flat}) == 4
    for i in range(4):
        for j in range(i + 1, 4):
            assert float(jnp.abs(y[..., i] - y[..., j]).max()) > 1e-3
    # the spread regions for attention: half-size windows centred in the four quadrants
    if kind == "attention":
        np.testing.assert_allclose(flat, [[0.5, -0.5, -0.5], [0.5, 0.5, -0.5],
                                          [0.5, -0.5, 0.5], [0.5, 0.5, 0.5]])


def test_series_composes_and_samples_once():
    x = _image((2, 16, 16, 1))
    module = stn.SeriesSpatialTransformers(num_stages=2, transform="affine")
    variables = module.init(jax.random.key(0), x)
    np.testing.assert_allclose(module.apply(variables, x), x, atol=1e-5)
    a = jnp.array([0.6, 0.0, 0.3, 0.0, 0.6, 0.0])
    b = jnp.array([0.8, 0.1, -0.4, -0.1, 0.8, 0.2])
    variables["params"]["stage_0"]["regression"]["bias"] = a
    variables["params"]["stage_1"]["regression"]["bias"] = b
    y, total = module.apply(variables, x, return_params=True)
    composed = stn_jax.compose_affine(a.reshape(2, 3), b.reshape(2, 3))
    np.testing.assert_allclose(total[0, :2], composed, atol=1e-6)
    np.testing.assert_allclose(y, stn_jax.warp(x, jnp.broadcast_to(composed, (2, 2, 3))),
                               atol=1e-5)
    chained = stn_jax.warp(stn_jax.warp(x, jnp.broadcast_to(a.reshape(2, 3), (2, 2, 3))),
                           jnp.broadcast_to(b.reshape(2, 3), (2, 2, 3)))
    assert float(jnp.abs(chained - y).max()) > 1e-2  # chaining loses content at the borders


def test_inspect_collection_only_when_requested():
    x = _image()
    module = stn.SpatialTransformer(transform="tps", num_control_points=4)
    variables = module.init(jax.random.key(0), x)
    assert "stn_inspect" not in variables
    _, state = module.apply(variables, x, mutable=["stn_inspect"])
    (entry,) = state["stn_inspect"]["transform:tps"]
    assert entry["grid"].shape == (2, 12, 12, 2) and entry["params"].shape == (2, 8)
    np.testing.assert_allclose(entry["grid"][0], stn_jax.identity_grid((12, 12)), atol=1e-6)


def test_series_inspection_records_the_composed_transform():
    x = _image((2, 16, 16, 1))
    module = stn.SeriesSpatialTransformers(num_stages=2, transform="affine", output_size=(8, 8))
    variables = module.init(jax.random.key(0), x)
    assert "stn_inspect" not in variables
    variables["params"]["stage_0"]["regression"]["bias"] = jnp.array([0.6, 0.0, 0.3, 0.0, 0.6, 0.0])
    variables["params"]["stage_1"]["regression"]["bias"] = jnp.array([0.8, 0.1, -0.4, -0.1, 0.8, 0.2])
    (y, total), state = module.apply(variables, x, return_params=True, mutable=["stn_inspect"])
    (entry,) = pipeline.collect_inspections(state["stn_inspect"])
    assert entry["kind"] == "affine" and entry["grid"].shape == (2, 8, 8, 2)
    np.testing.assert_array_equal(entry["params"], total[:, :2, :].reshape(2, 6))
    np.testing.assert_array_equal(entry["warped"], y)
    np.testing.assert_allclose(entry["grid"], stn_jax.affine_grid(total[:, :2, :], (8, 8)),
                               atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(transform="rotation"), "unknown transform kind"),
    (dict(output_size=(8,)), "output_size"),
    (dict(output_size=(1, 8, 8)), "output_size"),
    (dict(transform="tps", num_control_points=10), "perfect square"),
    (dict(bound="sigmoid"), "bound"),
    (dict(mode="cubic"), "mode"),
    (dict(transform="attention", bound="tanh", initial_params=(1.0, 1.5, 0.0)), r"\(-1, 1\)"),
    (dict(transform="affine", initial_params=(1.0, 0.0)), "initial parameters"),
])
def test_bad_configuration_raises(kwargs, match):
    module = stn.SpatialTransformer(**kwargs)
    with pytest.raises(ValueError, match=match):
        module.init(jax.random.key(0), _image((1, 8, 8, 1)))


def test_bad_input_rank_raises():
    module = stn.SpatialTransformer()
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        module.init(jax.random.key(0), jnp.zeros((1, 4, 8, 8, 1)))


def test_series_rejects_tps():
    with pytest.raises(ValueError, match="compose"):
        stn.SeriesSpatialTransformers(transform="tps").init(jax.random.key(0), _image())


@settings(max_examples=30, deadline=None)
@given(kind=st.sampled_from(KINDS),
       values=st.lists(st.floats(-0.9, 0.9), min_size=32, max_size=32))
def test_bound_round_trip(kind, values):
    transform = stn_jax.get_transform(kind)
    params = transform.identity + np.asarray(values[:transform.num_params], np.float32)
    if kind == "attention":
        params[0] = np.clip(params[0], 0.2, 1.8)
    if kind in ("translation", "tps"):
        params = np.clip(params, -0.9, 0.9)
    raw = core.unconstrain(params, transform, "tanh")
    np.testing.assert_allclose(core.constrain(raw, transform, "tanh"), params, atol=1e-5)
    np.testing.assert_allclose(core.constrain(params, transform, None), params)
