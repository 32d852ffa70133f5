"""The CNN classifiers' convolution implementations: im2col computes XLA's convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from stn_jax import models
from stn_jax.models import conv as conv_impls
from stn_jax.train import TrainConfig

NHWC = ("NHWC", "HWIO", "NHWC")


def _both(x, w, padding, **kw):
    ref = lax.conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC, **kw)
    got = conv_impls.im2col_conv_general_dilated(x, w, (1, 1), padding, dimension_numbers=NHWC, **kw)
    return ref, got


@settings(max_examples=12, deadline=None)
@given(side=st.integers(5, 12), c_in=st.integers(1, 5), c_out=st.integers(1, 6),
       k=st.sampled_from([1, 3, 5]), padding=st.sampled_from(["VALID", "SAME", ((1, 2), (0, 3))]))
def test_im2col_matches_xla_forward(side, c_in, c_out, k, padding):
    x = jax.random.normal(jax.random.PRNGKey(side), (2, side, side + 1, c_in))
    w = jax.random.normal(jax.random.PRNGKey(k), (k, k, c_in, c_out))
    ref, got = _both(x, w, padding)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_im2col_gradients_match_xla():
    x = jax.random.normal(jax.random.PRNGKey(0), (3, 11, 9, 4))
    w = jax.random.normal(jax.random.PRNGKey(1), (5, 3, 4, 7))

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (1, 1), "VALID", dimension_numbers=NHWC)))

    ref = jax.grad(loss(lax.conv_general_dilated), argnums=(0, 1))(x, w)
    got = jax.grad(loss(conv_impls.im2col_conv_general_dilated), argnums=(0, 1))(x, w)
    for r, g in zip(ref, got, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kw", [dict(window_strides=(2, 2)), dict(rhs_dilation=(2, 2)),
                                dict(dimension_numbers=None)])
def test_im2col_hands_other_convolutions_to_xla(kw):
    """Strides, dilations and other layouts are not im2col's: the result is still XLA's."""
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 3))
    w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 5))
    args = dict(window_strides=(1, 1), dimension_numbers=NHWC) | kw
    if args["dimension_numbers"] is None:  # lax's default layout: NCHW / OIHW
        x, w = x.transpose(0, 3, 1, 2), w.transpose(3, 2, 0, 1)
    strides = args.pop("window_strides")
    ref = lax.conv_general_dilated(x, w, strides, "VALID", **args)
    got = conv_impls.im2col_conv_general_dilated(x, w, strides, "VALID", **args)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,dataset", [("cnn", "rts"), ("st-cnn", "tc")])
def test_zoo_models_agree_across_conv_implementations(name, dataset):
    shape = models.DATASET_SPECS[dataset].input_shape
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, *shape))
    xla = models.create_model(name, dataset=dataset, conv="xla")
    im2col = models.create_model(name, dataset=dataset, conv="im2col")
    variables = xla.init(jax.random.PRNGKey(1), x)
    assert jax.tree.structure(variables) == jax.tree.structure(im2col.init(jax.random.PRNGKey(1), x))
    np.testing.assert_allclose(im2col.apply(variables, x), xla.apply(variables, x), atol=1e-5)
    grads = [jax.grad(lambda v, m=m: m.apply(v, x).sum())(variables) for m in (xla, im2col)]
    for r, g in zip(*map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)


def test_auto_is_im2col_on_cpu_only(monkeypatch):
    assert conv_impls.conv_function("xla") is None
    assert conv_impls.conv_function("im2col") is conv_impls.im2col_conv_general_dilated
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert conv_impls.conv_function("auto") is None
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    assert conv_impls.conv_function("auto") is conv_impls.im2col_conv_general_dilated


def test_bad_conv_options_are_rejected_by_name():
    with pytest.raises(ValueError, match="conv implementation 'cudnn'.*auto"):
        models.create_model("cnn", dataset="rts", conv="cudnn")
    with pytest.raises(ValueError, match="FCN classifier.*conv"):
        models.create_model("fcn", dataset="rts", conv="xla")
    with pytest.raises(ValueError, match="conv.*'fast'"):
        TrainConfig(model="cnn", conv="fast").validate()


def test_train_config_passes_conv_to_cnn_models_only():
    assert TrainConfig(model="st-cnn", conv="xla").model_options()["conv"] == "xla"
    assert "conv" not in TrainConfig(model="st-fcn").model_options()


def test_im2col_falls_back_to_xla_above_its_patch_memory_limit(monkeypatch):
    x = jnp.zeros((2, 12, 12, 3))
    w = jnp.zeros((5, 5, 3, 4))

    def primitives():
        jaxpr = jax.make_jaxpr(lambda x, w: conv_impls.im2col_conv_general_dilated(
            x, w, (1, 1), "SAME", dimension_numbers=NHWC))(x, w)
        return {str(eqn.primitive) for eqn in jaxpr.eqns}

    assert "conv_general_dilated" not in primitives()
    monkeypatch.setattr(conv_impls, "IM2COL_MAX_PATCH_BYTES", 2 * 12 * 12 * 25 * 3 * 4 - 1)
    assert "conv_general_dilated" in primitives()
