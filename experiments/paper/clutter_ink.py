"""How much ink TC's clutter carries: statistics of the 6x6 crops for several ``crop_margin`` values.

:class:`stn_jax.data.distortions.TranslatedCluttered` cuts each clutter crop from a random training
digit, its top-left corner uniform over ``[crop_margin, 28 - crop_margin - clutter_size]`` on both
axes. This script draws crops the same way (numpy, seeded) and reports, per margin, the fraction of
crops with at least one pixel above 0.5 (intensities in [0, 1]) and the mean summed intensity of a
crop. Writes ``--out`` (JSON, paths relative to the working directory as given).

    python -m experiments.paper.clutter_ink --data-dir ../shared/data/mnist \
        --out experiments/results/cpu-2core-x86_64/clutter_ink.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from stn_jax.data.distortions import DIGIT_SIZE


def crop_statistics(images: np.ndarray, *, margin: int, size: int, count: int, seed: int) -> dict[str, float]:
    """Ink statistics of `count` random `size` x `size` crops of `images` (uint8 (n, 28, 28)), each
    from a random digit with its top-left corner uniform over ``[margin, 28 - margin - size]``."""
    hi = DIGIT_SIZE - margin - size
    if hi < margin:
        raise ValueError(f"clutter size {size} with margin {margin} does not fit in {DIGIT_SIZE}x{DIGIT_SIZE}")
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, len(images), count)
    corners = rng.integers(margin, hi + 1, (count, 2))
    rows = corners[:, :1, None] + np.arange(size)[None, :, None]
    cols = corners[:, 1:, None] + np.arange(size)[None, None, :]
    crops = images[digits[:, None, None], rows, cols].astype(np.float64) / 255.0
    return {"fraction_with_stroke": float((crops.max(axis=(1, 2)) > 0.5).mean()),
            "mean_ink": float(crops.sum(axis=(1, 2)).mean())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="directory of the four MNIST IDX files")
    parser.add_argument("--margins", type=int, nargs="+", default=[4, 0])
    parser.add_argument("--size", type=int, default=6, help="clutter crop side (px)")
    parser.add_argument("--count", type=int, default=20000, help="crops per margin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from stn_jax.data import load_mnist

    images = load_mnist(source="idx", data_dir=args.data_dir).train_images
    report = {"size": args.size, "count": args.count, "seed": args.seed, "data_dir": args.data_dir,
              "margins": {str(m): crop_statistics(images, margin=m, size=args.size, count=args.count,
                                                  seed=args.seed) for m in args.margins}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["margins"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
