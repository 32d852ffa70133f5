"""Shared pieces of the session-4 probes: the benchmark problem and interleaved timing."""
from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from bench_sampler import random_theta


def problem(spec: str):
    """"NxHxWxC" -> (image, theta, cotangent): bench_sampler's random affine problem, seed 0."""
    shape = tuple(int(s) for s in spec.split("x"))
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.random(shape, dtype=np.float32))
    theta = jnp.asarray(random_theta(shape[0], rng))
    cotangent = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
    return image, theta, cotangent


def interleaved_ms(fns: dict, args: tuple, reps: int) -> dict[str, tuple[float, float]]:
    """Median and minimum ms per candidate; candidates interleaved rep by rep, each timed call
    preceded by a 20 ms pause and one untimed call (as in ``bench_sampler.py``)."""
    times = {k: [] for k in fns}
    for f in fns.values():
        jax.block_until_ready(f(*args))
    for _ in range(reps):
        for k, f in fns.items():
            time.sleep(0.02)
            jax.block_until_ready(f(*args))
            t0 = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[k].append(time.perf_counter() - t0)
    return {k: (float(np.median(v)) * 1e3, float(np.min(v)) * 1e3) for k, v in times.items()}


def header(reps: int, what: str) -> str:
    return (f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}, {platform.machine()} {os.cpu_count()} cores, "
            f"jax {jax.__version__}, load {os.getloadavg()[0]:.2f}; {what} ({reps} interleaved reps)")


def write_lines(path: str | None, lines: list[str]) -> None:
    """Write the probe's result lines to ``path`` (nothing when None)."""
    if path:
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
