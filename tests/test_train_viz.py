"""Figures: grid-to-pixel conversion and that both plots are written."""

from __future__ import annotations

import numpy as np
import pytest

from stn_jax import identity_grid, viz


@pytest.mark.parametrize("align_corners", [False, True])
def test_identity_grid_maps_to_pixel_centres(align_corners):
    grid = np.asarray(identity_grid((5, 7), align_corners=align_corners))
    px = viz.grid_to_pixels(grid, (5, 7), align_corners=align_corners)
    cols, rows = np.meshgrid(np.arange(7), np.arange(5))
    np.testing.assert_allclose(px[..., 0], cols, atol=1e-5)
    np.testing.assert_allclose(px[..., 1], rows, atol=1e-5)


def test_plots_written(tmp_path):
    records = [{"step": s, "split": "train", "loss": 2.0 / s, "error": 0.5 / s} for s in (1, 2, 3)]
    records += [{"step": 3, "split": "val", "loss": 0.5, "error": 0.1},
                {"step": 3, "split": "test", "loss": 0.6, "error": 0.12}]
    curves = viz.plot_learning_curves(records, tmp_path / "c.png", title="t")
    images = np.random.default_rng(0).random((3, 9, 9, 1)).astype(np.float32)
    grid = 0.5 * np.asarray(identity_grid((9, 9)))[None].repeat(3, 0)
    panel = viz.plot_transformer_panel(images, [{"kind": "affine", "grid": grid, "warped": images}],
                                       tmp_path / "p.png", labels=np.arange(3), predictions=np.arange(3))
    for path in (curves, panel):
        assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
