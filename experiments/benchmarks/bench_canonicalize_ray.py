"""Bulk canonicalisation on Ray Data against the local engine, on the RTS test split.

The RTS test split (10,000 distorted MNIST digits, 42x42x1, the fixed seed of
``experiments.figures.canonicalize_figure export``) is written as an ``.npz`` and canonicalised by
an RTS ST-CNN (affine) training run, once by the local engine (``run_canonicalize``, after a
warm-up batch so compilation is excluded) and once per worker count by the Ray engine
(``run_canonicalize_ray``) on a local Ray cluster with one CPU per worker. Reported:

- ``ray_init_s``: starting the local cluster (``ray.init``).
- per Ray job: wall time (actor start-up, loading the run and compiling included), the fixed cost
  of a job measured as a one-shard job, and the steady rate ``rows / (wall - fixed)``.
- that the Ray output equals the local output row for row (PNG bytes included).

Without ``--workdir`` a short run is trained first (throughput does not depend on the weights):

    python -m experiments.benchmarks.bench_canonicalize_ray \\
        --out experiments/results/MACHINE/bench_canonicalize_ray.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np


def _rts_test_split(data_dir: str | None, path: str, limit: int | None) -> tuple[int, str]:
    from stn_jax.data import load_mnist, make_dataset

    mnist = load_mnist("auto", data_dir=data_dir)
    images, labels = make_dataset("rts", mnist).test_set()
    n = len(images) if limit is None else limit
    np.savez(path, images=np.asarray(images[:n], np.float32), labels=np.asarray(labels[:n]))
    return n, mnist.source


def _train(workdir: str, data_dir: str | None, steps: int) -> None:
    cmd = [sys.executable, "-m", "stn_jax.cli", "train", "--dataset", "rts", "--model", "st-cnn",
           "--transform", "affine", "--steps", str(steps), "--batch-size", "64", "--optimizer", "adam",
           "--lr", "0.001", "--validation-size", "1000", "--eval-every", str(steps),
           "--checkpoint-every", str(steps), "--no-progress", "--workdir", workdir]
    cmd += ["--data-dir", data_dir] if data_dir else ["--data-source", "auto"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def _local(workdir: str, npz: str, out: str, batch_size: int) -> dict:
    from stn_jax.canonicalize import Canonicalizer, NpzReader, canonicalize_batches, run_canonicalize

    t0 = time.perf_counter()
    canon = Canonicalizer.from_workdir(workdir)
    next(iter(canonicalize_batches(canon, NpzReader(npz), batch_size=batch_size)))   # compile
    setup = time.perf_counter() - t0
    summary = run_canonicalize(canon, npz, out, batch_size=batch_size, progress=False)
    return {"engine": "local", "load_and_compile_s": setup, "wall_s": summary["seconds"],
            "images_per_s": summary["images_per_second"], "rows_in": summary["rows_in"]}


def _ray(workdir: str, npz: str, out: str, *, batch_size: int, rows_per_shard: int, workers: int,
         tmp: str) -> dict:
    from stn_jax.canonicalize.ray_engine import run_canonicalize_ray

    one = os.path.join(tmp, f"one-shard-{workers}.npz")
    np.savez(one, images=np.load(npz)["images"][:rows_per_shard])
    fixed = run_canonicalize_ray(workdir, one, out + "-one", batch_size=batch_size,
                                 rows_per_shard=rows_per_shard, num_workers=1, progress=False)["seconds"]
    s = run_canonicalize_ray(workdir, npz, out, batch_size=batch_size, rows_per_shard=rows_per_shard,
                             num_workers=workers, progress=False)
    return {"engine": "ray", "workers": workers, "cpus_per_worker": 1, "rows_per_shard": rows_per_shard,
            "shards": s["shards"], "wall_s": s["seconds"], "images_per_s": s["images_per_second"],
            "one_shard_job_s": fixed, "steady_images_per_s": s["rows_in"] / max(s["seconds"] - fixed, 1e-9),
            "rows_in": s["rows_in"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench_canonicalize_ray.json",
                   help="result JSON (commit it under experiments/results/<machine>/)")
    p.add_argument("--data-dir", default=os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist"))
    p.add_argument("--workdir", default=None, help="an RTS training run (default: train one briefly)")
    p.add_argument("--train-steps", type=int, default=50, help="steps of that brief run")
    p.add_argument("--limit", type=int, default=None, help="first N test images (default all 10,000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--rows-per-shard", type=int, default=1000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--num-cpus", type=int, default=os.cpu_count(), help="CPUs of the local Ray cluster")
    args = p.parse_args(argv)

    import flax
    import jax
    import pyarrow
    import ray

    from stn_jax.canonicalize import read_output

    data_dir = args.data_dir if os.path.isdir(args.data_dir) else None
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        npz = os.path.join(tmp, "rts_test.npz")
        n, source = _rts_test_split(data_dir, npz, args.limit)
        workdir = args.workdir
        if workdir is None:
            workdir = os.path.join(tmp, "rts_run")
            _train(workdir, data_dir, args.train_steps)
        local = _local(workdir, npz, os.path.join(tmp, "local"), args.batch_size)
        print(json.dumps(local), flush=True)
        t0 = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t0
        ray_runs = []
        want = read_output(os.path.join(tmp, "local"))
        for w in args.workers:
            out = os.path.join(tmp, f"ray-{w}")
            r = _ray(workdir, npz, out, batch_size=args.batch_size, rows_per_shard=args.rows_per_shard,
                     workers=w, tmp=tmp)
            r["same_rows_as_local"] = bool(read_output(out).equals(want))
            print(json.dumps(r), flush=True)
            ray_runs.append(r)
        ray_version = ray.__version__
        ray.shutdown()
    record = {
        "script": "experiments/benchmarks/bench_canonicalize_ray.py", "argv": sys.argv[1:] if argv is None else argv,
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(), "devices": [str(d) for d in jax.local_devices()]},
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                     "pyarrow": pyarrow.__version__, "ray": ray_version},
        "data": {"input": "RTS test split (42x42x1 float32 .npz)", "rows": n, "mnist_source": source},
        "model": ("the run given by --workdir" if args.workdir else
                  f"st-cnn affine, rts, trained {args.train_steps} Adam steps x 64 (weights do not change the cost)"),
        "batch_size": args.batch_size, "ray_cluster_cpus": args.num_cpus, "ray_init_s": ray_init_s,
        "local": local, "ray": ray_runs,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
