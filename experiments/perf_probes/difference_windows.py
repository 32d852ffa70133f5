"""Probe (session 4): grid-gradient differences from two 2-tap gathers vs from the 2x2 window.

``stn_jax._bilinear`` computes ``d out / d(ix, iy)`` for C > 1 from dense difference images
read by two 2-tap window gathers (``_difference_windows``), and for C = 1 from the 2x2 window.
This probe builds two copies of the module, one reading the window for every C (the session-3
code path) and one reading the difference windows for every C, and times both, unblocked, interleaved: forward+backward w.r.t. image and theta, and
the theta-only gradient (the usual training case). Max relative differences are printed first.

Usage: .venv/bin/python experiments/perf_probes/difference_windows.py [--reps 10] [--out FILE]
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import types

import jax
import jax.numpy as jnp

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
import stn_jax  # noqa: E402
from stn_jax import _bilinear  # noqa: E402
from _harness import header, interleaved_ms, problem, write_lines  # noqa: E402


def module_with_switch(value: str) -> types.ModuleType:
    """A copy of stn_jax._bilinear whose window-vs-differences switch is replaced by ``value``."""
    source = inspect.getsource(_bilinear)
    switch = "if image.shape[-1] == 1:"
    assert source.count(switch) == 1
    module = types.ModuleType(f"bilinear_switch_{value}")
    exec(compile(source.replace(switch, f"if {value}:"), module.__name__, "exec"), module.__dict__)
    return module


def warp_with(module):
    def warp(image, theta):
        grid = stn_jax.affine_grid(theta, image.shape[1:3])
        return jax.vmap(lambda i, g: module.sample_one(i, g, padding_mode="zeros", align_corners=False,
                                                       compute_dtype=jnp.float32))(image, grid)
    return warp


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--problems", default="256x60x60x1,256x60x60x3,32x224x224x3")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    variants = {"window": warp_with(module_with_switch("True")),
                "differences": warp_with(module_with_switch("False"))}
    lines = [header(args.reps, "ms median / min")]
    for spec in args.problems.split(","):
        image, theta, ct = problem(spec)
        fns = {}
        for argnums, what in (((0, 1), "fwd+bwd"), (1, "theta-grad")):
            for name, warp in variants.items():
                fns[f"{what} {name}"] = jax.jit(jax.grad(lambda im, t, c, w=warp: jnp.vdot(w(im, t), c),
                                                         argnums=argnums))
        for what in ("fwd+bwd", "theta-grad"):
            a, b = (jax.tree.leaves(fns[f"{what} {n}"](image, theta, ct)) for n in variants)
            rel = max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(x))) for x, y in zip(a, b))
            lines.append(f"{spec} {what}: max relative difference {rel:.1e}")
        ms = interleaved_ms(fns, (image, theta, ct), args.reps)
        lines.append(f"{spec}: " + ", ".join(f"{k} {m:.1f} / {lo:.1f}" for k, (m, lo) in ms.items()))
        print(*lines[-3:], sep="\n", flush=True)
    write_lines(args.out, lines)


if __name__ == "__main__":
    main()
