"""Sampler demo: warp a few real MNIST digits with every kind of grid and padding mode.

Reads the gzipped IDX test images from --mnist-dir (default ../shared/data/mnist or
$STN_JAX_MNIST_DIR) directly with numpy; without them it uses a synthetic checkerboard-and-ring
pattern. Writes ``sampler_demo.png`` (rows: digits; columns: warps) and ``sampler_demo.json``
(shapes, timing of one jitted batch call per warp, and per-warp output statistics) into --out.

    python -m experiments.figures.demo_sampler --out runs/demo
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import os
import pathlib
import platform
import time

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import stn_jax  # noqa: E402

DEFAULT_MNIST = os.environ.get("STN_JAX_MNIST_DIR", "../shared/data/mnist")


def load_digits(mnist_dir: str, count: int) -> tuple[np.ndarray, str]:
    """(count, 28, 28, 1) float32 in [0, 1] and a description of the source."""
    path = pathlib.Path(mnist_dir) / "t10k-images-idx3-ubyte.gz"
    if path.exists():
        with gzip.open(path, "rb") as f:
            data = f.read()
        magic, n, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in range(0, 16, 4))
        if magic != 2051:
            raise ValueError(f"{path} is not an IDX image file (magic {magic})")
        images = np.frombuffer(data, np.uint8, offset=16).reshape(n, rows, cols)
        return (images[:count, :, :, None] / 255.0).astype(np.float32), f"mnist idx: {path}"
    yy, xx = np.mgrid[0:28, 0:28] / 27.0 * 2 - 1
    ring = (np.abs(np.hypot(xx, yy) - 0.6) < 0.15).astype(np.float32)
    checker = ((np.floor((xx + 1) * 3) + np.floor((yy + 1) * 3)) % 2).astype(np.float32)
    base = np.maximum(ring, 0.5 * checker)
    images = np.stack([np.roll(base, 3 * i, axis=1) for i in range(count)])[..., None]
    return images.astype(np.float32), "synthetic pattern (no MNIST IDX files found)"


def warps(n: int, size: tuple[int, int]) -> list[tuple[str, jax.Array, dict]]:
    """(name, grid (n, H, W, 2), sampling options) for every demonstrated warp."""
    sim = stn_jax.get_transform("similarity")
    rot = sim.grid(jnp.tile(stn_jax.rotation_params(np.pi / 4, scale=1.3), (n, 1)), size)
    zoom = stn_jax.get_transform("attention").grid(jnp.tile(jnp.array([0.6, 0.2, -0.1]), (n, 1)), size)
    hom = jnp.tile(jnp.array([[1.0, 0.15, 0.0], [0.0, 1.0, 0.0], [0.0, 0.35, 1.0]]), (n, 1, 1))
    proj = stn_jax.projective_grid(hom, size)
    disp = 0.18 * jax.random.normal(jax.random.key(0), (n, 16, 2))
    tps = stn_jax.tps_grid(disp, size)
    shrink = stn_jax.get_transform("attention").grid(jnp.tile(jnp.array([1.6, 0.0, 0.0]), (n, 1)), size)
    return [
        ("identity", jnp.broadcast_to(stn_jax.identity_grid(size), (n,) + size + (2,)), {}),
        ("rotate 45 deg, x1.3", rot, {}),
        ("zoom 0.6 (attention)", zoom, {"mode": "bicubic"}),
        ("projective", proj, {}),
        ("TPS (16 points)", tps, {}),
        ("shrink: zeros", shrink, {"padding_mode": "zeros"}),
        ("shrink: border", shrink, {"padding_mode": "border"}),
        ("shrink: reflection", shrink, {"padding_mode": "reflection"}),
        ("shrink: nearest", shrink, {"mode": "nearest", "padding_mode": "reflection"}),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/demo", help="output directory")
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST)
    parser.add_argument("--count", type=int, default=4, help="number of digits")
    args = parser.parse_args(argv)
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    images, source = load_digits(args.mnist_dir, args.count)
    n, size = images.shape[0], images.shape[1:3]
    results = []
    columns = []
    for name, grid, options in warps(n, size):
        fn = jax.jit(functools.partial(stn_jax.grid_sample, **options))
        out = fn(images, grid).block_until_ready()  # compile
        start = time.perf_counter()
        out = fn(images, grid).block_until_ready()
        elapsed_ms = (time.perf_counter() - start) * 1e3
        columns.append((name, np.asarray(out)))
        results.append({"warp": name, "options": options, "output_mean": float(out.mean()),
                        "output_min": float(out.min()), "output_max": float(out.max()),
                        "jitted_call_ms": round(elapsed_ms, 3)})

    fig, axes = plt.subplots(n, len(columns), figsize=(1.6 * len(columns), 1.7 * n), squeeze=False)
    for j, (name, out) in enumerate(columns):
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(out[i, :, :, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
    fig.suptitle(f"stn_jax.grid_sample on {source.split(':')[0]}", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "sampler_demo.png", dpi=110)
    plt.close(fig)

    summary = {"source": source, "images": list(images.shape), "warps": results,
               "jax": jax.__version__, "backend": jax.default_backend(),
               "machine": platform.machine(), "python": platform.python_version(),
               "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out_dir / "sampler_demo.json").write_text(json.dumps(summary, indent=2))
    print(f"wrote {out_dir / 'sampler_demo.png'} and {out_dir / 'sampler_demo.json'} ({source})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
