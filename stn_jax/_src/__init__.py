"""Private implementation of the stn_jax sampler core (not a public API; may change at any time).

One concept per module. Each module imports only the modules listed before it:

* :mod:`~stn_jax._src.coordinates`: normalised <-> pixel coordinates, padding rules, the 1-D
  taps of every interpolation mode, the compute dtype, size checks, identity coordinates;
* :mod:`~stn_jax._src.generic`: the per-tap reference sampler (every mode, 2-D and 3-D);
* :mod:`~stn_jax._src.bilinear`: the 2-D bilinear window-gather path with a hand-written JVP;
* :mod:`~stn_jax._src.blocked`: the cache-blocked derivative of batched 2-D bilinear calls;
* :mod:`~stn_jax._src.dispatch`: the one place that decides which implementation runs, and
  the contextvars-safe expert override :func:`~stn_jax._src.dispatch.sampler_implementation`;
* :mod:`~stn_jax._src.affine_grid`: the affine grid with a contraction-shaped derivative;
* :mod:`~stn_jax._src.projective`: the projective (homography) grid;
* :mod:`~stn_jax._src.tps`: the thin-plate-spline basis and grid;
* :mod:`~stn_jax._src.separable`: axis-aligned warps as two matrix products.

The public modules (:mod:`stn_jax.sampling`, :mod:`stn_jax.grids`, :mod:`stn_jax.warping`,
:mod:`stn_jax.separable`) validate their inputs and call these.
"""
