"""Probe (session 4): other layouts for the image-gradient scatter and the window gather.

Two families, each timed interleaved (20 ms pause before each candidate, one untimed call
before each timed one) against the shipped ``stn_jax.warp``:

* ``image-only``: the image gradient of an affine warp alone (zeros padding, align_corners
  False), written by hand:
  - ``shipped``: ``jax.grad`` of ``stn_jax.warp`` w.r.t. the image (vmapped (2, 2C) window scatter);
  - ``cells-global``: "corner moments": each output point adds ``w_k * ct`` (k = 4 taps) as one
    contiguous 4C row to its cell of a (N*(H+1)*(W+1), 4C) table, indexed by ONE int32 that
    folds in the batch; the image gradient is then the sum of four shifted table planes;
  - ``cells-vmapped``: the same per example under ``vmap`` (the batch becomes a second index).
* ``joint``: forward+backward w.r.t. image and theta, through a custom_jvp like the shipped one
  whose window values come from
  - ``window``: the shipped per-example (2, 2C) window gather, with the finite mask computed once
    (the shipped ``_layout`` computes it twice, which makes XLA store the (N, H, W, 2) grid);
  - ``cells-global``: a gather of 4C rows from the corner table of the image (and of its tangent,
    whose transpose is the ``cells-global`` scatter above);
  - ``hybrid``: primal taps by two 1-D row-pair gathers, tangent through the corner table.

Every candidate is checked against the shipped gradients before timing (max |difference| is
printed; summation order differs, so ~1e-6 is expected).

Usage: .venv/bin/python experiments/perf_probes/scatter_layouts.py [--reps 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
import stn_jax  # noqa: E402
from stn_jax import _bilinear, sampling  # noqa: E402
from _harness import header, interleaved_ms, problem, write_lines  # noqa: E402

_PROMISE = lax.GatherScatterMode.PROMISE_IN_BOUNDS
_ROW_DNUMS = lax.ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(0,),
                                         scatter_dims_to_operand_dims=(0,))


# ----------------------------------------------------------------------------- shared pieces


def unblocked_warp(image, theta):
    """The shipped warp with the unblocked derivative (``"fast"``: what ``auto`` was before session 4's blocking)."""
    with _bilinear.sampler_implementation("fast"):
        return stn_jax.warp(image, theta)


def _pixel(x, y, height, width):
    return sampling._unnormalize(x, width, False), sampling._unnormalize(y, height, False)


def _layout(grid, height, width):
    """Like stn_jax._bilinear._layout (zeros padding) but with the finite mask computed once."""
    x, y = grid[..., 0], grid[..., 1]
    finite = jnp.isfinite(x) & jnp.isfinite(y)
    x, y = jnp.where(finite, x, 0.0), jnp.where(finite, y, 0.0)
    ix, iy = _pixel(x, y, height, width)
    x0, y0 = lax.stop_gradient(jnp.floor(ix)), lax.stop_gradient(jnp.floor(iy))
    ok = finite & (x0 >= -1) & (x0 <= width - 1) & (y0 >= -1) & (y0 <= height - 1)
    fx, fy = jnp.where(ok, ix - x0, 0.0), jnp.where(ok, iy - y0, 0.0)
    col = (jnp.clip(x0, -1, width - 1) + 1).astype(jnp.int32)
    row = (jnp.clip(y0, -1, height - 1) + 1).astype(jnp.int32)
    return row, col, ok.astype(grid.dtype), fx, fy, finite, x, y


def _weights(fx, fy, ok):
    return jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], -1) * ok[..., None]


def _global_cell(row, col, height, width):
    n = jnp.arange(row.shape[0], dtype=jnp.int32).reshape(-1, *([1] * (row.ndim - 1)))
    return (n * (height + 1) + row) * (width + 1) + col


def _corner_table(image):
    """(N, H, W, C) -> (N*(H+1)*(W+1), 4C): the four taps of every cell of the zero-padded image."""
    n, h, w, c = image.shape
    p = jnp.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0)))
    q = jnp.stack([p[:, :-1, :-1], p[:, :-1, 1:], p[:, 1:, :-1], p[:, 1:, 1:]], axis=-2)
    return q.reshape(n * (h + 1) * (w + 1), 4 * c)


def _unshift(table, n, h, w, c):
    """Transpose of _corner_table's tap layout: (N*(H+1)*(W+1), 4C) -> (N, H, W, C)."""
    m = table.reshape(n, h + 1, w + 1, 4, c)
    return m[:, 1:, 1:, 0] + m[:, 1:, :-1, 1] + m[:, :-1, 1:, 2] + m[:, :-1, :-1, 3]


# ----------------------------------------------------------------------------- image-only candidates


def image_grad_cells_global(theta, ct):
    n, h, w, c = ct.shape
    row, col, ok, fx, fy, *_ = _layout(stn_jax.affine_grid(theta, (h, w)), h, w)
    cell = _global_cell(row, col, h, w).reshape(-1, 1)
    upd = (_weights(fx, fy, ok)[..., :, None] * ct[..., None, :]).reshape(-1, 4 * c)
    table = lax.scatter_add(jnp.zeros((n * (h + 1) * (w + 1), 4 * c), ct.dtype), cell, upd,
                            _ROW_DNUMS, mode=_PROMISE)
    return _unshift(table, n, h, w, c)


def image_grad_cells_vmapped(theta, ct):
    n, h, w, c = ct.shape
    row, col, ok, fx, fy, *_ = _layout(stn_jax.affine_grid(theta, (h, w)), h, w)

    def one(row, col, ok, fx, fy, ct):
        upd = (_weights(fx, fy, ok)[..., :, None] * ct[..., None, :]).reshape(-1, 4 * c)
        cell = (row * (w + 1) + col).reshape(-1, 1)
        table = lax.scatter_add(jnp.zeros(((h + 1) * (w + 1), 4 * c), ct.dtype), cell, upd,
                                _ROW_DNUMS, mode=_PROMISE)
        return _unshift(table, 1, h, w, c)[0]

    return jax.vmap(one)(row, col, ok, fx, fy, ct)


# ----------------------------------------------------------------------------- joint candidates


def _taps_window(image, row, col):
    return jax.vmap(lambda im, r, c: _bilinear._window_gather(_bilinear._pad(im), jnp.stack([r, c], -1)))(
        image, row, col)


def _taps_cells(image, row, col):
    n, h, w, c = image.shape
    cell = _global_cell(row, col, h, w).reshape(-1, 1)
    dn = lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(0,), start_index_map=(0,))
    v = lax.gather(_corner_table(image), cell, dn, slice_sizes=(1, 4 * c), mode=_PROMISE)
    return v.reshape(*row.shape, 2, 2, c)


def _taps_row_pairs(image, row, col):
    n, h, w, c = image.shape
    flat = jnp.pad(image, ((0, 0), (1, 1), (1, 1), (0, 0))).reshape(-1)
    b = jnp.arange(n, dtype=jnp.int32).reshape(n, *([1] * (row.ndim - 1)))
    k = (((b * (h + 2) + row) * (w + 2) + col) * c).reshape(-1, 1)
    dn = lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(), start_index_map=(0,))
    top = lax.gather(flat, k, dn, slice_sizes=(2 * c,), mode=_PROMISE)
    bottom = lax.gather(flat, k + (w + 2) * c, dn, slice_sizes=(2 * c,), mode=_PROMISE)
    return jnp.stack([top, bottom], 1).reshape(*row.shape, 2, 2, c)


STYLES = {"window": (_taps_window, _taps_window), "cells-global": (_taps_cells, _taps_cells),
          "hybrid": (_taps_row_pairs, _taps_cells)}


def make_sampler(style):
    primal_taps, tangent_taps = STYLES[style]

    @jax.custom_jvp
    def sample(image, grid):
        return jax.vmap(lambda i, g: sampling._sample_one(
            i, g, mode="bilinear", padding_mode="zeros", align_corners=False,
            compute_dtype=jnp.float32))(image, grid)

    @sample.defjvp
    def _jvp(primals, tangents):
        (image, grid), (t_image, t_grid) = primals, tangents
        _, h, w, _ = image.shape
        row, col, ok, fx, fy, finite, x, y = _layout(grid, h, w)
        v = primal_taps(image, row, col)
        fx1, fy1, ok1 = fx[..., None], fy[..., None], ok[..., None]
        top = v[..., 0, 0, :] + fx1 * (v[..., 0, 1, :] - v[..., 0, 0, :])
        bottom = v[..., 1, 0, :] + fx1 * (v[..., 1, 1, :] - v[..., 1, 0, :])
        out = ok1 * (top + fy1 * (bottom - top))
        d_ix = ok1 * ((1 - fy1) * (v[..., 0, 1, :] - v[..., 0, 0, :]) + fy1 * (v[..., 1, 1, :] - v[..., 1, 0, :]))
        d_iy = ok1 * ((1 - fx1) * (v[..., 1, 0, :] - v[..., 0, 0, :]) + fx1 * (v[..., 1, 1, :] - v[..., 0, 1, :]))
        t_x, t_y = jnp.where(finite, t_grid[..., 0], 0.0), jnp.where(finite, t_grid[..., 1], 0.0)
        _, (t_ix, t_iy) = jax.jvp(lambda a, b: _pixel(a, b, h, w), (x, y), (t_x, t_y))
        weights = _weights(fx, fy, ok).reshape(*fx.shape, 2, 2, 1)
        t_v = tangent_taps(t_image, row, col)
        t_out = (jnp.sum(weights * t_v, axis=(-3, -2)) + _bilinear._channel_outer(d_ix, t_ix)
                 + _bilinear._channel_outer(d_iy, t_iy))
        return out, t_out

    return lambda image, theta: sample(image, stn_jax.affine_grid(theta, image.shape[1:3]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--problems", default="256x60x60x1,32x224x224x3")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [header(args.reps, "median ms")]
    for spec in args.problems.split(","):
        image, theta, ct = problem(spec)

        shipped_image = jax.jit(lambda t, c: jax.grad(lambda im: jnp.vdot(unblocked_warp(im, t), c))(image))
        image_only = {"shipped": shipped_image, "cells-global": jax.jit(image_grad_cells_global),
                      "cells-vmapped": jax.jit(image_grad_cells_vmapped)}
        ref = shipped_image(theta, ct)
        errs = {k: float(jnp.max(jnp.abs(f(theta, ct) - ref))) for k, f in image_only.items()}
        ms = {k: m for k, (m, _) in interleaved_ms(image_only, (theta, ct), args.reps).items()}
        lines.append(f"{spec} image-only: " + ", ".join(f"{k} {ms[k]:.2f} ms (err {errs[k]:.1e})" for k in ms))

        def joint(warp_fn):
            return jax.jit(jax.grad(lambda im, t, c: jnp.vdot(warp_fn(im, t), c), argnums=(0, 1)))
        joint_fns = {"shipped": joint(unblocked_warp)}
        joint_fns.update({s: joint(make_sampler(s)) for s in STYLES})
        ref = joint_fns["shipped"](image, theta, ct)
        errs = {k: max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(f(image, theta, ct), ref))
                for k, f in joint_fns.items()}
        ms = {k: m for k, (m, _) in interleaved_ms(joint_fns, (image, theta, ct), args.reps).items()}
        lines.append(f"{spec} joint fwd+bwd: " + ", ".join(f"{k} {ms[k]:.2f} ms (err {errs[k]:.1e})" for k in ms))
        print(lines[-2], lines[-1], sep="\n", flush=True)
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
