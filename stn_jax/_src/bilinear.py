"""Fast path for 2-D bilinear sampling: one 2x2xC window gather, a hand-written JVP.

Same semantics as the generic per-tap sampler (:mod:`stn_jax._src.generic`; PyTorch's
``grid_sample``, every padding mode, ``align_corners``, non-finite grid values read as
outside, the same dtype policy and gradients, including exactly at integer positions),
but organised for speed:

* the image is zero-padded by one pixel on each side, so the four taps of an output pixel
  are one in-bounds (2, 2, C) window of the padded image, read by **one** gather with
  int32 indices; taps that fall outside the image read the zero border, and only output
  points whose window lies entirely outside are masked (one mask per point, not per tap);
* the derivative is a ``jax.custom_jvp`` rule: the tangent is the same weighted window
  gather of the image tangent plus ``d out / d(ix, iy)`` (from the four values already
  gathered) times the coordinate tangent. Reverse mode transposes it into **one** windowed
  scatter-add for the image gradient and a per-point product for the grid gradient,
  instead of XLA's four scatter-adds and a chain of masked selects. Because it is a JVP
  rule (not a custom VJP), forward mode, ``jax.hessian`` and higher-order derivatives
  work and agree with the generic path; ``vmap``, ``jit`` and ``jax.checkpoint`` work as
  for any JAX function.

An undifferentiated call evaluates the generic per-tap forward (it fuses into one loop on
XLA:CPU and measured as fast); the window gather is used by the derivative rule, where the
four gathered values also give the grid gradient.

Padding ``border``/``reflection`` and ``align_corners`` reuse the shared coordinate code
(:func:`stn_jax._src.coordinates.unnormalize`, :func:`stn_jax._src.coordinates.apply_padding`),
whose derivative (zero where clamped, sign flip where reflected) enters through ``jax.jvp``.
When this path runs is decided by :mod:`stn_jax._src.dispatch`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from stn_jax._src import coordinates, generic

# ----------------------------------------------------------------------------- pieces


def _coords(grid: jax.Array, height: int, width: int, padding_mode: str,
            align_corners: bool) -> tuple[jax.Array, jax.Array]:
    """grid (Ho, Wo, 2) -> padded pixel coordinates (ix, iy), each (Ho, Wo).

    Non-finite grid points are replaced by 0 here (their tangent is 0) and masked later.
    """
    x, y = grid[..., 0], grid[..., 1]
    finite = jnp.isfinite(x) & jnp.isfinite(y)
    x = jnp.where(finite, x, 0.0)
    y = jnp.where(finite, y, 0.0)
    ix = coordinates.apply_padding(coordinates.unnormalize(x, width, align_corners), width,
                                   padding_mode, align_corners)
    iy = coordinates.apply_padding(coordinates.unnormalize(y, height, align_corners), height,
                                   padding_mode, align_corners)
    return ix, iy


_WINDOW_DNUMS = lax.GatherDimensionNumbers(offset_dims=(2, 3), collapsed_slice_dims=(),
                                           start_index_map=(0, 1))


def _window_gather(padded: jax.Array, starts: jax.Array) -> jax.Array:
    """padded (H+2, W+2, C), starts (Ho, Wo, 2) int32 (row, col) -> (Ho, Wo, 2, 2, C).

    The image is viewed as (H+2, (W+2) * C) so that a window is 2 rows of 2*C contiguous
    values; its transpose (reverse mode) is then a scatter-add of (2, 2C) windows, which
    XLA:CPU runs ~2x faster than the equivalent (2, 2, C)-window scatter.
    """
    rows, cols, channels = padded.shape
    flat = padded.reshape(rows, cols * channels)
    starts = starts * jnp.array([1, channels], jnp.int32)
    v = lax.gather(flat, starts, _WINDOW_DNUMS, slice_sizes=(2, 2 * channels),
                   mode=lax.GatherScatterMode.PROMISE_IN_BOUNDS)
    return v.reshape(*starts.shape[:-1], 2, 2, channels)


def _difference_windows(padded: jax.Array, starts: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The taps' one-sided differences: padded (H+2, W+2, C), starts (Ho, Wo, 2) -> two (Ho, Wo, 2, C).

    ``dx[..., a, :] = v[a, 1] - v[a, 0]`` (rows a = 0, 1 of the window) and
    ``dy[..., b, :] = v[1, b] - v[0, b]`` (columns b = 0, 1), read from the dense difference
    images of the padded image by two 2-tap window gathers (bitwise the same differences as
    from the 2x2 window). Each gather has a single consumer, so XLA fuses it into the
    grid-gradient loop instead of storing the (Ho, Wo, 2, 2, C) window that the x and y
    derivatives would otherwise share (32x224x224x3: theta gradient ~25% faster). With one
    channel XLA already keeps the window gather inside that loop and the two extra difference
    images do not pay, so that case reads the window (``docs/design/performance.md``).
    """
    rows, cols, channels = padded.shape
    across = (padded[:, 1:] - padded[:, :-1]).reshape(rows, (cols - 1) * channels)
    down = (padded[1:] - padded[:-1]).reshape(rows - 1, cols * channels)
    scaled = starts * jnp.array([1, channels], jnp.int32)
    mode = lax.GatherScatterMode.PROMISE_IN_BOUNDS
    dx = lax.gather(across, scaled, _WINDOW_DNUMS, slice_sizes=(2, channels), mode=mode)
    dy = lax.gather(down, scaled, _WINDOW_DNUMS, slice_sizes=(1, 2 * channels), mode=mode)
    return dx, dy.reshape(*starts.shape[:-1], 2, channels)


def _pad(image: jax.Array) -> jax.Array:
    return jnp.pad(image, ((1, 1), (1, 1), (0, 0)))


def _layout(grid: jax.Array, image_shape: tuple[int, ...], padding_mode: str, align_corners: bool,
            compute_dtype: jnp.dtype):
    """Window starts, in-range mask and fractional offsets of every output point."""
    height, width, _ = image_shape
    grid = grid.astype(compute_dtype)
    finite = jnp.isfinite(grid[..., 0]) & jnp.isfinite(grid[..., 1])  # no reduce op
    ix, iy = _coords(grid, height, width, padding_mode, align_corners)
    x0 = lax.stop_gradient(jnp.floor(ix))
    y0 = lax.stop_gradient(jnp.floor(iy))
    fx = ix - x0
    fy = iy - y0
    # The window's top-left tap is (y0, x0); at least one tap is inside iff
    # -1 <= x0 <= W-1 and -1 <= y0 <= H-1. Otherwise every tap is outside: mask the point.
    ok = finite & (x0 >= -1) & (x0 <= width - 1) & (y0 >= -1) & (y0 <= height - 1)
    # Keep masked points finite (a huge coordinate gives inf - inf = NaN) so that neither
    # 0 * NaN in the blend nor in the transposed (reverse-mode) products can leak NaN.
    fx = jnp.where(ok, fx, 0.0)
    fy = jnp.where(ok, fy, 0.0)
    col = (jnp.clip(x0, -1, width - 1) + 1).astype(jnp.int32)
    row = (jnp.clip(y0, -1, height - 1) + 1).astype(jnp.int32)
    starts = jnp.stack([row, col], axis=-1)
    return starts, ok.astype(compute_dtype), fx, fy


def _combine(v: jax.Array, fx: jax.Array, fy: jax.Array, ok: jax.Array) -> jax.Array:
    """v (Ho, Wo, 2, 2, C) window values -> bilinear blend (Ho, Wo, C), masked by ok."""
    fx, fy, ok = fx[..., None], fy[..., None], ok[..., None]
    top = v[:, :, 0, 0] + fx * (v[:, :, 0, 1] - v[:, :, 0, 0])
    bottom = v[:, :, 1, 0] + fx * (v[:, :, 1, 1] - v[:, :, 1, 0])
    return ok * (top + fy * (bottom - top))


# ----------------------------------------------------------------------------- custom JVP core


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _sample(image: jax.Array, grid: jax.Array, padding_mode: str, align_corners: bool,
            compute_dtype: jnp.dtype) -> jax.Array:
    # Undifferentiated calls use the generic per-tap forward: on XLA:CPU it fuses into one
    # loop and measured as fast or faster than the window gather (up to ~1.3x at 224x224x3).
    return generic.sample_one(image, grid, mode="bilinear", padding_mode=padding_mode,
                              align_corners=align_corners, compute_dtype=compute_dtype)


@_sample.defjvp
def _sample_jvp(padding_mode, align_corners, compute_dtype, primals, tangents):
    image, grid = primals
    t_image, t_grid = tangents
    height, width, _ = image.shape
    starts, ok, fx, fy = _layout(grid, image.shape, padding_mode, align_corners, compute_dtype)
    padded = _pad(image.astype(compute_dtype))
    v = _window_gather(padded, starts)
    out = _combine(v, fx, fy, ok)

    # d out / d ix and d out / d iy from the taps' differences (PyTorch's formulas, which
    # are the one-sided differences also at integer positions). One channel: from the window
    # (XLA keeps that gather inside the grid-gradient loop); more: see _difference_windows.
    if image.shape[-1] == 1:
        dx = v[:, :, :, 1] - v[:, :, :, 0]
        dy = v[:, :, 1] - v[:, :, 0]
    else:
        dx, dy = _difference_windows(padded, starts)
    fx_, fy_, ok_ = fx[..., None], fy[..., None], ok[..., None]
    d_ix = ok_ * ((1 - fy_) * dx[:, :, 0] + fy_ * dx[:, :, 1])
    d_iy = ok_ * ((1 - fx_) * dy[:, :, 0] + fx_ * dy[:, :, 1])
    coords = functools.partial(_coords, height=height, width=width, padding_mode=padding_mode,
                               align_corners=align_corners)
    g = grid.astype(compute_dtype)
    _, (t_ix, t_iy) = jax.jvp(coords, (g,), (t_grid.astype(compute_dtype),))

    # The image tangent enters as sum_k w_k * window_k with the four weights stacked, so that
    # its transpose is a single broadcast multiply feeding one windowed scatter-add (the lerp
    # form of _combine transposes into a chain of pads and negations that XLA recomputes
    # per window element: ~3x slower on CPU).
    weights = jnp.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=-1)
    weights = (weights * ok[..., None]).reshape(*weights.shape[:-1], 2, 2, 1)
    t_v = _window_gather(_pad(t_image), starts).astype(compute_dtype)
    t_out = jnp.sum(weights * t_v, axis=(-3, -2)) + _channel_outer(d_ix, t_ix) + _channel_outer(d_iy, t_iy)
    return out, t_out


_UNROLL_CHANNELS = 8


def _channel_outer(d: jax.Array, t: jax.Array) -> jax.Array:
    """d (Ho, Wo, C) * t (Ho, Wo)[..., None], written so that its transpose has no reduce op.

    The transpose of ``d * t[..., None]`` is ``sum(d * ct, axis=-1)``; XLA:CPU (0.10) runs that
    channel reduction as a YNNPACK reduce fusion ~5x slower than the elementwise equivalent.
    For few channels, build the product channel by channel: the transpose is then slices and
    adds. (Many channels: the plain broadcast.)
    """
    t = t.astype(d.dtype)
    channels = d.shape[-1]
    if channels == 1 or channels > _UNROLL_CHANNELS:
        return d * t[..., None]
    return jnp.concatenate([d[..., c:c + 1] * t[..., None] for c in range(channels)], axis=-1)


def sample_one(image: jax.Array, grid: jax.Array, *, padding_mode: str, align_corners: bool,
               compute_dtype: jnp.dtype) -> jax.Array:
    """One example, 2-D bilinear: image (H, W, C), grid (Ho, Wo, 2) -> (Ho, Wo, C) in compute_dtype."""
    return _sample(image, grid, padding_mode, bool(align_corners), jnp.dtype(compute_dtype))
