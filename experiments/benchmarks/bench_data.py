"""Data benchmark: time to generate a 60k-image distorted training set on the default device.

For each dataset, one full pass over 60,000 training examples is generated on the device with
``DistortedDataset.sample_train`` under ``jax.jit`` (training digits passed as jit arguments),
``--batch`` examples per call, and the result is blocked on. Compilation is timed separately
(first call); the reported generation time is the median of ``--reps`` full passes.
Digits come from ``--source`` (default: auto; the 60k examples are drawn from whatever
training digits it provides, so the sample source works too).

Usage:
  python -m experiments.benchmarks.bench_data --datasets rts e tc --json experiments/results/MACHINE/bench_data.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from stn_jax import data


def bench(name: str, mnist: data.MNIST, *, total: int, batch: int, reps: int) -> dict:
    ds = data.make_dataset(name, mnist)
    arrays = ds.train_arrays
    fn = jax.jit(ds.sample_train, static_argnums=2)
    t0 = time.perf_counter()
    jax.block_until_ready(fn(arrays, jax.random.PRNGKey(0), batch))
    compile_s = time.perf_counter() - t0
    steps = -(-total // batch)
    times = []
    for rep in range(reps):
        base = jax.random.PRNGKey(rep + 1)
        t0 = time.perf_counter()
        out = [fn(arrays, jax.random.fold_in(base, i), batch) for i in range(steps)]
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        del out
    med = statistics.median(times)
    return {"dataset": name, "examples": steps * batch, "batch": batch, "shape": list(ds.input_shape),
            "compile_s": round(compile_s, 3), "generate_s_median": round(med, 3),
            "generate_s_all": [round(t, 3) for t in times], "images_per_s": round(steps * batch / med)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["rts", "e", "tc"], choices=data.DATASETS)
    parser.add_argument("--total", type=int, default=60000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--source", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    mnist = data.load_mnist(args.source, data_dir=args.data_dir)
    results = []
    for name in args.datasets:
        r = bench(name, mnist, total=args.total, batch=args.batch, reps=args.reps)
        print(f"{name:9s} {r['examples']} x {tuple(r['shape'])}: {r['generate_s_median']:.2f} s "
              f"({r['images_per_s']}/s), compile {r['compile_s']:.1f} s", flush=True)
        results.append(r)
    meta = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores",
            "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
            "jax": jax.__version__, "numpy": np.__version__, "mnist_source": mnist.source,
            "reps": args.reps, "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "loadavg_1m_at_end": round(os.getloadavg()[0], 2),
            "note": "shared machine: other jobs ran concurrently; times are wall-clock"}
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
        print("wrote", args.json)


if __name__ == "__main__":
    main()
