"""Bandwidth floor of the sampler problems: minimum bytes moved / measured copy bandwidth.

Forward bilinear sampling must at least read the image and write the output (4 bytes per
float32 value); a materialised grid adds 8 bytes per output pixel. Forward+backward must in
addition read the output cotangent, read the image again (for the grid gradient; it may
still be in cache for small problems) and write the image gradient. The copy bandwidth is
measured here with a 64 MiB ``numpy.copyto`` (best of 20; median also recorded).

Usage: python -m experiments.benchmarks.bandwidth_floor --json experiments/results/MACHINE/bandwidth_floor.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import time

import numpy as np

PROBLEMS = {"256x28x28x1": (256, 28, 28, 1), "256x60x60x1": (256, 60, 60, 1),
            "32x224x224x3": (32, 224, 224, 3)}


def copy_bandwidth(nbytes: int = 64 * 2**20, reps: int = 20) -> tuple[float, float]:
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        np.copyto(b, a)
        times.append(time.perf_counter() - t0)
    return 2 * nbytes / min(times), 2 * nbytes / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    best, median = copy_bandwidth()
    rows = {}
    for name, (n, h, w, c) in PROBLEMS.items():
        img = n * h * w * c * 4
        fwd = 2 * img                       # read image, write output (warp: grid never stored)
        fwd_grid = fwd + n * h * w * 8      # plus a materialised (N, H, W, 2) grid
        fwdbwd = fwd + 3 * img              # + read cotangent, re-read image, write image grad
        rows[name] = {"bytes_fwd": fwd, "bytes_fwd_with_grid": fwd_grid, "bytes_fwd_bwd": fwdbwd,
                      "floor_fwd_ms": fwd / best * 1e3, "floor_fwd_with_grid_ms": fwd_grid / best * 1e3,
                      "floor_fwd_bwd_ms": fwdbwd / best * 1e3}
        print(f"{name}: fwd >= {fwd / 1e6:.1f} MB -> {fwd / best * 1e3:.2f} ms "
              f"(with grid {fwd_grid / best * 1e3:.2f} ms); fwd+bwd >= {fwdbwd / 1e6:.1f} MB -> "
              f"{fwdbwd / best * 1e3:.2f} ms")
    out = {"date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "cores": os.cpu_count(), "loadavg": os.getloadavg(),
           "copy_bandwidth_GBps_best": best / 1e9, "copy_bandwidth_GBps_median": median / 1e9,
           "problems": rows}
    print(f"copy bandwidth: best {best / 1e9:.1f} GB/s, median {median / 1e9:.1f} GB/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
