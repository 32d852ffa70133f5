"""Sampler benchmark: stn_jax grid_sample / warp vs PyTorch grid_sample and map_coordinates.

Forward and forward+backward (gradient w.r.t. the image and theta) of an affine warp
(``affine_grid`` + ``grid_sample``, and the fused ``warp``), bilinear, zeros padding,
align_corners=False, random affine (rotation +-45 deg, scale 0.7-1.2, translation +-0.2),
against ``torch.nn.functional.affine_grid + grid_sample`` (NCHW, its native layout) and
``jax.scipy.ndimage.map_coordinates`` (order=1, mode="constant"; the coordinates come from
the same affine grid, computed inside the timed function). All candidates run in the same
process, interleaved rep by rep; each timed call directly follows an untimed call of the same
candidate (so none is timed with cold worker threads left behind by another framework), and
the median of ``--reps`` reps is reported.

Usage:
  python -m experiments.benchmarks.bench_sampler --reps 100 \
      --json experiments/results/MACHINE/bench_sampler.json --md experiments/results/MACHINE/bench_sampler.md

(``MACHINE`` names the machine, e.g. ``cpu-2core-x86_64``; see ``experiments/results/README.md``.)

``--impls`` chooses which stn_jax sampler implementations to time (``auto`` is what users
get; ``generic`` is the per-tap reference path); each becomes its own set of columns.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time

import numpy as np

PROBLEMS = {"256x28x28x1": (256, 28, 28, 1), "256x60x60x1": (256, 60, 60, 1),
            "32x224x224x3": (32, 224, 224, 3), "16x56x56x256": (16, 56, 56, 256)}
CPU_PROBLEMS = ("256x28x28x1", "256x60x60x1", "32x224x224x3")  # the feature-map case is GPU-only


def random_theta(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = rng.uniform(-np.pi / 4, np.pi / 4, n)
    scale = rng.uniform(0.7, 1.2, n)
    t = rng.uniform(-0.2, 0.2, (n, 2))
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.stack([np.stack([c, -s, t[:, 0]], -1), np.stack([s, c, t[:, 1]], -1)], 1).astype(np.float32)


def min_traffic_bytes(shape, itemsize: int = 4) -> dict[str, int]:
    """Minimal memory traffic of a same-size warp of an (N, H, W, C) image, in bytes.

    ``"fwd"``: read the image and write the output; ``"fwd+bwd"``: also read the output
    cotangent and write the image gradient (a grid computed inside the call need not be stored).
    """
    size = itemsize * int(np.prod(shape))
    return {"fwd": 2 * size, "fwd+bwd": 4 * size}


def build_candidates(shape, impls, with_map_coordinates=True, torch_threads=(1, 2), torch_device="cpu", *,
                     dtype="float32"):
    """Timed callables keyed "<candidate> fwd" / "<candidate> fwd+bwd"; each blocks until done.

    On ``torch_device="cuda"`` PyTorch runs on the GPU (synchronised after each call) and
    ``torch_threads`` is ignored; JAX runs on its default backend.

    ``dtype`` (``"float32"`` or ``"bfloat16"``) is the image's and the cotangent's dtype. JAX's
    theta stays float32; PyTorch's theta (and so its grid) takes the image's dtype, which its
    ``grid_sample`` requires. The check against PyTorch compares with PyTorch's float32 result
    on the same (rounded) image: max error 1e-4 for float32, 1e-2 (bfloat16 rounding) otherwise.
    """
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    import stn_jax

    n, h, w, c = shape
    rng = np.random.default_rng(0)
    img = rng.random(shape, dtype=np.float32)
    theta = random_theta(n, rng)
    ct = rng.standard_normal(shape, dtype=np.float32)

    j_img, j_theta, j_ct = jnp.asarray(img, dtype), jnp.asarray(theta), jnp.asarray(ct, dtype)
    t_dtype = getattr(torch, dtype)
    t_img = torch.from_numpy(np.ascontiguousarray(img.transpose(0, 3, 1, 2))).to(torch_device, t_dtype)
    t_theta = torch.from_numpy(theta).to(torch_device, t_dtype)
    t_ct = torch.from_numpy(np.ascontiguousarray(ct.transpose(0, 3, 1, 2))).to(torch_device, t_dtype)
    sync = torch.cuda.synchronize if torch_device == "cuda" else (lambda: None)

    cands = {}

    def torch_fwd():
        with torch.no_grad():
            g = F.affine_grid(t_theta, (n, c, h, w), align_corners=False)
            out = F.grid_sample(t_img, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        sync()
        return out

    def torch_fwdbwd():
        a = t_img.detach().requires_grad_(True)
        th = t_theta.detach().requires_grad_(True)
        g = F.affine_grid(th, (n, c, h, w), align_corners=False)
        out = F.grid_sample(a, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        out.backward(t_ct)
        sync()
        return a.grad, th.grad

    def with_threads(fn, k):
        def run():
            torch.set_num_threads(k)
            return fn()
        return run

    if torch_device == "cuda":
        cands["torch[cuda] fwd"] = torch_fwd
        cands["torch[cuda] fwd+bwd"] = torch_fwdbwd
    for k in (torch_threads if torch_device == "cpu" else ()):
        cands[f"torch[{k}t] fwd"] = with_threads(torch_fwd, k)
        cands[f"torch[{k}t] fwd+bwd"] = with_threads(torch_fwdbwd, k)

    def jax_pair(name, fn):
        fwd = jax.jit(fn)

        def loss(im, th):
            return jnp.vdot(fn(im, th), j_ct)

        bwd = jax.jit(jax.grad(loss, argnums=(0, 1)))
        cands[f"{name} fwd"] = lambda: jax.block_until_ready(fwd(j_img, j_theta))
        cands[f"{name} fwd+bwd"] = lambda: jax.block_until_ready(bwd(j_img, j_theta))

    for impl in impls:
        def gs(im, th, impl=impl):
            with stn_jax.sampler_implementation(impl):
                return stn_jax.grid_sample(im, stn_jax.affine_grid(th, (h, w)))

        def wp(im, th, impl=impl):
            with stn_jax.sampler_implementation(impl):
                return stn_jax.warp(im, th)

        jax_pair(f"grid_sample[{impl}]", gs)
        jax_pair(f"warp[{impl}]", wp)

    if with_map_coordinates:
        def mc(im, th):
            g = stn_jax.affine_grid(th, (h, w))
            # pixel coordinates (align_corners=False): ((x + 1) * W - 1) / 2
            px = ((g[..., 0] + 1) * w - 1) / 2
            py = ((g[..., 1] + 1) * h - 1) / 2

            def one(ch, yy, xx):
                return jax.scipy.ndimage.map_coordinates(ch, [yy, xx], order=1, mode="constant")

            per_channel = jax.vmap(one, in_axes=(2, None, None), out_axes=-1)
            return jax.vmap(per_channel)(im, py, px)

        jax_pair("map_coordinates", mc)

    # sanity: stn_jax agrees with torch (float32, on the same rounded image) on this problem
    with torch.no_grad():
        t_theta32 = torch.from_numpy(theta).to(torch_device)
        ref = F.grid_sample(t_img.float(), F.affine_grid(t_theta32, (n, c, h, w), align_corners=False),
                            mode="bilinear", padding_mode="zeros", align_corners=False)
    ref = ref.cpu().numpy().transpose(0, 2, 3, 1)
    tol = 1e-4 if dtype == "float32" else 1e-2
    for impl in impls:
        with stn_jax.sampler_implementation(impl):
            got = np.asarray(stn_jax.warp(j_img, j_theta).astype(jnp.float32))
        err = float(np.abs(got - ref).max())
        assert err < tol, (impl, err)
    return cands


def time_interleaved(cands, reps, warmup=3, pause_s=0.02):
    for fn in cands.values():
        for _ in range(warmup):
            fn()
    times = {k: [] for k in cands}
    for _ in range(reps):
        for k, fn in cands.items():
            # A short pause (the other framework's spinning worker threads go idle), then one
            # untimed call, so every candidate is timed with its own worker threads awake: timed
            # cold, the first JAX call after a torch call measured up to ~2x slower at 28x28
            # (XLA's pool asleep, torch's OpenMP workers still spinning).
            time.sleep(pause_s)
            fn()
            t0 = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "min_ms": min(v),
                "q25_ms": float(np.percentile(v, 25)), "q75_ms": float(np.percentile(v, 75))}
            for k, v in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--problems", default=None,
                    help=f"comma-separated subset of {list(PROBLEMS)} (default: the CPU three on CPU, all on GPU)")
    ap.add_argument("--torch-device", choices=("auto", "cpu", "cuda"), default="auto",
                    help="where PyTorch runs; auto: cuda when JAX's default backend is a GPU")
    ap.add_argument("--impls", default="auto,generic")
    ap.add_argument("--no-map-coordinates", action="store_true")
    ap.add_argument("--torch-threads", default="1,2",
                    help="torch.set_num_threads settings to time; ratios are against the fastest")
    ap.add_argument("--json")
    ap.add_argument("--md")
    args = ap.parse_args(argv)

    import jax
    import torch

    torch_threads = tuple(int(k) for k in args.torch_threads.split(","))
    on_gpu = jax.default_backend() == "gpu"
    torch_device = args.torch_device if args.torch_device != "auto" else ("cuda" if on_gpu else "cpu")
    if torch_device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--torch-device cuda, but this torch build has no CUDA device")
    problems = args.problems.split(",") if args.problems else list(PROBLEMS if on_gpu else CPU_PROBLEMS)
    impls = [s for s in args.impls.split(",") if s]
    load_before = os.getloadavg()
    results = {}
    for pname in problems:
        cands = build_candidates(PROBLEMS[pname], impls, not args.no_map_coordinates, torch_threads,
                                 torch_device)
        reps = args.reps if PROBLEMS[pname][1] < 200 else max(10, args.reps // 3)
        results[pname] = {"reps": reps, "times": time_interleaved(cands, reps)}
        t = results[pname]["times"]
        for kind in ("fwd", "fwd+bwd"):  # the fastest PyTorch thread setting is the reference
            best = min((k for k in t if k.startswith("torch[") and k.endswith(" " + kind)),
                       key=lambda k: t[k]["median_ms"])
            t[f"torch {kind}"] = dict(t[best], setting=best)
        results[pname]["min_bytes"] = min_traffic_bytes(PROBLEMS[pname])
        print(f"\n== {pname} ({reps} reps, interleaved; median ms, ratio vs the fastest torch setting, "
              f"GB/s of the minimal traffic)")
        for k, v in t.items():
            kind = "fwd+bwd" if k.endswith("fwd+bwd") else "fwd"
            ratio = v["median_ms"] / t[f"torch {kind}"]["median_ms"]
            gbps = results[pname]["min_bytes"][kind] / v["median_ms"] / 1e6
            print(f"  {k:32s} {v['median_ms']:9.3f} ms   {ratio:6.2f}x   {gbps:7.1f} GB/s")
    meta = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
        "python": platform.python_version(), "jax": jax.__version__, "jaxlib_backend": jax.default_backend(),
        "torch": torch.__version__, "torch_device": torch_device,
        "gpu": jax.devices()[0].device_kind if on_gpu else None,
        "torch_threads": list(torch_threads) if torch_device == "cpu" else [],
        "torch_interop_threads": torch.get_num_interop_threads(),
        "jax_threads": "XLA CPU default (intra-op Eigen pool sized to the core count)",
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""), "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "impls": impls,
        "problem": "bilinear, zeros padding, align_corners=False, random affine (rot +-45deg, scale 0.7-1.2, shift +-0.2)",
        "command": "python -m experiments.benchmarks.bench_sampler " + " ".join(argv if argv is not None else os.sys.argv[1:]),
    }
    out = {"meta": meta, "results": results}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    if args.md:
        with open(args.md, "w") as f:
            f.write(to_markdown(out))
    return out


def to_markdown(out) -> str:
    meta, results = out["meta"], out["results"]
    lines = [f"Sampler benchmark, {meta['date_utc']}, {meta['machine']}, jax {meta['jax']} ({meta['jaxlib_backend']}), "
             f"torch {meta['torch']} (threads {meta['torch_threads']}, ratio vs the fastest); load average before/after "
             f"{tuple(round(x, 2) for x in meta['loadavg_before'])} / {tuple(round(x, 2) for x in meta['loadavg_after'])}.",
             f"Command: `{meta['command']}`. {meta['problem']}. Median ms of interleaved reps; ratio = time / PyTorch's.", ""]
    names = list(next(iter(results.values()))["times"])
    base = sorted({k.rsplit(" ", 1)[0] for k in names}, key=lambda s: [k.rsplit(" ", 1)[0] for k in names].index(s))
    lines.append("| problem (reps) | " + " | ".join(f"{b} fwd | {b} fwd+bwd" for b in base) + " |")
    lines.append("|---" * (1 + 2 * len(base)) + "|")
    for p, r in results.items():
        t = r["times"]
        cells = []
        for b in base:
            for kind in ("fwd", "fwd+bwd"):
                v = t[f"{b} {kind}"]["median_ms"]
                ratio = v / t[f"torch {kind}"]["median_ms"]
                cells.append(f"{v:.2f} ({ratio:.2f}x)")
        lines.append(f"| {p} ({r['reps']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
