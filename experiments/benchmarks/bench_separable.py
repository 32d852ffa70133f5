"""Axis-aligned (attention: scale + translation) warps: the matrix-product path vs the gather path.

Times, in one process and interleaved rep by rep (``bench_sampler.time_interleaved``), the
forward and forward+backward (gradient w.r.t. the image, the scales and the translations of
``vdot(out, random cotangent)``) of

* ``axis_aligned_warp``: :mod:`stn_jax.separable`, two matrix products per example;
* ``warp[auto]``: :func:`stn_jax.warp` with the same ``theta = [[sx, 0, tx], [0, sy, ty]]``
  (the window-gather sampler, scatter-add backward);
* PyTorch ``affine_grid`` + ``grid_sample`` with that theta, at 1 and 2 threads (the ratio is
  against the faster).

Random attention parameters: scale 0.4-1.2 per axis, translation +-0.3; bilinear, zeros,
align_corners=False. The crossover of :func:`stn_jax.separable.prefer_separable` comes from
this script's output.

Usage:
  python -m experiments.benchmarks.bench_separable --reps 20 --json experiments/results/MACHINE/bench_separable.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys

import numpy as np

from experiments.benchmarks.bench_sampler import time_interleaved

PROBLEMS = ("256x28x28x1", "256x42x42x1", "256x60x60x1", "32x96x96x3", "32x224x224x3")


def build(shape, torch_threads):
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    import stn_jax
    from stn_jax import separable

    n, h, w, c = shape
    rng = np.random.default_rng(0)
    img = rng.random(shape, dtype=np.float32)
    scale = rng.uniform(0.4, 1.2, (n, 2)).astype(np.float32)
    shift = rng.uniform(-0.3, 0.3, (n, 2)).astype(np.float32)
    ct = rng.standard_normal(shape, dtype=np.float32)
    theta = np.zeros((n, 2, 3), np.float32)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, :, 2] = scale[:, 0], scale[:, 1], shift
    j_img, j_scale, j_shift, j_ct = (jnp.asarray(a) for a in (img, scale, shift, ct))

    def theta_of(s, t):
        z = jnp.zeros_like(s[:, 0])
        return jnp.stack([jnp.stack([s[:, 0], z, t[:, 0]], -1), jnp.stack([z, s[:, 1], t[:, 1]], -1)], 1)

    fns = {"axis_aligned_warp": lambda im, s, t: separable.axis_aligned_warp(im, s, t),
           "warp[auto]": lambda im, s, t: stn_jax.warp(im, theta_of(s, t))}
    cands = {}
    for name, fn in fns.items():
        fwd = jax.jit(fn)
        bwd = jax.jit(jax.grad(lambda im, s, t, fn=fn: jnp.vdot(fn(im, s, t), j_ct), argnums=(0, 1, 2)))
        cands[f"{name} fwd"] = lambda fwd=fwd: jax.block_until_ready(fwd(j_img, j_scale, j_shift))
        cands[f"{name} fwd+bwd"] = lambda bwd=bwd: jax.block_until_ready(bwd(j_img, j_scale, j_shift))
    # the two agree: values (the undifferentiated call is the gather sampler) and all three
    # gradients (the matrix products vs the scatter-add backward)
    for kind in ("fwd", "fwd+bwd"):
        ref = jax.tree_util.tree_leaves(cands[f"warp[auto] {kind}"]())
        got = jax.tree_util.tree_leaves(cands[f"axis_aligned_warp {kind}"]())
        for a, b in zip(got, ref, strict=True):
            err = float(np.abs(np.asarray(a) - np.asarray(b)).max() / (np.abs(np.asarray(b)).max() + 1e-12))
            assert err < 1e-4, (kind, err)

    t_img = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2)))
    t_theta, t_ct = torch.from_numpy(theta), torch.from_numpy(np.ascontiguousarray(ct.transpose(0, 3, 1, 2)))

    def torch_fwd():
        with torch.no_grad():
            return F.grid_sample(t_img, F.affine_grid(t_theta, (n, c, h, w), align_corners=False),
                                 align_corners=False)

    def torch_fwdbwd():
        a, th = t_img.detach().requires_grad_(True), t_theta.detach().requires_grad_(True)
        F.grid_sample(a, F.affine_grid(th, (n, c, h, w), align_corners=False),
                      align_corners=False).backward(t_ct)
        return a.grad, th.grad

    for k in torch_threads:
        for kind, fn in (("fwd", torch_fwd), ("fwd+bwd", torch_fwdbwd)):
            cands[f"torch[{k}t] {kind}"] = lambda fn=fn, k=k: (torch.set_num_threads(k), fn())
    return cands


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--torch-threads", default="1,2")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import jax
    import torch

    threads = tuple(int(k) for k in args.torch_threads.split(","))
    load_before = os.getloadavg()
    results = {}
    for pname in args.problems.split(","):
        shape = tuple(int(s) for s in pname.split("x"))
        reps = args.reps if shape[1] < 200 else max(5, args.reps // 3)
        t = time_interleaved(build(shape, threads), reps)
        print(f"\n== {pname} ({reps} reps; median ms; ratio vs the faster torch setting; vs warp[auto])")
        for kind in ("fwd", "fwd+bwd"):
            torch_ms = min(t[f"torch[{k}t] {kind}"]["median_ms"] for k in threads)
            gather_ms = t[f"warp[auto] {kind}"]["median_ms"]
            for name in ("axis_aligned_warp", "warp[auto]"):
                ms = t[f"{name} {kind}"]["median_ms"]
                print(f"  {name + ' ' + kind:28s} {ms:9.3f} ms  {ms / torch_ms:5.2f}x torch  "
                      f"{ms / gather_ms:5.2f}x warp[auto]")
            print(f"  {'torch ' + kind:28s} {torch_ms:9.3f} ms")
        results[pname] = {"reps": reps, "times": t}
    out = {"meta": {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores", "python": platform.python_version(),
        "jax": jax.__version__, "backend": jax.default_backend(), "torch": torch.__version__,
        "torch_threads": list(threads), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
        "problem": "attention warp: scale 0.4-1.2 per axis, translation +-0.3; bilinear, zeros, align_corners=False",
        "command": "python -m experiments.benchmarks.bench_separable " + " ".join(argv if argv is not None else sys.argv[1:])},
        "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
