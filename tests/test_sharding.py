"""The one mesh/sharding helper module, and that training, data and canonicalisation use it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec

import stn_jax.data
import stn_jax.data.batching
from stn_jax import sharding
from stn_jax.canonicalize import Canonicalizer
from stn_jax.train import parallel


def test_default_mesh_spans_every_device_on_the_data_axis():
    mesh = sharding.make_mesh()
    assert mesh.axis_names == (sharding.DATA_AXIS,) == ("data",)
    assert mesh.devices.size == jax.device_count() == 8
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)


def test_mesh_keeps_the_given_devices_in_order():
    devices = jax.devices()[:4][::-1]
    mesh = sharding.make_mesh(devices=devices)
    assert list(mesh.devices.flat) == devices


def test_batch_and_replicated_shardings():
    mesh = sharding.make_mesh(devices=jax.devices()[:4])
    assert sharding.batch_sharding(mesh).spec == PartitionSpec(sharding.DATA_AXIS)
    assert sharding.replicated(mesh).spec == PartitionSpec()
    with pytest.raises(ValueError, match="no batch axis 'batch'"):
        sharding.batch_sharding(mesh, axis="batch")


def test_replicate_and_put_global_batch():
    mesh = sharding.make_mesh()
    tree = sharding.replicate({"w": np.arange(3.0)}, mesh)
    assert tree["w"].sharding.spec == PartitionSpec() and len(tree["w"].sharding.device_set) == 8
    x = np.arange(16.0).reshape(16, 1)
    xs = sharding.put_global_batch(x, mesh)
    assert xs.sharding.spec == PartitionSpec(sharding.DATA_AXIS)
    assert {s.data.shape for s in xs.addressable_shards} == {(2, 1)}
    np.testing.assert_array_equal(np.asarray(xs), x)


def test_constrain_batch_splits_a_value_made_inside_jit():
    mesh = sharding.make_mesh()
    out = jax.jit(lambda: sharding.constrain_batch(jnp.zeros((16, 3)), mesh))()
    assert out.sharding.spec[0] == sharding.DATA_AXIS


def test_train_data_and_canonicalize_share_the_helpers():
    assert parallel.make_mesh is sharding.make_mesh
    assert parallel.batch_sharding is sharding.batch_sharding
    assert parallel.DATA_AXIS is sharding.DATA_AXIS
    assert stn_jax.data.batch_sharding is stn_jax.data.batching.batch_sharding is sharding.batch_sharding
    devices = jax.devices()[:2]
    canon = Canonicalizer(lambda v, x: {"warped": x, "params": x[:, 0, 0]}, {}, input_shape=(4, 4, 1),
                          transform="affine", devices=devices)
    assert canon.mesh == sharding.make_mesh(devices=devices)
    assert canon.batch_sharding == sharding.batch_sharding(canon.mesh)
