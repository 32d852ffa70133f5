"""Bulk canonicalisation on Ray Data against the local engine, on the RTS test split.

The RTS test split (10,000 distorted MNIST digits, 42x42x1, the fixed seed of
``experiments.figures.canonicalize_figure export``) is written as an ``.npz`` and canonicalised by
an RTS ST-CNN (affine) training run by the local engine (``run_canonicalize``, after a warm-up
batch so compilation is excluded) and, per worker count, by the Ray engine
(``run_canonicalize_ray``) on a local Ray cluster with one CPU per worker. Reported:

- ``ray_init_s``: starting the local cluster (``ray.init``); ``first_ray_job_one_shard_s``: the
  first job (one shard), which also starts Ray Data's helper actors.
- per Ray job (median of ``--repeats``): wall time (actor start-up, loading the run and
  compiling included), the fixed cost of a job measured as a one-shard job with the same
  workers, and the steady rate ``(rows - rows_per_shard) / (wall - fixed)``.
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

from experiments.benchmarks import record as record_lib


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


def _local(workdir: str, npz: str, out: str, batch_size: int, repeats: int) -> dict:
    from stn_jax.canonicalize import Canonicalizer, NpzReader, canonicalize_batches, run_canonicalize

    t0 = time.perf_counter()
    canon = Canonicalizer.from_workdir(workdir)
    next(iter(canonicalize_batches(canon, NpzReader(npz), batch_size=batch_size)))   # compile
    setup = time.perf_counter() - t0
    walls = []
    for i in range(repeats):
        summary = run_canonicalize(canon, npz, f"{out}-{i}", batch_size=batch_size, progress=False)
        walls.append(summary["seconds"])
    wall = float(np.median(walls))
    return {"engine": "local", "load_and_compile_s": setup, "wall_s": wall, "wall_s_all": walls,
            "images_per_s": summary["rows_in"] / wall, "rows_in": summary["rows_in"]}


def _ray(workdir: str, npz: str, out: str, *, batch_size: int, rows_per_shard: int, workers: int,
         repeats: int, one_shard: str) -> dict:
    from stn_jax.canonicalize.ray_engine import run_canonicalize_ray

    def job(src, dst):
        return run_canonicalize_ray(workdir, src, dst, batch_size=batch_size, rows_per_shard=rows_per_shard,
                                    num_workers=workers, progress=False)

    fixed = [job(one_shard, f"{out}-one-{i}")["seconds"] for i in range(repeats)]
    walls = [job(npz, f"{out}-{i}")["seconds"] for i in range(repeats)]
    wall, fix = float(np.median(walls)), float(np.median(fixed))
    n = int(np.load(npz)["images"].shape[0])
    return {"engine": "ray", "workers": workers, "cpus_per_worker": 1, "rows_per_shard": rows_per_shard,
            "shards": -(-n // rows_per_shard), "wall_s": wall, "wall_s_all": walls, "images_per_s": n / wall,
            "one_shard_job_s": fix, "one_shard_job_s_all": fixed,
            "steady_images_per_s": (n - rows_per_shard) / (wall - fix) if wall > fix else None,
            "rows_in": n}


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
    p.add_argument("--repeats", type=int, default=3, help="runs per measurement (median reported)")
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
        t0 = time.perf_counter()
        ray.init(num_cpus=args.num_cpus, include_dashboard=False, log_to_driver=False)
        ray_init_s = time.perf_counter() - t0
        one_shard = os.path.join(tmp, "one_shard.npz")
        np.savez(one_shard, images=np.load(npz)["images"][:args.rows_per_shard])
        from stn_jax.canonicalize.ray_engine import run_canonicalize_ray

        t0 = time.perf_counter()             # Ray Data's first execution starts its helper actors
        run_canonicalize_ray(workdir, one_shard, os.path.join(tmp, "warm-up"), batch_size=args.batch_size,
                             rows_per_shard=args.rows_per_shard, progress=False)
        first_job_s = time.perf_counter() - t0
        local = _local(workdir, npz, os.path.join(tmp, "local"), args.batch_size, args.repeats)
        print(json.dumps(local), flush=True)
        want = read_output(os.path.join(tmp, "local-0"))
        ray_runs = []
        for w in args.workers:
            out = os.path.join(tmp, f"ray-{w}")
            r = _ray(workdir, npz, out, batch_size=args.batch_size, rows_per_shard=args.rows_per_shard,
                     workers=w, repeats=args.repeats, one_shard=one_shard)
            r["same_rows_as_local"] = bool(read_output(f"{out}-0").equals(want))
            print(json.dumps(r), flush=True)
            ray_runs.append(r)
        ray_version = ray.__version__
        ray.shutdown()
    record = {
        "script": "experiments/benchmarks/bench_canonicalize_ray.py", "argv": sys.argv[1:] if argv is None else argv,
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": record_lib.machine(load_before),
        "versions": {"python": platform.python_version(), "jax": jax.__version__, "flax": flax.__version__,
                     "pyarrow": pyarrow.__version__, "ray": ray_version},
        "data": {"input": "RTS test split (42x42x1 float32 .npz)", "rows": n, "mnist_source": source},
        "model": ("the run given by --workdir" if args.workdir else
                  f"st-cnn affine, rts, trained {args.train_steps} Adam steps x 64 (weights do not change the cost)"),
        "batch_size": args.batch_size, "repeats": args.repeats, "ray_cluster_cpus": args.num_cpus,
        "ray_init_s": ray_init_s, "first_ray_job_one_shard_s": first_job_s,
        "local": local, "ray": ray_runs,
    }
    record_lib.write(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
