"""Probe (session 4): cache-blocked derivative of the batched 2-D bilinear sampler.

Candidate: a ``custom_jvp`` over the whole batch whose primal is the shipped vmapped sampler
and whose tangent (when the image tangent is non-zero; symbolic zeros are detected) is
``lax.map`` over ``steps`` contiguous chunks of the batch with ``jax.checkpoint`` on the body,
so that each step's per-point intermediates (indices, update array, gathered window) stay in
cache. Gradients are bit-identical to the shipped ``stn_jax.warp`` (checked before timing).

Prints, per problem, median and minimum ms of forward+backward (w.r.t. image and theta) for
each number of steps (1 = the shipped path) over interleaved reps; and the theta-only
gradient (the usual training case) of the shipped path and of the blocked rule applied
unconditionally (why the blocked rule must be skipped when the image tangent is zero).

Usage: .venv/bin/python experiments/perf_probes/blocked_backward.py [--reps 20] [--out FILE]
"""
from __future__ import annotations

import argparse
import functools
import os
import sys

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
import stn_jax  # noqa: E402
from stn_jax import _bilinear  # noqa: E402
from _harness import header, interleaved_ms, problem, write_lines  # noqa: E402


def unblocked_warp(image, theta):
    """The shipped warp with the unblocked derivative (``"fast"``: what ``auto`` was before session 4's blocking)."""
    with _bilinear.sampler_implementation("fast"):
        return stn_jax.warp(image, theta)


def _vmapped():
    return jax.vmap(functools.partial(_bilinear.sample_one, padding_mode="zeros", align_corners=False,
                                      compute_dtype=jnp.float32))


def make_blocked(steps: int, skip_when_image_constant: bool = True):
    one = _vmapped()

    @jax.custom_jvp
    def sample(image, grid):
        return one(image, grid)

    def rule(primals, tangents):
        image, grid = primals
        live = [not isinstance(t, SymbolicZero) for t in tangents]
        if skip_when_image_constant and not live[0]:
            return jax.jvp(lambda g: one(image, g), (grid,), (tangents[1],))
        split = lambda x: x.reshape(steps, x.shape[0] // steps, *x.shape[1:])  # noqa: E731

        def body(xs):
            im, g, tans = xs
            if all(live):
                return jax.jvp(one, (im, g), tans)[1]
            if live[0]:
                return jax.jvp(lambda a: one(a, g), (im,), tans)[1]
            return jax.jvp(lambda b: one(im, b), (g,), tans)[1]

        tans = tuple(split(t) for t, alive in zip(tangents, live) if alive)
        t_out = lax.map(jax.checkpoint(body), (split(image), split(grid), tans))
        out = one(image, grid)
        return out, t_out.reshape(out.shape)

    sample.defjvp(rule, symbolic_zeros=True)
    return lambda image, theta: sample(image, stn_jax.affine_grid(theta, image.shape[1:3]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    lines = [header(args.reps, "ms median / min; steps 1 = shipped stn_jax.warp, unblocked")]
    problems = (("256x28x28x1", (1, 2, 4, 8)), ("256x60x60x1", (1, 4, 8, 16, 32, 64)),
                ("32x224x224x3", (1, 4, 8, 16, 32)))
    for spec, steps_list in problems:
        image, theta, ct = problem(spec)

        def grad_of(warp_fn, argnums=(0, 1)):
            return jax.jit(jax.grad(lambda im, t, c: jnp.vdot(warp_fn(im, t), c), argnums=argnums))
        fns = {s: grad_of(unblocked_warp if s == 1 else make_blocked(s)) for s in steps_list}
        ref = fns[1](image, theta, ct)
        for s, f in fns.items():
            diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(f(image, theta, ct), ref))
            assert diff == 0.0, (spec, s, diff)
        ms = interleaved_ms(fns, (image, theta, ct), args.reps)
        lines.append(f"{spec} fwd+bwd: " + ", ".join(f"steps {s} {m:.1f} / {lo:.1f}" for s, (m, lo) in ms.items()))
        s = steps_list[2]
        theta_only = {"shipped": grad_of(unblocked_warp, 1), f"blocked{s}-always": grad_of(make_blocked(s, False), 1)}
        ms = interleaved_ms(theta_only, (image, theta, ct), args.reps)
        lines.append(f"{spec} theta-only grad: " + ", ".join(f"{k} {m:.1f} / {lo:.1f}" for k, (m, lo) in ms.items()))
        print(lines[-2], lines[-1], sep="\n", flush=True)
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
