"""Data parallelism over a device mesh (``jax.make_mesh`` + ``NamedSharding`` + ``jit``).

The mesh (:func:`stn_jax.sharding.make_mesh`) has one axis, :data:`stn_jax.sharding.DATA_AXIS`,
over every device of every host. Batches are sharded along their leading axis; the train
state is replicated. The mesh and sharding helpers live in :mod:`stn_jax.sharding` and are
re-exported here. Under ``jit`` XLA inserts the gradient
all-reduce, so the data-parallel step computes exactly the single-device step on the global
batch (up to float summation order). ``jax.pmap`` is not used.

Multi-host: call :func:`maybe_initialize_distributed` before anything touches a device; it
runs ``jax.distributed.initialize()`` when a cluster environment is detected. Each host then
feeds only its own shard (:func:`put_global_batch` uses
``jax.make_array_from_process_local_data``), and batches generated on device inside the
jitted step are produced shard-by-shard where they are consumed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
from jax.sharding import Mesh

from stn_jax.sharding import (
    DATA_AXIS,
    batch_sharding,
    constrain_batch,
    make_mesh,
    put_global_batch,
    replicate,
    replicated,
)
from stn_jax.train.config import check_divisible

__all__ = ["DATA_AXIS", "batch_sharding", "check_batch", "cluster_detected", "constrain_batch",
           "data_parallel", "make_mesh", "maybe_initialize_distributed", "put_global_batch",
           "replicate", "replicated"]

_CLUSTER_ENV = (
    "JAX_COORDINATOR_ADDRESS",    # explicit jax.distributed settings
    "COORDINATOR_ADDRESS",
    "OMPI_COMM_WORLD_SIZE",       # Open MPI
    "MEGASCALE_COORDINATOR_ADDRESS",
    "TPU_WORKER_HOSTNAMES",       # Cloud TPU pods
)
_initialized = False


def cluster_detected(*, environ: dict[str, str] | None = None) -> bool:
    """True when the environment describes a multi-process job jax can auto-configure."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in _CLUSTER_ENV):
        if env.get("TPU_WORKER_HOSTNAMES") and "," not in env["TPU_WORKER_HOSTNAMES"]:
            return False          # single-host TPU VM
        return True
    slurm_tasks = env.get("SLURM_NTASKS") or env.get("SLURM_STEP_NUM_TASKS")
    return bool(slurm_tasks and slurm_tasks.isdigit() and int(slurm_tasks) > 1)


def maybe_initialize_distributed() -> bool:
    """Run ``jax.distributed.initialize()`` once if a cluster is detected; returns whether it did."""
    global _initialized
    if _initialized or not cluster_detected():
        return _initialized
    jax.distributed.initialize()
    _initialized = True
    return True


def check_batch(batch_size: int, mesh: Mesh, *, name: str = "batch_size") -> None:
    """Raise ValueError unless `batch_size` divides evenly over the mesh's devices."""
    check_divisible(name, batch_size, mesh.devices.size)


def data_parallel(fn: Callable[..., Any], mesh: Mesh, *, batch_argnums: tuple[int, ...],
                  num_args: int, donate_argnums: tuple[int, ...] = ()) -> Callable[..., Any]:
    """``jax.jit`` of `fn` with arguments in `batch_argnums` split along their leading axis over
    the mesh's batch axis and every other argument and every output replicated."""
    rep, data = replicated(mesh), batch_sharding(mesh)
    in_shardings = tuple(data if i in batch_argnums else rep for i in range(num_args))
    return jax.jit(fn, in_shardings=in_shardings, out_shardings=rep, donate_argnums=donate_argnums)
