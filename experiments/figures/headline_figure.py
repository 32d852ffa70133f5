"""Headline figure: ST-CNN (affine) vs CNN on RTS and TC, from the committed run directories.

One panel per dataset: validation error (%) against training images seen (both axes
logarithmic) for every seed of each model at its :data:`MAX_BUDGETS` largest budgets (thin lines:
solid for the largest, then dashed, dotted), the final test error of each seed (markers at the last
point), and the paper's test error (dash-dotted lines; full budget of 150k steps at batch 256, 38.4M
images). Runs of one device only (``--device``, default ``1× cpu``). Reads
``metrics.jsonl`` / ``results.json`` under ``experiments/results/runs/``; writes
``experiments/results/headline.png``.

    python -m experiments.figures.headline_figure [--recipe adam] [--architecture paper] [--device "1× cpu"]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from experiments.paper import paper
from experiments.paper.reproduce import ROOT
from experiments.paper.summarize import HEADLINE, cnn_recipe, group_cells, load_runs, read_metrics
from stn_jax.models import ARCHITECTURES

COLORS = {"cnn": "#1f77b4", "st-cnn": "#d62728"}
LABELS = {"cnn": "CNN", "st-cnn": "ST-CNN (affine)"}
Y_TICKS = (0.2, 0.5, 1, 2, 5, 10, 20, 50, 100)  # labelled error levels (%) of the log axis
LINE_STYLES = ("-", "--", ":")
MAX_BUDGETS = len(LINE_STYLES)
"""Budgets drawn per model, largest first (smaller ones would only crowd the panel)."""


def _curve(run_dir: Path, split: str, batch_size: int) -> tuple[list[int], list[float]]:
    """(images seen, error %) of one split of a run."""
    rows = read_metrics(run_dir, split)
    return [r["step"] * batch_size for r in rows], [100 * r["error"] for r in rows]


def draw(cells: dict[tuple, list[dict]], *, recipe: str, architecture: str, device: str = "1× cpu"):
    """The headline figure (a matplotlib Figure, one panel per headline dataset) of `cells`
    (:func:`experiments.paper.summarize.group_cells`) for one architecture and device (as in
    :func:`experiments.paper.summarize.device_of`): the ST-CNN trained with `recipe` and the CNN
    trained with the recipe it is compared with (:func:`experiments.paper.summarize.cnn_recipe`)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(5.2 * len(HEADLINE), 5.6))
    for ax, (ds, title) in zip(axes, HEADLINE, strict=True):
        table = "table1" if ds in paper.TABLE1_DATASETS else ds
        budgets = set()
        for model, transform, model_recipe in (("cnn", None, cnn_recipe(recipe)), ("st-cnn", "affine", recipe)):
            keys = sorted((k for k in cells
                           if k[:5] == (table, ds, model, transform, model_recipe) and k[6:] == (architecture, device)),
                          key=lambda k: k[5][0] * k[5][1], reverse=True)[:MAX_BUDGETS]
            for key, style in zip(keys, LINE_STYLES, strict=False):  # one line style per budget, largest first
                group = sorted(cells[key], key=lambda g: g["seed"])
                steps_batch = f"{key[5][0]:,} × {key[5][1]}"
                budgets.add(key[5])
                for i, run in enumerate(group):
                    images, errs = _curve(run["dir"], "val", key[5][1])
                    test = run["results"]["test_error_pct"]
                    ax.plot(images, errs, style, color=COLORS[model], alpha=0.7, lw=1.2,
                            label=f"{LABELS[model]} val, {steps_batch} (n={len(group)})" if i == 0 else None)
                    ax.plot([key[5][0] * key[5][1]], [test], "o", color=COLORS[model], markersize=5,
                            label=f"{LABELS[model]} test, {steps_batch}" if i == 0 else None)
            ref = paper.paper_error(ds, model, transform)
            if ref is not None:
                ax.axhline(ref, color=COLORS[model], ls="-.", lw=1, label=f"paper {LABELS[model]} ({ref}%)")
        if not budgets:  # nothing trained with these recipes on this dataset yet
            ax.cla()
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{title}: no runs with this recipe yet", ha="center", va="center",
                    transform=ax.transAxes, fontsize=9)
            continue
        budget = ", ".join(f"{steps:,} × {batch}" for steps, batch in sorted(budgets))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(FixedLocator(Y_TICKS))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("training images seen")
        ax.set_ylabel("error (%)")
        ax.set_title(f"{title}: {budget} steps × batch", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        # Below the panel, so that no curve is hidden behind it.
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    recipes = recipe if cnn_recipe(recipe) == recipe else f"{cnn_recipe(recipe)} (CNN) / {recipe} (ST-CNN)"
    fig.suptitle(f"recipe {recipes}, {architecture} architecture, {device}", fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="adam",
                        help="ST-CNN recipe whose runs are plotted, beside the CNN runs it is compared with "
                             "(default: adam)")
    parser.add_argument("--architecture", default="paper", choices=ARCHITECTURES,
                        help="zoo architecture whose runs are plotted (default: paper)")
    parser.add_argument("--device", default="1× cpu",
                        help='runs of this device only, as RESULTS.md names it (default: "1× cpu")')
    parser.add_argument("--out", default=str(ROOT / "experiments" / "results" / "headline.png"))
    args = parser.parse_args(argv)
    fig = draw(group_cells(load_runs()), recipe=args.recipe, architecture=args.architecture, device=args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
