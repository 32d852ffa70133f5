"""Interop: Linen transformer inside NNX, NNX transformer inside Linen, ST in front of a user CNN."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from stn_jax import linen as stn_linen
from stn_jax import nnx as stn_nnx


def _image(shape=(2, 12, 12, 1)):
    return jax.random.uniform(jax.random.key(0), shape, jnp.float32)


def test_linen_transformer_inside_nnx_model():
    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.st = nnx.bridge.ToNNX(stn_linen.SpatialTransformer(transform="affine"), rngs=rngs)
            self.head = nnx.Linear(12 * 12, 10, rngs=rngs)

        def __call__(self, x):
            return self.head(self.st(x).reshape((x.shape[0], -1)))

    x = _image()
    model = Model(nnx.Rngs(0))
    nnx.bridge.lazy_init(model.st, x)
    logits = model(x)
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(model.st(x), x, atol=1e-5)  # identity at init
    grads = nnx.grad(lambda m: jnp.sum(m(x) ** 2))(model)
    assert float(jnp.abs(grads.st.regression["bias"][...]).max()) > 0


def test_nnx_transformer_inside_linen_model():
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nnx.bridge.ToLinen(stn_nnx.SpatialTransformer, args=((12, 12, 1),),
                                   kwargs={"transform": "attention"}, name="st")(x)
            return nn.Dense(10)(x.reshape((x.shape[0], -1)))

    x = _image()
    model = Model()
    variables = model.init(jax.random.key(0), x)
    assert model.apply(variables, x).shape == (2, 10)
    grads = jax.grad(lambda p: jnp.sum(model.apply({"params": p}, x) ** 2))(variables["params"])
    reg = grads["st"]["regression"]["bias"]
    assert float(jnp.abs(reg).max()) > 0


def test_transformer_in_front_of_a_user_cnn():
    # the README's ten-line example
    class UserCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3))(x))
            return nn.Dense(10)(x.mean(axis=(1, 2)))

    class WithST(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = stn_linen.SpatialTransformer(transform="similarity",
                                             localization=stn_linen.LocalizationCNN())(x)
            return UserCNN()(x)

    x = _image((2, 16, 16, 1))
    variables = WithST().init(jax.random.key(0), x)
    plain = UserCNN().apply({"params": variables["params"]["UserCNN_0"]}, x)
    np.testing.assert_allclose(WithST().apply(variables, x), plain, atol=1e-5)
