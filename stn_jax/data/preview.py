"""Figures and exports of distorted datasets (matplotlib imported lazily, Agg backend)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def _tile(image: np.ndarray) -> np.ndarray:
    """(H, W, C) -> (H, C*W + C - 1): channels side by side with a grey 1-pixel separator."""
    sep = np.full((image.shape[0], 1), 0.5, image.dtype)
    parts = []
    for c in range(image.shape[-1]):
        parts += [sep, image[..., c]] if c else [image[..., c]]
    return np.concatenate(parts, axis=1)


def save_preview(images: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *, cols: int = 8,
                 title: str | None = None) -> Path:
    """Save a grid of ``images`` (N, H, W, C) in [0, 1], each titled with its label, as ``path``.

    Multi-channel images are drawn with their channels side by side.
    """
    import matplotlib  # noqa: PLC0415 (lazy: matplotlib is slow to import)
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt  # noqa: PLC0415

    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim != 4 or images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise ValueError(f"images must be (N, H, W, C) with N == len(labels) > 0; got {images.shape}, "
                         f"{labels.shape}")
    n = images.shape[0]
    cols = min(cols, n)
    rows = -(-n // cols)
    aspect = images.shape[-1] * images.shape[2] / images.shape[1]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols * aspect, 1.45 * rows + (0.4 if title else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(_tile(images[i]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_title(str(int(labels[i])), fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def export_npz(images: np.ndarray, labels: np.ndarray, path: str | os.PathLike, *,
               metadata: dict[str, Any]) -> Path:
    """Write ``images`` (float32 (N, H, W, C)), ``labels`` (int32 (N,)) and ``metadata`` (a JSON
    string under the key ``metadata``) to a compressed ``.npz`` readable with ``np.load``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, images=np.asarray(images, np.float32), labels=np.asarray(labels, np.int32),
                        metadata=np.asarray(json.dumps(metadata, sort_keys=True)))
    return path
