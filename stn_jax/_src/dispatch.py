"""The one place that decides which sampler implementation runs.

Implementations of 2-D bilinear sampling (all exactly equal in value and gradient up to
float rounding; see ``tests/test_fast_paths.py`` and ``tests/test_blocked.py``):

* ``"generic"`` kernel: the per-tap sampler of :mod:`stn_jax._src.generic` (every mode, 2-D
  and 3-D; the only kernel for nearest, bicubic and 3-D);
* ``"window"`` kernel: the window-gather path with a hand-written JVP of
  :mod:`stn_jax._src.bilinear`;
* ``"blocked"`` kernel: the window path whose batched derivative runs over cache-sized chunks
  of the batch (:mod:`stn_jax._src.blocked`);
* for the spatial-transformer modules' axis-aligned kinds, the matrix-product path of
  :mod:`stn_jax._src.separable` (:func:`use_separable`).

The expert override :func:`sampler_implementation` (``"auto"``, ``"fast"``, ``"generic"``)
narrows this choice; it is a :class:`contextvars.ContextVar`, so it is local to the thread
or ``contextvars`` context that sets it. The environment variable
:data:`ENV_VAR` (``STN_JAX_SAMPLER_IMPLEMENTATION``) gives the default where no override is
active. Every choice is made at trace time.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
from collections.abc import Iterator, Sequence

import jax

from stn_jax._src import bilinear, blocked, coordinates, generic

IMPLEMENTATIONS = ("auto", "fast", "generic")
"""Names accepted by :func:`sampler_implementation` and by :data:`ENV_VAR`."""

ENV_VAR = "STN_JAX_SAMPLER_IMPLEMENTATION"
"""Environment variable holding the default implementation (unset or empty: ``"auto"``)."""

KERNELS = ("generic", "window", "blocked")
"""The sampler kernels :func:`choose_kernel` picks from."""

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "stn_jax_sampler_implementation", default=None)


def _check_name(name: object, source: str) -> str:
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown sampler implementation {name!r} ({source}); "
                         f"expected one of {IMPLEMENTATIONS}")
    return name


def current_sampler_implementation() -> str:
    """The sampler implementation in force here: ``"auto"``, ``"fast"`` or ``"generic"``.

    The innermost active :func:`sampler_implementation` of this thread / ``contextvars``
    context; without one, the environment variable ``STN_JAX_SAMPLER_IMPLEMENTATION`` (read
    on every call); without that, ``"auto"``.

    Raises:
      ValueError: the environment variable holds an unknown name.
    """
    name = _override.get()
    if name is not None:
        return name
    value = os.environ.get(ENV_VAR, "")
    return _check_name(value, f"from the environment variable {ENV_VAR}") if value else "auto"


@contextlib.contextmanager
def sampler_implementation(name: str) -> Iterator[None]:
    """Expert override of the sampler implementation, for the code traced inside the block.

    ``"auto"`` (the default): the fastest exact path for each call: the window-gather kernel
    for 2-D bilinear sampling; in the spatial-transformer modules, the matrix-product path of
    :func:`stn_jax.separable.axis_aligned_warp` for the axis-aligned kinds where it is faster;
    on a one-device CPU process, the cache-blocked image gradient for large batches.
    ``"fast"``: the window-gather kernel for every 2-D bilinear call and nothing situational.
    ``"generic"``: the per-tap reference sampler everywhere. Every implementation gives the
    same values and gradients up to float rounding; only speed and memory differ. Nearest,
    bicubic and 3-D sampling always use the per-tap sampler.

    Semantics:

    * The choice is read at **trace time**. A function already traced keeps the
      implementation it was traced with: ``jax.jit`` (and ``jax.make_jaxpr``) cache traces per
      function object and argument shapes, not per this setting. To compare implementations,
      trace a new function object inside each block.
    * The setting is a :class:`contextvars.ContextVar`: it applies to the current thread (or
      ``contextvars`` context, e.g. an asyncio task) only, blocks nest, and the previous
      value is restored on exit, also when the block raises.
    * Without an active block, the environment variable ``STN_JAX_SAMPLER_IMPLEMENTATION``
      (one of the names above) gives the default; see :func:`current_sampler_implementation`.

    Args:
      name: ``"auto"``, ``"fast"`` or ``"generic"``.

    Raises:
      ValueError: unknown ``name`` (on entering the block).

    Example::

      with stn_jax.sampler_implementation("generic"):
          grads = jax.grad(loss)(params)   # traced with the reference sampler
    """
    token = _override.set(_check_name(name, "sampler_implementation"))
    try:
        yield
    finally:
        _override.reset(token)


# ----------------------------------------------------------------------------- decisions

# Cache-blocked derivative (see stn_jax._src.blocked), measured on a 2-core CPU
# (docs/design/performance.md): forward+backward of 256x60x60x1 ~12% faster with 8-64
# steps, 32x224x224x3 ~5-9% faster with 8-16 steps, 256x28x28x1 slower with any blocking.
BLOCK_MIN_POINTS = 512 * 1024
"""Batches with fewer output points (N * Ho * Wo) are not blocked."""
BLOCK_MIN_STEPS = 8
BLOCK_MAX_POINTS_PER_STEP = 200 * 1024
BLOCK_MIN_POINTS_PER_STEP = 16 * 1024
"""Smaller steps: the loop overhead outweighs the cache gain."""

# Axis-aligned warps as matrix products (experiments/benchmarks/bench_separable.py, 2-core CPU,
# forward+backward): the products' derivative beats the gather sampler's at every measured size,
# 28x28 (56 multiply-adds per output value) to 224x224x3 (448, where the margin is ~10%).
MAX_DENSE_MACS_PER_OUTPUT = 448

# GPU choices for the image gradient's scatter-add, read under "auto" when JAX's default backend
# is a GPU. Not measured on a GPU yet, so they equal the CPU choices; the scatter_add section of
# `python -m experiments.benchmarks.gpu_check` measures both, and its `recommendation.library_change`
# states the values that follow from the measurement.
GPU_KERNEL = "window"
"""Kernel of 2-D bilinear calls under ``"auto"`` on a GPU: ``"window"`` (the image gradient is
one windowed scatter-add) or ``"generic"`` (one scatter-add per tap)."""
GPU_MAX_DENSE_MACS_PER_OUTPUT = MAX_DENSE_MACS_PER_OUTPUT
""":func:`prefer_separable`'s threshold on a GPU (0: axis-aligned warps take the gather path)."""


def on_gpu() -> bool:
    """Whether JAX's default backend is a GPU (where the ``GPU_*`` choices apply)."""
    return jax.default_backend() == "gpu"


def on_single_cpu_device() -> bool:
    """Whether this process computes on exactly one CPU device, the only place blocking runs.

    Accelerators have no such cache cliff, and a scan over the batch would fight a
    batch-sharded mesh.
    """
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def blocked_steps(batch: int, points_per_example: int) -> int:
    """Number of batch chunks for the blocked derivative; 1 means "do not block".

    At least :data:`BLOCK_MIN_STEPS` and at most :data:`BLOCK_MAX_POINTS_PER_STEP` output
    points per step, rounded up to a divisor of ``batch``; 1 below :data:`BLOCK_MIN_POINTS`
    or when the only fitting divisor would leave fewer than :data:`BLOCK_MIN_POINTS_PER_STEP`
    points per step.
    """
    total = batch * points_per_example
    if total < BLOCK_MIN_POINTS:
        return 1
    wanted = max(BLOCK_MIN_STEPS, -(-total // BLOCK_MAX_POINTS_PER_STEP))
    steps = next(s for s in range(min(wanted, batch), batch + 1) if batch % s == 0)
    return steps if total // steps >= BLOCK_MIN_POINTS_PER_STEP else 1


def choose_kernel(mode: str, ndim: int, *, batch: int | None = None,
                  points_per_example: int = 0) -> tuple[str, int]:
    """The sampler kernel for a call and its number of blocked steps.

    Args:
      mode: interpolation mode.
      ndim: spatial dimensions (2 or 3).
      batch: batch size, or ``None`` for an unbatched call.
      points_per_example: output points per example (``Ho * Wo``).

    Returns:
      ``(kernel, steps)``: kernel one of :data:`KERNELS`; ``steps > 1`` only for ``"blocked"``.
    """
    implementation = current_sampler_implementation()
    if implementation == "generic" or mode != "bilinear" or ndim != 2:
        return "generic", 1
    if implementation == "auto" and on_gpu():
        return GPU_KERNEL, 1
    if batch is not None and implementation == "auto" and on_single_cpu_device():
        steps = blocked_steps(batch, points_per_example)
        if steps > 1:
            return "blocked", steps
    return "window", 1


def prefer_separable(in_size: Sequence[int], size: Sequence[int]) -> bool:
    """Whether the matrix-product path is the faster one for an axis-aligned warp of these sizes:
    at most :data:`MAX_DENSE_MACS_PER_OUTPUT` (on a GPU :data:`GPU_MAX_DENSE_MACS_PER_OUTPUT`)
    multiply-adds per output value.

    Args:
      in_size: ``(H, W)`` of the input.
      size: ``(Ho, Wo)`` of the output.
    """
    h, w = in_size
    ho, wo = size
    # Multiply-adds per output value and channel: N*C*(Wo*W*H + Ho*H*Wo) / (N*C*Ho*Wo).
    macs = (wo * w * h + ho * h * wo) / (ho * wo)
    return macs <= (GPU_MAX_DENSE_MACS_PER_OUTPUT if on_gpu() else MAX_DENSE_MACS_PER_OUTPUT)


def use_separable(in_size: Sequence[int], size: Sequence[int]) -> bool:
    """Whether an axis-aligned warp from ``in_size`` to ``size`` should take the matrix-product
    path: only under ``"auto"`` and where :func:`prefer_separable` holds."""
    return current_sampler_implementation() == "auto" and prefer_separable(in_size, size)


# ----------------------------------------------------------------------------- running


def sample(image: jax.Array, grid: jax.Array, *, mode: str, padding_mode: str,
           align_corners: bool) -> jax.Array:
    """Sample validated arrays with the chosen kernel.

    Args:
      image: (N, *spatial, C) or (*spatial, C), floating point.
      grid: (N, *out_spatial, ndim) or (*out_spatial, ndim) matching ``image``'s batching.
      mode, padding_mode, align_corners: validated options of :func:`stn_jax.grid_sample`.

    Returns:
      (N, *out_spatial, C) (or unbatched) in ``image``'s dtype.
    """
    ndim = grid.shape[-1]
    batched = grid.ndim == ndim + 2
    kernel, steps = choose_kernel(mode, ndim, batch=grid.shape[0] if batched else None,
                                  points_per_example=math.prod(grid.shape[1:-1]) if batched else 0)
    options = dict(padding_mode=padding_mode, align_corners=bool(align_corners),
                   compute_dtype=coordinates.compute_dtype(image.dtype, grid.dtype))
    if kernel == "blocked":
        out = blocked.sample_batched(image, grid, steps=steps, **options)
    else:
        core = (bilinear.sample_one if kernel == "window"
                else functools.partial(generic.sample_one, mode=mode))

        def fn(im: jax.Array, g: jax.Array) -> jax.Array:
            return core(im, g, **options)

        out = jax.vmap(fn)(image, grid) if batched else fn(image, grid)
    return out.astype(image.dtype)
