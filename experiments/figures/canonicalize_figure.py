"""Canonicalise the RTS test split with a trained run and draw a before/after figure.

Two steps around the ``stn-jax canonicalize`` command (see ``docs/canonicalize.md``)::

    # 1. the RTS test split (10,000 distorted digits, fixed seed) as an .npz with images + labels
    python -m experiments.figures.canonicalize_figure export --data-dir DIR --out runs/rts_test.npz
    # 2. the command itself
    .venv/bin/stn-jax canonicalize --workdir runs/rts --input runs/rts_test.npz --output runs/rts_canon
    # 3. figure + summary (accuracy of the written predictions against the labels)
    python -m experiments.figures.canonicalize_figure figure --input runs/rts_test.npz \\
        --output runs/rts_canon --png experiments/results/MACHINE/canonicalize_rts.png \\
        --json experiments/results/MACHINE/canonicalize_rts.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys

import numpy as np


def export(args: argparse.Namespace) -> int:
    from stn_jax.data import load_mnist, make_dataset

    mnist = load_mnist("auto", data_dir=args.data_dir)
    images, labels = make_dataset(args.dataset, mnist).test_set()
    n = len(images) if args.limit is None else args.limit
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    np.savez(args.out, images=np.asarray(images[:n], np.float32), labels=np.asarray(labels[:n]))
    print(f"wrote {args.out}: {n} {args.dataset} test images {images.shape[1:]} (MNIST source "
          f"{mnist.source}{', SAMPLE' if mnist.is_sample else ''})")
    return 0


def figure(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from stn_jax.canonicalize import decode_png, read_output

    data = np.load(args.input)
    images, labels = data["images"], data["labels"]
    table = read_output(args.output).to_pydict()
    rejects = read_output(args.output, rejects=True).num_rows
    rows = np.asarray(table["row"])
    pred = np.asarray(table["prediction"])
    correct = pred == labels[rows]
    with open(os.path.join(args.output, "_manifest.json")) as f:
        manifest = json.load(f)
    k = args.columns
    pick = np.arange(k) * max(1, len(rows) // k)
    fig, axes = plt.subplots(2, k, figsize=(1.2 * k, 2.9))
    for j, i in enumerate(pick):
        before = images[rows[i]][..., 0]
        after = decode_png(table["image_png"][i])[..., 0]
        axes[0, j].imshow(before, cmap="gray", vmin=0, vmax=1)
        axes[1, j].imshow(after, cmap="gray", vmin=0, vmax=1)
        axes[1, j].set_title(f"{pred[i]} ({table['confidence'][i]:.2f})", fontsize=8,
                             color="black" if correct[i] else "red")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_ylabel("input", fontsize=9)
    axes[1, 0].set_ylabel("canonical", fontsize=9)
    fig.suptitle(f"stn-jax canonicalize: RTS test split, {args.title}", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(args.png)), exist_ok=True)
    fig.savefig(args.png, dpi=110)
    summary = {
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "input": args.input, "output": args.output, "model": manifest["input"].get("workdir"),
        "rows_in": int(len(rows) + rejects), "rows_written": int(len(rows)), "rows_rejected": int(rejects),
        "parts": len(manifest["parts"]), "complete": manifest["complete"],
        "error_of_written_predictions": float(1.0 - correct.mean()),
        "mean_abs_param_deviation_from_identity": float(np.abs(
            np.asarray(table["params"]) - np.array([1, 0, 0, 0, 1, 0], np.float32)).mean()),
        "figure": args.png, "note": args.title,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)
    print(json.dumps(summary, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write a distorted test split as .npz (images, labels)")
    e.add_argument("--data-dir", default=None, help="MNIST IDX directory (default: load_mnist auto)")
    e.add_argument("--dataset", default="rts")
    e.add_argument("--limit", type=int, default=None, help="first N test images only")
    e.add_argument("--out", required=True)
    e.set_defaults(func=export)
    f = sub.add_parser("figure", help="before/after figure + summary of a canonicalize output")
    f.add_argument("--input", required=True, help="the exported .npz")
    f.add_argument("--output", required=True, help="the canonicalize output directory")
    f.add_argument("--png", required=True)
    f.add_argument("--json", default=None)
    f.add_argument("--columns", type=int, default=12)
    f.add_argument("--title", default="trained ST-CNN (affine)")
    f.set_defaults(func=figure)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
