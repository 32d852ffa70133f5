"""Data parallelism over a device mesh (``jax.make_mesh`` + ``NamedSharding`` + ``jit``).

The mesh (:func:`stn_jax.sharding.make_mesh`) has one axis, :data:`stn_jax.sharding.DATA_AXIS`,
over every device of every host. Batches are sharded along their leading axis; the train
state is replicated. The mesh and sharding helpers live in :mod:`stn_jax.sharding` and are
re-exported here. Under ``jit`` XLA inserts the gradient
all-reduce, so the data-parallel step computes exactly the single-device step on the global
batch (up to float summation order). ``jax.pmap`` is not used.

Multi-host: call :func:`maybe_initialize_distributed` before anything touches a device; it
runs ``jax.distributed.initialize()`` when a cluster environment is detected
(``JAX_COORDINATOR_ADDRESS`` + ``JAX_NUM_PROCESSES`` + ``JAX_PROCESS_ID``, SLURM, Open MPI,
Cloud TPU; see :func:`distributed_options`). Each host then feeds only its own rows
(:func:`process_rows`, :func:`put_global_batch` with
``jax.make_array_from_process_local_data``), and batches generated on device inside the
jitted step are produced shard-by-shard where they are consumed. A process that dies makes the
others stop after :data:`ENV_HEARTBEAT_TIMEOUT` seconds; a SIGTERM to any process stops all
of them at one step (:func:`check_preemption`).
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
    process_rows,
    put_global_batch,
    replicate,
    replicated,
)
from stn_jax.train.config import check_divisible

__all__ = ["DATA_AXIS", "Preempted", "batch_sharding", "check_batch", "check_preemption", "cluster_detected",
           "constrain_batch", "data_parallel", "distributed_options", "make_mesh",
           "maybe_initialize_distributed", "process_rows", "put_global_batch", "replicate", "replicated"]

_CLUSTER_ENV = (
    "JAX_COORDINATOR_ADDRESS",    # explicit settings (with JAX_NUM_PROCESSES, JAX_PROCESS_ID)
    "OMPI_COMM_WORLD_SIZE",       # Open MPI
    "MEGASCALE_COORDINATOR_ADDRESS",
    "TPU_WORKER_HOSTNAMES",       # Cloud TPU pods
)
ENV_DISTRIBUTED = "STN_JAX_DISTRIBUTED"
"""``1``: always call ``jax.distributed.initialize()`` (jax then detects the cluster itself, e.g.
a Cloud TPU pod slice through its metadata server); ``0``: never; unset: when
:func:`cluster_detected`."""
ENV_INIT_TIMEOUT = "STN_JAX_INIT_TIMEOUT"
"""Seconds every process waits for all the others to join (default 300)."""
ENV_HEARTBEAT_TIMEOUT = "STN_JAX_HEARTBEAT_TIMEOUT"
"""Seconds without a heartbeat after which a process counts as dead and the others stop with
an error instead of waiting for it forever (default 100)."""
DEFAULT_INIT_TIMEOUT_S = 300
DEFAULT_HEARTBEAT_TIMEOUT_S = 100
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


def distributed_options(*, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments of ``jax.distributed.initialize`` read from the environment.

    ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` (0 .. N-1) set the job explicitly; any of them left unset is detected by
    jax (SLURM, Open MPI, Cloud TPU). :data:`ENV_INIT_TIMEOUT` and
    :data:`ENV_HEARTBEAT_TIMEOUT` set the timeouts in seconds.

    Raises:
      ValueError: a variable that is not a non-negative integer (a timeout: a positive one),
        or a process id outside ``0 .. JAX_NUM_PROCESSES - 1``.
    """
    env = os.environ if environ is None else environ
    options: dict[str, Any] = {
        "coordinator_address": env.get("JAX_COORDINATOR_ADDRESS") or None,
        "num_processes": _int_env(env, "JAX_NUM_PROCESSES", minimum=1),
        "process_id": _int_env(env, "JAX_PROCESS_ID", minimum=0),
        "initialization_timeout": _int_env(env, ENV_INIT_TIMEOUT, minimum=1) or DEFAULT_INIT_TIMEOUT_S,
        "heartbeat_timeout_seconds": (_int_env(env, ENV_HEARTBEAT_TIMEOUT, minimum=1)
                                      or DEFAULT_HEARTBEAT_TIMEOUT_S),
    }
    n, pid = options["num_processes"], options["process_id"]
    if n is not None and pid is not None and pid >= n:
        raise ValueError(f"JAX_PROCESS_ID={pid} must be below JAX_NUM_PROCESSES={n}")
    return options


def _int_env(env: Any, name: str, *, minimum: int) -> int | None:
    value = env.get(name)
    if value is None or value == "":
        return None
    if not value.strip().isdigit() or int(value) < minimum:
        raise ValueError(f"environment variable {name} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def maybe_initialize_distributed() -> bool:
    """Run ``jax.distributed.initialize()`` once if a cluster is detected (or
    :data:`ENV_DISTRIBUTED` is ``1``) with :func:`distributed_options`; returns whether this
    process is part of a ``jax.distributed`` job.

    Call it before anything touches a device. In a multi-process job every process must call
    it; process 0 also runs the coordination service at ``JAX_COORDINATOR_ADDRESS``. A job the
    caller joined already (``jax.distributed.initialize`` called before) is kept as it is.
    """
    global _initialized
    force = os.environ.get(ENV_DISTRIBUTED, "")
    if force not in ("", "0", "1"):
        raise ValueError(f"environment variable {ENV_DISTRIBUTED} must be 0 or 1; got {force!r}")
    _initialized = _initialized or jax.distributed.is_initialized()
    if _initialized or force == "0" or not (force == "1" or cluster_detected()):
        return _initialized
    jax.distributed.initialize(**distributed_options())
    _initialized = True
    return True


class Preempted(KeyboardInterrupt):
    """Raised on every process of a multi-process job at the same step after one of them got
    SIGTERM (a preemption notice, ``scancel``, ``kill``): the step to checkpoint and stop at."""


def check_preemption(step: int) -> None:
    """Raise :class:`Preempted` at the step all processes agreed on after a SIGTERM.

    Multi-process jobs only (one process: a no-op; the CLI turns SIGTERM into
    ``KeyboardInterrupt`` itself). ``jax.distributed.initialize`` installs its own SIGTERM
    handler (replacing one installed before it, such as the CLI's): a SIGTERM to any process is
    passed to the others through the coordination service, which picks one step past every
    process's current one; each process must call this after every step with the step number
    (jax's ``reached_preemption_sync_point``).
    """
    if jax.process_count() == 1 or not jax.config.jax_enable_preemption_service:
        return
    from jax.experimental import multihost_utils  # noqa: PLC0415 (multi-process jobs only)

    if multihost_utils.reached_preemption_sync_point(step):
        raise Preempted(f"SIGTERM: every process stops at step {step}")


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
