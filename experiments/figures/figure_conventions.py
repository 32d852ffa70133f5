"""Figure of stn_jax's coordinate conventions -> docs/images/conventions.png.

Panels: (1, 2) a 3x4 image with its pixel centres and where normalised -1 / +1 fall for
``align_corners=False`` (outer pixel edges) and ``True`` (corner pixel centres), x right, y down;
(3) a 1-D row [1, 2, 3, 4] sampled by ``stn_jax.grid_sample`` along x in [-2.2, 2.2] under every
padding mode (bilinear, ``align_corners=False``), showing what each mode does outside.

    python -m experiments.figures.figure_conventions [--out docs/images/conventions.png]
"""

from __future__ import annotations

import argparse
import pathlib

import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import stn_jax  # noqa: E402


def _pixel_panel(ax, align_corners: bool, h: int = 3, w: int = 4) -> None:
    for i in range(h):
        for j in range(w):
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=True, alpha=0.15 + 0.1 * ((i + j) % 2),
                                       edgecolor="gray", facecolor="tab:blue"))
    cols, rows = np.meshgrid(np.arange(w), np.arange(h))
    ax.plot(cols.ravel(), rows.ravel(), "k.", ms=6)
    norm = np.asarray(stn_jax.identity_grid((h, w), align_corners=align_corners))
    for i in range(h):
        for j in range(w):
            ax.annotate(f"({norm[i, j, 0]:+.2f},\n {norm[i, j, 1]:+.2f})", (j, i), fontsize=6,
                        ha="center", va="top", xytext=(0, -4), textcoords="offset points")
    # where x = -1 / +1 and y = -1 / +1 fall, in pixel coordinates
    lo_x, hi_x = np.asarray(stn_jax.normalized_to_pixel(jnp.array([[-1.0, -1.0], [1.0, 1.0]]), (h, w),
                                                        align_corners=align_corners))
    style = dict(color="tab:red", lw=1.5)
    ax.axvline(lo_x[0], **style), ax.axvline(hi_x[0], **style)
    ax.axhline(lo_x[1], ls="--", **style), ax.axhline(hi_x[1], ls="--", **style)
    ax.text(lo_x[0], -0.95, "x=-1", color="tab:red", ha="center", fontsize=8)
    ax.text(hi_x[0], -0.95, "x=+1", color="tab:red", ha="center", fontsize=8)
    ax.text(w - 0.35, lo_x[1], "y=-1", color="tab:red", va="center", fontsize=8)
    ax.text(w - 0.35, hi_x[1], "y=+1", color="tab:red", va="center", fontsize=8)
    ax.annotate("", xy=(1.0, -1.35), xytext=(-0.5, -1.35), arrowprops=dict(arrowstyle="->"))
    ax.text(1.1, -1.35, "x (width, col)", va="center", fontsize=7)
    ax.annotate("", xy=(-1.05, 1.0), xytext=(-1.05, -0.5), arrowprops=dict(arrowstyle="->"))
    ax.text(-1.05, 1.15, "y\n(height,\nrow)", ha="center", va="top", fontsize=7)
    ax.set_xlim(-1.4, w + 0.2)
    ax.set_ylim(h + 0.1, -1.6)
    ax.set_aspect("equal")
    ax.set_xticks(range(w)), ax.set_yticks(range(h))
    ax.set_xlabel("pixel column j (centres at integers)", fontsize=7)
    ax.set_ylabel("pixel row i", fontsize=7)
    formula = "((x + 1) W - 1) / 2" if not align_corners else "(x + 1) / 2 (W - 1)"
    ax.set_title(f"align_corners={align_corners}\npixel col = {formula}", fontsize=8)


def _padding_panel(ax) -> None:
    row = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    image = row[None, None, :, None]  # (1, H=1, W=4, C=1)
    xs = np.linspace(-2.2, 2.2, 441).astype(np.float32)
    grid = np.stack([xs, np.zeros_like(xs)], -1)[None, None]  # (1, 1, 441, 2)
    for pad, style in (("zeros", "-"), ("border", "--"), ("reflection", ":")):
        out = np.asarray(stn_jax.grid_sample(image, grid, padding_mode=pad))[0, 0, :, 0]
        ax.plot(xs, out, style, lw=1.8, label=pad)
    centres = np.asarray(stn_jax.identity_grid((1, 4)))[0, :, 0]
    ax.plot(centres, row, "ko", ms=4, label="pixel centres")
    ax.axvspan(-2.2, -1, color="gray", alpha=0.15)
    ax.axvspan(1, 2.2, color="gray", alpha=0.15)
    ax.set_xlabel("normalised x (align_corners=False; shaded: outside [-1, 1])", fontsize=7)
    ax.set_ylabel("sampled value (row = 1, 2, 3, 4)", fontsize=7)
    ax.set_title("padding_mode outside the image (bilinear)", fontsize=8)
    ax.legend(fontsize=7, loc="upper left")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[2] / "docs" / "images" / "conventions.png"))
    args = parser.parse_args(argv)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    _pixel_panel(axes[0], False)
    _pixel_panel(axes[1], True)
    _padding_panel(axes[2])
    fig.suptitle("stn_jax coordinates: images (N, H, W, C), grids (N, Ho, Wo, 2) holding (x, y) in [-1, 1]",
                 fontsize=10)
    fig.tight_layout()
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
