"""NNX transformers: identity at init, bit-parity with Linen (outputs, series, inspection),
gradients, dtypes, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import stn_jax
from stn_jax import linen as stn_linen
from stn_jax import nnx as stn
from stn_jax import pipeline
from stn_jax.models import transform_penalty

KINDS = ("translation", "attention", "similarity", "affine", "projective", "tps")


def _image(shape=(2, 12, 12, 3), seed=0):
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_module_is_identity(kind):
    x = _image()
    module = stn.SpatialTransformer((12, 12, 3), transform=kind, num_control_points=9, rngs=nnx.Rngs(0))
    y, params = module(x, return_params=True)
    np.testing.assert_allclose(y, x, atol=1e-5)
    ident = stn_jax.get_transform(kind, num_control_points=9).identity
    np.testing.assert_allclose(params, np.broadcast_to(ident, params.shape), atol=1e-6)


def _perturbed_linen(module, x, seed=3):
    variables = module.init(jax.random.key(seed), x)
    leaves, treedef = jax.tree_util.tree_flatten(variables["params"])
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    leaves = [a + 0.05 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    return {"params": jax.tree_util.tree_unflatten(treedef, leaves)}


@pytest.mark.parametrize("kind, loc, bound", [
    ("affine", "mlp", None), ("tps", "mlp", "tanh"), ("projective", "cnn", None),
    ("attention", "cnn", "tanh")])
def test_linen_and_nnx_give_identical_outputs(kind, loc, bound):
    x = _image((2, 12, 12, 2))
    opts = dict(num_control_points=4, bound=bound, padding_mode="border")
    linen_loc = stn_linen.LocalizationCNN(features=(4, 4), hidden=8) if loc == "cnn" else None
    nnx_loc = (stn.LocalizationCNN((12, 12, 2), features=(4, 4), hidden=8, rngs=nnx.Rngs(1))
               if loc == "cnn" else None)
    lmod = stn_linen.SpatialTransformer(transform=kind, localization=linen_loc, **opts)
    nmod = stn.SpatialTransformer((12, 12, 2), transform=kind, localization=nnx_loc, rngs=nnx.Rngs(0),
                                  **opts)
    variables = _perturbed_linen(lmod, x)
    stn.load_linen_params(nmod, variables["params"])
    ly, lp = lmod.apply(variables, x, return_params=True)
    ny, np_ = nmod(x, return_params=True)
    assert float(jnp.abs(ly - x).max()) > 1e-3  # the perturbation moved the warp
    np.testing.assert_array_equal(np.asarray(ly), np.asarray(ny))
    np.testing.assert_array_equal(np.asarray(lp), np.asarray(np_))


def test_same_defaults_as_linen():
    x = _image((1, 8, 8, 1))
    lvars = stn_linen.SpatialTransformer().init(jax.random.key(0), x)
    nmod = stn.SpatialTransformer((8, 8, 1), rngs=nnx.Rngs(0))
    lshapes = jax.tree_util.tree_map(jnp.shape, lvars["params"])
    assert lshapes["regression"]["kernel"] == nmod.regression.kernel[...].shape == (32, 6)
    assert [lshapes["localization"][f"Dense_{i}"]["kernel"] for i in range(3)] == [
        layer.kernel[...].shape for layer in nmod.localization.layers]


def _capture(module, x):
    if hasattr(nnx, "capture"):
        out, inter = nnx.capture(module, nnx.Intermediate)(x)
    else:  # older flax: sow stores on the module
        out = module(x)
        inter = nnx.pop(module, nnx.Intermediate)
    inter = {k: (v.get_value() if hasattr(v, "get_value") else v) for k, v in dict(inter).items()}
    inter = {k: (v[0] if isinstance(v, tuple) else v) for k, v in inter.items()}
    return out, inter


def test_sown_intermediates_and_penalty():
    x = _image()
    module = stn.SpatialTransformer((12, 12, 3), transform="similarity", rngs=nnx.Rngs(0))
    _, inter = _capture(module, x)
    assert inter["transform_params"].shape == (2, 4)
    assert float(transform_penalty(inter)) == 0.0
    module.regression.bias[...] = jnp.array([1.0, 0.0, 0.3, -0.4])
    _, inter = _capture(module, x)
    np.testing.assert_allclose(transform_penalty(inter), (0.3 ** 2 + 0.4 ** 2) / 4, rtol=1e-6)


def test_jit_grad_reaches_localization():
    yy, xx = np.mgrid[:16, :16]
    blob = lambda cx: np.exp(-((xx - cx) ** 2 + (yy - 8) ** 2) / 8.0)
    x = jnp.asarray(np.stack([blob(6), blob(7)])[..., None], jnp.float32)
    target = jnp.asarray(np.stack([blob(8), blob(9)])[..., None], jnp.float32)
    module = stn.SpatialTransformer((16, 16, 1), transform="affine", rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(module, optax.sgd(10.0), wrt=nnx.Param)

    @nnx.jit
    def step(module, optimizer):
        loss = lambda m: jnp.mean((m(x) - target) ** 2)
        grads = nnx.grad(loss)(module)
        optimizer.update(module, grads)
        return grads

    g0 = step(module, optimizer)
    assert float(jnp.abs(g0.regression.kernel[...]).max()) > 0
    g1 = step(module, optimizer)
    loc = jax.tree_util.tree_leaves(nnx.state(g1.localization if hasattr(g1, "localization")
                                              else g1["localization"]))
    assert max(float(jnp.abs(g).max()) for g in loc) > 0


def test_bfloat16_compute_dtype():
    x = _image((2, 12, 12, 1)).astype(jnp.bfloat16)
    module = stn.SpatialTransformer((12, 12, 1), transform="affine", dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    y, params = module(x, return_params=True)
    assert y.dtype == jnp.bfloat16 and params.dtype == jnp.float32
    np.testing.assert_allclose(y.astype(jnp.float32), x.astype(jnp.float32), atol=1e-2)


def test_parallel_heads_start_at_distinct_regions():
    x = _image((2, 16, 16, 1))
    module = stn.ParallelSpatialTransformers(
        (16, 16, 1), num_heads=4, transform="attention", rngs=nnx.Rngs(0),
        localization=lambda shape, rngs: stn.LocalizationMLP(int(np.prod(shape)), features=(8,), rngs=rngs))
    y, params = module(x, return_params=True)
    assert y.shape == (2, 16, 16, 4)
    np.testing.assert_allclose(np.stack([p[0] for p in params]),
                               [[0.5, -0.5, -0.5], [0.5, 0.5, -0.5], [0.5, -0.5, 0.5],
                                [0.5, 0.5, 0.5]])
    lin = stn_linen.ParallelSpatialTransformers(num_heads=4, transform="attention")
    lvars = lin.init(jax.random.key(0), x)
    _, lparams = lin.apply(lvars, x, return_params=True)
    np.testing.assert_allclose(np.stack([p[0] for p in params]), np.stack([p[0] for p in lparams]))


def test_custom_localization_feature_count_is_inferred():
    class Pool(nnx.Module):  # no out_features attribute: shape inference finds F = 3
        def __call__(self, x):
            return jnp.mean(x, axis=(1, 2))

    module = stn.SpatialTransformer((8, 8, 3), transform="translation", localization=Pool(),
                                    rngs=nnx.Rngs(0))
    assert module.regression.kernel[...].shape == (3, 2)
    x = _image((2, 8, 8, 3))
    np.testing.assert_allclose(module(x), x, atol=1e-5)


@pytest.mark.parametrize("in_shape, kwargs, match", [
    ((8, 8, 1), dict(transform="rotation"), "unknown transform kind"),
    ((8, 8, 1), dict(output_size=(4, 4, 4)), "output_size"),
    ((8, 8, 1), dict(transform="tps", num_control_points=12), "perfect square"),
    ((8, 8), {}, r"\(H, W, C\)"),
    ((8, 8, 1), dict(padding_mode="wrap"), "padding_mode"),
])
def test_bad_configuration_raises(in_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        stn.SpatialTransformer(in_shape, rngs=nnx.Rngs(0), **kwargs)


def _linen_and_nnx_series(kind, loc, bound, output_size=None):
    x = _image((2, 12, 12, 2))
    opts = dict(bound=bound, padding_mode="border", output_size=output_size)
    lmod = stn_linen.SeriesSpatialTransformers(
        num_stages=3, transform=kind, **opts,
        localization=(functools.partial(stn_linen.LocalizationCNN, features=(4, 4), hidden=8)
                      if loc == "cnn" else None))
    nmod = stn.SeriesSpatialTransformers(
        (12, 12, 2), num_stages=3, transform=kind, rngs=nnx.Rngs(0), **opts,
        localization=((lambda shape, rngs: stn.LocalizationCNN(shape, features=(4, 4), hidden=8,
                                                               rngs=rngs))
                      if loc == "cnn" else None))
    variables = _perturbed_linen(lmod, x)
    stn.load_linen_params(nmod, variables["params"])
    return x, lmod, variables, nmod


@pytest.mark.parametrize("kind, loc, bound, output_size", [
    ("affine", "mlp", None, None), ("projective", "cnn", "tanh", (8, 10)),
    ("similarity", "mlp", "tanh", (6, 6))])
def test_series_linen_and_nnx_give_identical_outputs(kind, loc, bound, output_size):
    x, lmod, variables, nmod = _linen_and_nnx_series(kind, loc, bound, output_size)
    (ly, ltotal), lstate = lmod.apply(variables, x, return_params=True, mutable=["intermediates"])
    ny, ntotal = nmod(x, return_params=True)
    assert ly.shape == (2, *(output_size or (12, 12)), 2)
    assert float(jnp.abs(ltotal - jnp.eye(3)).max()) > 1e-3  # the perturbation moved the warp
    np.testing.assert_array_equal(np.asarray(ly), np.asarray(ny))
    np.testing.assert_array_equal(np.asarray(ltotal), np.asarray(ntotal))
    _, inter = nnx.capture(nmod, nnx.Intermediate)(x)
    inter = nnx.to_pure_dict(inter)
    for name in ("transform_params", "transform_deviation"):
        assert len(lstate["intermediates"][name]) == len(inter[name]) == 3
        for lv, nv in zip(lstate["intermediates"][name], inter[name], strict=True):
            np.testing.assert_array_equal(np.asarray(lv), np.asarray(nv))
    assert float(transform_penalty(inter)) == float(transform_penalty(lstate)) > 0


def test_fresh_series_is_identity():
    x = _image()
    module = stn.SeriesSpatialTransformers((12, 12, 3), num_stages=2, transform="affine",
                                           rngs=nnx.Rngs(0))
    y, total = module(x, return_params=True)
    np.testing.assert_allclose(y, x, atol=1e-5)
    np.testing.assert_array_equal(total, np.broadcast_to(np.eye(3), (2, 3, 3)))
    _, inter = nnx.capture(module, nnx.Intermediate)(x)
    inter = nnx.to_pure_dict(inter)
    assert len(inter["transform_params"]) == 2 and float(transform_penalty(inter)) == 0.0


def _linen_records(lmod, variables, x):
    out, state = lmod.apply(variables, x, mutable=["stn_inspect"])
    return out, pipeline.collect_inspections(state["stn_inspect"])


def _assert_same_records(lrecords, nrecords):
    assert [r["kind"] for r in lrecords] == [r["kind"] for r in nrecords]
    for lr, nr in zip(lrecords, nrecords, strict=True):
        assert set(lr) == set(nr) == {"kind", "params", "grid", "warped"}
        for key in ("params", "grid", "warped"):
            np.testing.assert_array_equal(np.asarray(lr[key]), np.asarray(nr[key]))


@pytest.mark.parametrize("kind, output_size", [
    ("tps", None), ("affine", (8, 6)), ("attention", None), ("projective", None)])
def test_inspection_matches_linen(kind, output_size):
    x = _image((2, 12, 12, 2))
    opts = dict(num_control_points=4, output_size=output_size)
    lmod = stn_linen.SpatialTransformer(transform=kind, **opts)
    nmod = stn.SpatialTransformer((12, 12, 2), transform=kind, rngs=nnx.Rngs(0), **opts)
    variables = _perturbed_linen(lmod, x)
    stn.load_linen_params(nmod, variables["params"])
    lout, lrecords = _linen_records(lmod, variables, x)
    (nout, records) = nnx.capture(nmod, stn.Inspection)(x)
    np.testing.assert_array_equal(np.asarray(lout), np.asarray(nout))
    nrecords = pipeline.collect_inspections(nnx.to_pure_dict(records))
    assert len(nrecords) == 1 and nrecords[0]["kind"] == kind
    assert nrecords[0]["grid"].shape == (2, *(output_size or (12, 12)), 2)
    np.testing.assert_array_equal(np.asarray(nrecords[0]["warped"]), np.asarray(nout))
    _assert_same_records(lrecords, nrecords)
    _assert_same_records(lrecords, stn.inspect_transformers(nmod, x))


def test_parallel_and_series_inspection_match_linen():
    x = _image((2, 12, 12, 1))
    lpar = stn_linen.ParallelSpatialTransformers(num_heads=3, transform="similarity")
    npar = stn.ParallelSpatialTransformers((12, 12, 1), num_heads=3, transform="similarity",
                                          rngs=nnx.Rngs(0))
    variables = _perturbed_linen(lpar, x)
    stn.load_linen_params(npar, variables["params"])
    lout, lrecords = _linen_records(lpar, variables, x)
    (ly, lp), (ny, np_) = lpar.apply(variables, x, return_params=True), npar(x, return_params=True)
    np.testing.assert_array_equal(np.asarray(ly), np.asarray(ny))
    np.testing.assert_array_equal(np.stack(lp), np.stack(np_))
    nrecords = stn.inspect_transformers(npar, x)
    assert len(nrecords) == 3
    _assert_same_records(lrecords, nrecords)
    np.testing.assert_array_equal(np.concatenate([r["warped"] for r in nrecords], -1), lout)

    x, lser, variables, nser = _linen_and_nnx_series("projective", "mlp", None, (8, 8))
    lout, lrecords = _linen_records(lser, variables, x)
    nrecords = stn.inspect_transformers(nser, x)
    assert [r["kind"] for r in nrecords] == ["projective"]
    assert nrecords[0]["params"].shape == (2, 8) and nrecords[0]["grid"].shape == (2, 8, 8, 2)
    _assert_same_records(lrecords, nrecords)
    np.testing.assert_array_equal(np.asarray(nrecords[0]["warped"]), np.asarray(lout))


def test_inspection_only_when_requested():
    x = _image()
    module = stn.SpatialTransformer((12, 12, 3), transform="tps", num_control_points=4, rngs=nnx.Rngs(0))
    _, inter = nnx.capture(module, nnx.Intermediate)(x)
    assert set(nnx.to_pure_dict(inter)) == {"transform_params", "transform_deviation"}
    _, records = nnx.capture(module, stn.Inspection)(x)
    assert set(nnx.to_pure_dict(records)) == {"transform:tps"}
    (entry,) = stn.inspect_transformers(module, x)
    np.testing.assert_allclose(entry["grid"][0], stn_jax.identity_grid((12, 12)), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    (dict(transform="tps"), "compose"),
    (dict(num_stages=0), "num_stages"),
    (dict(bound="sigmoid"), "bound"),
    (dict(mode="cubic"), "mode"),
])
def test_series_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        stn.SeriesSpatialTransformers((8, 8, 1), rngs=nnx.Rngs(0), **kwargs)


def test_load_linen_params_rejects_other_modules():
    with pytest.raises(TypeError, match="transformers of stn_jax.nnx"):
        stn.load_linen_params(stn.LocalizationMLP(4, rngs=nnx.Rngs(0)), {})
