"""Session-3 probe: reformulations of the 2-D bilinear backward, timed against the shipped path.

Each variant computes ``jax.grad`` of ``vdot(warp(image, theta), ct)`` w.r.t. image and theta
(random affine, zeros padding, the benchmark's problem) and is checked against the shipped
``stn_jax.warp`` before timing (interleaved, median of reps). Variants:

* ``auto``        the shipped path (stn_jax._bilinear: custom_jvp, windowed scatter-add);
* ``vjp``         a custom_vjp that saves only (image, grid) and recomputes the layout, the
                  window gather, the grid cotangent and the scatter update in its backward;
* ``resid``       the shipped JVP rule with an optimization_barrier on its residuals
                  (weights, d out/d ix, d out/d iy, window starts), so XLA stores them once
                  instead of recomputing them in every consumer fusion;
* ``chunk2``      the shipped path on two strided batch halves (examples 0,2,4.. and 1,3,5..,
                  which keeps a batch-sharded layout local): two independent scatters;
* ``window_major`` the window gather with its (2, 2C) window as the leading axes, so every tap
                  is a plane and the scatter update is four planar products;
* ``dense``       sampling as tent-matrix products for a general grid:
                  out[p] = sum_a Ky[p, a] sum_b Kx[p, b] image[a, b] (no gather, no scatter).

Usage: .venv/bin/python experiments/perf_probes/backward_variants.py 256x60x60x1,32x224x224x3 auto,vjp,resid
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
import stn_jax  # noqa: E402
from stn_jax import _bilinear as B  # noqa: E402
from stn_jax import grids, sampling, separable  # noqa: E402
from bench_sampler import random_theta  # noqa: E402

F32 = jnp.dtype(jnp.float32)
_SCATTER = lax.ScatterDimensionNumbers(update_window_dims=(2, 3), inserted_window_dims=(),
                                       scatter_dims_to_operand_dims=(0, 1))


def _coords_fn(h, w):
    return functools.partial(B._coords, height=h, width=w, padding_mode="zeros", align_corners=False)


def _d_coords(v, fx, fy, ok):
    """d out / d ix, d out / d iy (Ho, Wo, C) from the (Ho, Wo, 2, 2, C) window."""
    fx, fy, ok = fx[..., None], fy[..., None], ok[..., None]
    d_ix = ok * ((1 - fy) * (v[:, :, 0, 1] - v[:, :, 0, 0]) + fy * (v[:, :, 1, 1] - v[:, :, 1, 0]))
    d_iy = ok * ((1 - fx) * (v[:, :, 1, 0] - v[:, :, 0, 0]) + fx * (v[:, :, 1, 1] - v[:, :, 0, 1]))
    return d_ix, d_iy


# ----------------------------------------------------------------------------- vjp


@jax.custom_vjp
def _sample_vjp(image, grid):
    return B._sample(image, grid, "zeros", False, F32)


def _vjp_fwd(image, grid):
    return _sample_vjp(image, grid), (image, grid)


def _vjp_bwd(res, ct):
    image, grid = res
    h, w, c = image.shape
    starts, ok, fx, fy = B._layout(grid, image.shape, "zeros", False, F32)
    v = B._window_gather(B._pad(image), starts)
    d_ix, d_iy = _d_coords(v, fx, fy, ok)
    p, q = d_ix * ct, d_iy * ct
    g_ix, g_iy = p[..., 0], q[..., 0]
    for k in range(1, c):  # channel sum without a reduce op (XLA:CPU's YNN reduce is slow)
        g_ix, g_iy = g_ix + p[..., k], g_iy + q[..., k]
    _, coords_vjp = jax.vjp(_coords_fn(h, w), grid)
    (ct_grid,) = coords_vjp((g_ix, g_iy))
    fx_, fy_, okc = fx[..., None], fy[..., None], ok[..., None] * ct
    top = jnp.concatenate([(1 - fy_) * (1 - fx_) * okc, (1 - fy_) * fx_ * okc], -1)
    bottom = jnp.concatenate([fy_ * (1 - fx_) * okc, fy_ * fx_ * okc], -1)
    target = jnp.zeros((h + 2, (w + 2) * c), ct.dtype)
    acc = lax.scatter_add(target, starts * jnp.array([1, c], jnp.int32), jnp.stack([top, bottom], -2),
                          _SCATTER, mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    return acc.reshape(h + 2, w + 2, c)[1:-1, 1:-1], ct_grid


_sample_vjp.defvjp(_vjp_fwd, _vjp_bwd)


# ----------------------------------------------------------------------------- jvp rules


def _window_major_gather(padded, starts):
    """(H+2, W+2, C), (Ho, Wo, 2) -> (2, 2C, Ho, Wo): the window axes first."""
    rows, cols, c = padded.shape
    dnums = lax.GatherDimensionNumbers(offset_dims=(0, 1), collapsed_slice_dims=(), start_index_map=(0, 1))
    return lax.gather(padded.reshape(rows, cols * c), starts * jnp.array([1, c], jnp.int32), dnums,
                      slice_sizes=(2, 2 * c), mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)


def _make_jvp_variant(variant):
    @jax.custom_jvp
    def sample(image, grid):
        return B._sample(image, grid, "zeros", False, F32)

    @sample.defjvp
    def rule(primals, tangents):
        (image, grid), (t_image, t_grid) = primals, tangents
        h, w, c = image.shape
        starts, ok, fx, fy = B._layout(grid, image.shape, "zeros", False, F32)
        _, (t_ix, t_iy) = jax.jvp(_coords_fn(h, w), (grid,), (t_grid,))
        if variant == "window_major":
            v = _window_major_gather(B._pad(image), starts)
            v00, v01, v10, v11 = v[0, :c], v[0, c:], v[1, :c], v[1, c:]  # (C, Ho, Wo) each
            top, bottom = v00 + fx * (v01 - v00), v10 + fx * (v11 - v10)
            out = ok * (top + fy * (bottom - top))
            d_ix = ok * ((1 - fy) * (v01 - v00) + fy * (v11 - v10))
            d_iy = ok * ((1 - fx) * (v10 - v00) + fx * (v11 - v01))
            t = _window_major_gather(B._pad(t_image), starts)
            t_out = (ok * (1 - fy) * (1 - fx) * t[0, :c] + ok * (1 - fy) * fx * t[0, c:]
                     + ok * fy * (1 - fx) * t[1, :c] + ok * fy * fx * t[1, c:] + d_ix * t_ix + d_iy * t_iy)
            return jnp.moveaxis(out, 0, -1), jnp.moveaxis(t_out, 0, -1)
        v = B._window_gather(B._pad(image), starts)
        out = B._combine(v, fx, fy, ok)
        d_ix, d_iy = _d_coords(v, fx, fy, ok)
        weights = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=-1)
        weights = (weights * ok[..., None]).reshape(*weights.shape[:-1], 2, 2, 1)
        weights, d_ix, d_iy, starts = lax.optimization_barrier((weights, d_ix, d_iy, starts))
        t_v = B._window_gather(B._pad(t_image), starts)
        t_out = (jnp.sum(weights * t_v, axis=(-3, -2)) + B._channel_outer(d_ix, t_ix)
                 + B._channel_outer(d_iy, t_iy))
        return out, t_out

    return sample


# ----------------------------------------------------------------------------- warps


def _per_example(core):
    def warp(image, theta):
        return jax.vmap(core)(image, grids.affine_grid(theta, image.shape[1:3]))
    return warp


def _chunk2(image, theta):
    n = image.shape[0]
    grid = grids.affine_grid(theta, image.shape[1:3])
    core = jax.vmap(lambda i, g: B.sample_one(i, g, padding_mode="zeros", align_corners=False,
                                              compute_dtype=F32))
    xi, gi = image.reshape(n // 2, 2, *image.shape[1:]), grid.reshape(n // 2, 2, *grid.shape[1:])
    return jnp.stack([core(xi[:, k], gi[:, k]) for k in range(2)], 1).reshape(image.shape)


def _dense(image, theta):
    n, h, w, c = image.shape
    grid = grids.affine_grid(theta, (h, w)).reshape(n, h * w, 2)
    opts = dict(mode="bilinear", padding_mode="zeros", align_corners=False)
    kx = separable._tap_matrix(grid[..., 0], w, **opts)  # (N, P, W)
    ky = separable._tap_matrix(grid[..., 1], h, **opts)  # (N, P, H)
    rows = jnp.einsum("npb,nabc->npac", kx, image)
    return jnp.einsum("npa,npac->npc", ky, rows).reshape(image.shape)


VARIANTS = {
    "auto": lambda image, theta: stn_jax.warp(image, theta),
    "vjp": _per_example(_sample_vjp),
    "resid": _per_example(_make_jvp_variant("resid")),
    "chunk2": _chunk2,
    "window_major": _per_example(_make_jvp_variant("window_major")),
    "dense": _dense,
}


def run(shape, names, reps):
    n, h, w, c = shape
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.random(shape, dtype=np.float32))
    theta = jnp.asarray(random_theta(n, rng))
    ct = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    fns = {k: jax.jit(jax.grad(lambda im, t, f=VARIANTS[k]: jnp.vdot(f(im, t), ct), argnums=(0, 1)))
           for k in ["auto"] + [k for k in names if k != "auto"]}
    ref = fns["auto"](image, theta)
    for k, f in fns.items():  # every variant computes the same gradients
        for a, b in zip(f(image, theta), ref):
            assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * float(jnp.max(jnp.abs(b))), k
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            jax.block_until_ready(f(image, theta))
            t0 = time.perf_counter()
            jax.block_until_ready(f(image, theta))
            times[k].append(1e3 * (time.perf_counter() - t0))
    print(f"{'x'.join(map(str, shape))} fwd+bwd median ms ({reps} reps, load {os.getloadavg()[0]:.1f}): "
          + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in times.items()), flush=True)


if __name__ == "__main__":
    shapes = sys.argv[1] if len(sys.argv) > 1 else "256x60x60x1,32x224x224x3"
    names = (sys.argv[2] if len(sys.argv) > 2 else ",".join(VARIANTS)).split(",")
    for s in shapes.split(","):
        shape = tuple(int(v) for v in s.split("x"))
        run(shape, [k for k in names if k != "dense" or shape[1] <= 42], 15 if shape[1] < 200 else 5)
