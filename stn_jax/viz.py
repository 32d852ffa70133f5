"""Figures: learning curves and the paper's Figure 3 for our runs (inputs with the sampling
grid drawn on them, next to the spatial transformer's outputs).

Matplotlib is imported lazily with the non-interactive ``Agg`` backend; every function writes
a PNG and returns its path.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def grid_to_pixels(grid: np.ndarray, size: tuple[int, int], *, align_corners: bool = False) -> np.ndarray:
    """Normalised (x, y) in [-1, 1] (..., 2) -> pixel coordinates (column, row) of an image of
    `size` (H, W), pixel centres at integers (the convention of :func:`stn_jax.grid_sample`)."""
    h, w = size
    g = np.asarray(grid, np.float64)
    if align_corners:
        x = (g[..., 0] + 1) / 2 * (w - 1)
        y = (g[..., 1] + 1) / 2 * (h - 1)
    else:
        x = ((g[..., 0] + 1) * w - 1) / 2
        y = ((g[..., 1] + 1) * h - 1) / 2
    return np.stack([x, y], -1)


def plot_learning_curves(records: Sequence[dict[str, Any]], path: str | pathlib.Path, *,
                         title: str = "") -> pathlib.Path:
    """Training loss and train/validation/test error (%) against step, from metrics.jsonl records."""
    plt = _pyplot()
    fig, (ax_loss, ax_err) = plt.subplots(1, 2, figsize=(10, 3.8))
    for split, style in (("train", "-"), ("val", "o-"), ("test", "*")):
        rows = [r for r in records if r.get("split") == split and isinstance(r.get("loss"), (int, float))]
        if not rows:
            continue
        steps = [r["step"] for r in rows]
        ax_loss.plot(steps, [r["loss"] for r in rows], style, label=split, markersize=4 if split != "test" else 10)
        ax_err.plot(steps, [100 * r["error"] for r in rows], style, label=split,
                    markersize=4 if split != "test" else 10)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (cross-entropy)")
    ax_loss.set_yscale("log")
    ax_err.set_xlabel("step")
    ax_err.set_ylabel("error (%)")
    ax_err.set_yscale("log")
    for ax in (ax_loss, ax_err):
        ax.grid(True, alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _draw_grid(ax: Any, grid_px: np.ndarray, *, lines: int = 7, color: str = "#ff3030") -> None:
    """Draw the outline and a few interior lines of a sampling grid (Ho, Wo, 2) in pixel coords."""
    ho, wo = grid_px.shape[:2]
    rows = np.unique(np.linspace(0, ho - 1, lines).round().astype(int))
    cols = np.unique(np.linspace(0, wo - 1, lines).round().astype(int))
    for r in rows:
        lw = 1.6 if r in (0, ho - 1) else 0.6
        ax.plot(grid_px[r, :, 0], grid_px[r, :, 1], color=color, linewidth=lw)
    for c in cols:
        lw = 1.6 if c in (0, wo - 1) else 0.6
        ax.plot(grid_px[:, c, 0], grid_px[:, c, 1], color=color, linewidth=lw)


def plot_transformer_panel(images: np.ndarray, transformers: Sequence[dict[str, Any]],
                           path: str | pathlib.Path, *, labels: np.ndarray | None = None,
                           predictions: np.ndarray | None = None, title: str = "",
                           align_corners: bool = False) -> pathlib.Path:
    """The paper's Figure 3: each column is one test input with every transformer's sampling
    grid drawn on it (top row), above each transformer's output (one row per transformer).

    Args:
      images: (N, H, W, C) inputs in [0, 1] (channel 0 is shown for C > 1 inputs; each
        transformer is drawn on the channel it mostly samples when C == number of transformers).
      transformers: :func:`stn_jax.models.inspect_transformers` output: dicts with "kind",
        "grid" (N, Ho, Wo, 2) on the input and "warped" (N, Ho, Wo, C').
      labels / predictions: (N,) ints shown above each row.
    """
    plt = _pyplot()
    images = np.asarray(images)
    n, h, w, c = images.shape
    k = len(transformers)
    fig, axes = plt.subplots(1 + k, n, figsize=(1.55 * n, 1.75 * (1 + k)), squeeze=False)
    colors = ["#ff3030", "#30a0ff", "#30d030", "#ffb000"]
    for i in range(n):
        ax = axes[0, i]
        shown = images[i, :, :, 0] if c == 1 or c != k else images[i].max(-1)
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        for j, t in enumerate(transformers):
            grid = np.asarray(t["grid"][i])
            _draw_grid(ax, grid_to_pixels(grid, (h, w), align_corners=align_corners),
                       color=colors[j % len(colors)])
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        text = "input"
        if labels is not None:
            text = f"label {int(labels[i])}"
            if predictions is not None:
                text += f"\npred {int(predictions[i])}"
        ax.set_title(text, fontsize=8)
        for j, t in enumerate(transformers):
            warped = np.asarray(t["warped"][i])
            ax2 = axes[1 + j, i]
            ax2.imshow(warped[..., 0] if warped.shape[-1] == 1 else warped.max(-1), cmap="gray", vmin=0, vmax=1)
            if i == 0:
                ax2.set_ylabel(f"{t.get('kind', 'ST')} output", fontsize=8, color=colors[j % len(colors)])
        for ax_ in axes[:, i]:
            ax_.set_xticks([])
            ax_.set_yticks([])
    axes[0, 0].set_ylabel("input + grid", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
