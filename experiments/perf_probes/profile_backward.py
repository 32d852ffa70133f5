"""Per-fusion profile of the shipped warp's forward+backward on XLA:CPU (jax.profiler + perfetto JSON).

Prints the most expensive thunks per iteration of ``jax.grad(vdot(warp(image, theta), ct))``
w.r.t. image and theta for one problem of ``bench_sampler.py``. Used for BENCHMARKS.md ("Why the
general backward stays above 2x").

Usage: .venv/bin/python experiments/perf_probes/profile_backward.py 256x60x60x1
"""
import collections
import glob
import gzip
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(HERE, ".."))
import stn_jax  # noqa: E402
from bench_sampler import random_theta  # noqa: E402

shape = tuple(int(s) for s in (sys.argv[1] if len(sys.argv) > 1 else "256x60x60x1").split("x"))
rng = np.random.default_rng(0)
image = jnp.asarray(rng.random(shape, dtype=np.float32))
theta = jnp.asarray(random_theta(shape[0], rng))
ct = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
f = jax.jit(jax.grad(lambda im, t: jnp.vdot(stn_jax.warp(im, t), ct), argnums=(0, 1)))
for _ in range(3):
    jax.block_until_ready(f(image, theta))
iters = 5
with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d, create_perfetto_trace=True):
        for _ in range(iters):
            jax.block_until_ready(f(image, theta))
    events = json.load(gzip.open(glob.glob(d + "/**/*.trace.json.gz", recursive=True)[0]))
events = events["traceEvents"] if isinstance(events, dict) else events
total = collections.defaultdict(float)
for e in events:
    if e.get("ph") == "X":
        total[e["name"]] += e.get("dur", 0) / 1e3
print(f"{sys.argv[1:] or ['256x60x60x1']} load {os.getloadavg()[0]:.1f}")
for name, ms in sorted(total.items(), key=lambda kv: -kv[1])[:16]:
    print(f"{ms / iters:8.2f} ms/iter  {name[:90]}")
