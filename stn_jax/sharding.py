"""The device mesh and shardings shared by training, data batching and canonicalisation.

Every data-parallel part of the library uses one 1-D mesh whose single axis is named
:data:`DATA_AXIS`. A batch is split along its leading axis over that mesh axis
(:func:`batch_sharding`); parameters and other state are replicated on every device
(:func:`replicated`). Under ``jax.jit`` with these shardings XLA inserts the collectives
(e.g. the gradient all-reduce), so a data-parallel computation equals the single-device one
on the global batch up to float summation order.

>>> import jax
>>> from stn_jax import sharding
>>> mesh = sharding.make_mesh(devices=jax.local_devices()[:1])
>>> mesh.axis_names
('data',)
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
"""Name of the mesh axis that batches are split over."""

__all__ = ["DATA_AXIS", "batch_sharding", "constrain_batch", "make_mesh", "process_rows",
           "put_global_batch", "replicate", "replicated"]


def make_mesh(*, devices: Sequence[Any] | None = None) -> Mesh:
    """A 1-D mesh with axis :data:`DATA_AXIS` over `devices`.

    Args:
      devices: the devices, kept in the given order; default: every device of every host,
        ordered by ``jax.make_mesh`` (which may follow the physical topology).

    Returns:
      A :class:`jax.sharding.Mesh` of shape ``(len(devices),)`` whose axis type is ``Auto``
      (XLA chooses the layout of intermediate values).
    """
    axis_types = (jax.sharding.AxisType.Auto,)
    if devices is None:
        return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=axis_types)
    return Mesh(np.asarray(list(devices)), (DATA_AXIS,), axis_types=axis_types)


def replicated(mesh: Mesh) -> NamedSharding:
    """``NamedSharding(mesh, P())``: a full copy of the array on every device of `mesh`."""
    return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, *, axis: str = DATA_AXIS) -> NamedSharding:
    """``NamedSharding(mesh, P(axis))``: the leading (batch) axis split over mesh axis `axis`.

    Raises:
      ValueError: `mesh` has no axis named `axis`.
    """
    if axis not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}; no batch axis {axis!r}")
    return NamedSharding(mesh, PartitionSpec(axis))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put every array of the pytree `tree` on all devices of `mesh` (identical copies)."""
    return jax.device_put(tree, replicated(mesh))


def process_rows(global_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch of `global_size` rows that this process feeds.

    Under :func:`batch_sharding` every device of `mesh` holds ``global_size / mesh.size``
    consecutive rows; the rows of this process's devices form one contiguous range, which is
    what :func:`put_global_batch` expects from this process. One process: ``slice(0, global_size)``.

    Raises:
      ValueError: `global_size` does not divide over the mesh's devices, or this process's
        devices are not adjacent on the mesh (its rows would not be one range).
    """
    devices = mesh.devices.size
    if global_size % devices:
        raise ValueError(f"a global batch of {global_size} rows does not divide over {devices} devices")
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_size,))
    blocks = sorted(index[0].indices(global_size)[:2] for index in index_map.values())
    if any(prev[1] != nxt[0] for prev, nxt in itertools.pairwise(blocks)):
        raise ValueError(f"process {jax.process_index()} owns the non-adjacent row blocks {blocks} of the "
                         f"mesh; order the mesh's devices by process (jax.make_mesh does)")
    return slice(blocks[0][0], blocks[-1][1])


def put_global_batch(arrays: Any, mesh: Mesh) -> Any:
    """Place host arrays (this process's rows) on `mesh`, split along axis 0.

    Single process: `arrays` is the whole global batch. Multi-process: each process passes
    its own rows, ``global[process_rows(len(global), mesh)]``, and the result is the global
    array (every process passes the same number of rows).
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() == 1:
        return jax.device_put(arrays, sharding)
    return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, np.asarray(a)), arrays)


def constrain_batch(tree: Any, mesh: Mesh) -> Any:
    """Inside ``jit``: ask XLA to split `tree`'s arrays along their leading axis over `mesh`."""
    return jax.lax.with_sharding_constraint(tree, batch_sharding(mesh))
