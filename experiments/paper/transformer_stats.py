"""How much the learned affine transformers zoom: statistics of theta on test images.

For each run directory (a ``stn-jax train`` workdir with checkpoints), restores the model,
runs it on the first ``--count`` images of the dataset's fixed test set and reports, per
transformer, the linear scale of the sampled region relative to the full frame,
``sqrt(|det A|)`` with ``A = theta[:, :2]`` (1 = the whole input, 0.5 = a crop of half the
width and height), the mean |translation| and the spread of the rotation
(:func:`experiments.paper.transformer_response.decompose_affine`). Writes ``--out`` (JSON).

    python -m experiments.paper.transformer_stats experiments/results/runs/tc/tc-st-cnn-affine-s0-adam \
        --data-dir ../shared/data/mnist --out experiments/results/MACHINE/transformer_scale.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="training workdirs (with checkpoints/)")
    parser.add_argument("--data-dir", required=True, help="directory of the four MNIST IDX files")
    parser.add_argument("--count", type=int, default=2000, help="test images to use")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    from experiments.paper.transformer_response import decompose_affine
    from stn_jax.data import load_mnist, make_dataset
    from stn_jax.models import inspect_transformers
    from stn_jax.train import load_run

    mnist = load_mnist(source="idx", data_dir=args.data_dir)
    report = {}
    for run_dir in args.runs:
        run = load_run(run_dir)
        images, _ = make_dataset(run.config.dataset, mnist).test_set()
        found = inspect_transformers(run.model, run.variables, images[: args.count])
        stats = []
        for t in found:
            p = np.asarray(t["params"])
            if t["kind"] != "affine" or p.shape[-1] != 6:
                stats.append({"kind": t["kind"], "note": "scale statistic defined for affine only"})
                continue
            parts = decompose_affine(p.reshape(-1, 2, 3))
            scale, rotation = parts["scale"], parts["rotation_deg"]
            stats.append({"kind": "affine", "scale_mean": float(scale.mean()),
                          "scale_median": float(np.median(scale)),
                          "scale_p10_p90": [float(np.percentile(scale, 10)), float(np.percentile(scale, 90))],
                          "translation_norm_mean": float(np.linalg.norm(parts["translation"], axis=-1).mean()),
                          "rotation_deg_p10_p90": [float(np.percentile(rotation, 10)),
                                                   float(np.percentile(rotation, 90))]})
        report[Path(run_dir).name] = {"step": run.step, "dataset": run.config.dataset,
                                      "images": int(min(args.count, len(images))), "transformers": stats}
        print(Path(run_dir).name, json.dumps(stats))
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
