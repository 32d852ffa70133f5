"""experiments/figures/headline_figure.py: one curve per seed, test markers, legends clear of the curves."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.figures import headline_figure
from experiments.paper import summarize


def _run(root: Path, name: str, *, model: str, seed: int, val: list[float], test: float,
         recipe: str = "adam", steps: int = 1000, device_kind: str = "cpu") -> None:
    """A finished run of `steps` x 128 on RTS with validation errors `val` (fractions), evenly spaced."""
    run = root / "table1" / name
    run.mkdir(parents=True)
    config = {"dataset": "rts", "model": model, "transform": "affine", "seed": seed, "architecture": "paper",
              **summarize.recipe_settings(recipe), "steps": steps, "batch_size": 128}
    (run / "results.json").write_text(json.dumps({
        "test_error_pct": test, "steps": steps, "batch_size": 128, "config": config, "devices": 1,
        "device_kind": device_kind}))
    rows = [{"step": steps * (i + 1) // len(val), "split": "val", "error": e} for i, e in enumerate(val)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_figure_has_a_curve_per_seed_and_its_legend_below_the_panel(tmp_path, monkeypatch):
    monkeypatch.setattr(summarize, "RUNS_DIR", tmp_path)
    for seed in range(2):
        _run(tmp_path, f"rts-cnn-s{seed}", model="cnn", seed=seed, val=[0.1, 0.05, 0.03], test=3.0)
        _run(tmp_path, f"rts-st-cnn-affine-s{seed}", model="st-cnn", seed=seed, val=[0.1, 0.04, 0.02], test=2.0)
    fig = headline_figure.draw(summarize.group_cells(summarize.load_runs()), recipe="adam", architecture="paper")
    rts = fig.axes[0]
    curves = [line for line in rts.get_lines() if len(line.get_xdata()) == 3]
    assert len(curves) == 4                                          # 2 models x 2 seeds
    assert sorted(curves[0].get_xdata()) == [333 * 128, 666 * 128, 1000 * 128]  # images seen, not steps
    markers = [line for line in rts.get_lines() if line.get_marker() == "o"]
    assert sorted(float(m.get_ydata()[0]) for m in markers) == [2.0, 2.0, 3.0, 3.0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend, panel = rts.get_legend().get_window_extent(renderer), rts.get_window_extent(renderer)
    assert legend.y1 <= panel.y0                                     # entirely below the plotting area
    labels = [t.get_text() for t in rts.get_legend().get_texts()]
    assert "CNN val, 1,000 × 128 (n=2)" in labels and "paper ST-CNN (affine) (0.5%)" in labels


def test_an_st_recipe_is_drawn_with_the_cnn_it_is_compared_with(tmp_path, monkeypatch):
    """``adam-border`` ST-CNN runs are drawn beside the ``adam`` CNN runs, never beside ``adam-border`` ones."""
    monkeypatch.setattr(summarize, "RUNS_DIR", tmp_path)
    _run(tmp_path, "rts-cnn-s0", model="cnn", seed=0, val=[0.1, 0.05, 0.03], test=3.0)
    _run(tmp_path, "rts-st-cnn-affine-s0-adam-border", model="st-cnn", seed=0, val=[0.1, 0.04, 0.02], test=2.0,
         recipe="adam-border")
    _run(tmp_path, "rts-st-cnn-affine-s0", model="st-cnn", seed=0, val=[0.2, 0.1, 0.09], test=9.0)
    fig = headline_figure.draw(summarize.group_cells(summarize.load_runs()), recipe="adam-border",
                               architecture="paper")
    markers = [line for line in fig.axes[0].get_lines() if line.get_marker() == "o"]
    assert sorted(float(m.get_ydata()[0]) for m in markers) == [2.0, 3.0]
    assert "adam (CNN) / adam-border (ST-CNN)" in fig._suptitle.get_text()


def test_a_dataset_without_runs_gets_a_blank_panel_that_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(summarize, "RUNS_DIR", tmp_path)
    _run(tmp_path, "rts-cnn-s0", model="cnn", seed=0, val=[0.1, 0.05, 0.03], test=3.0)
    fig = headline_figure.draw(summarize.group_cells(summarize.load_runs()), recipe="adam", architecture="paper")
    tc = fig.axes[1]
    assert not tc.get_lines() and not tc.axison
    assert [t.get_text() for t in tc.texts] == ["TC: no runs with this recipe yet"]


def test_the_largest_budgets_of_one_device_are_drawn_largest_solid(tmp_path, monkeypatch):
    monkeypatch.setattr(summarize, "RUNS_DIR", tmp_path)
    for steps in (1000, 2000, 4000, 8000):
        _run(tmp_path, f"rts-st-cnn-affine-s0-{steps}", model="st-cnn", seed=0, val=[0.1, 0.05], test=8000 / steps,
             steps=steps)
    _run(tmp_path, "rts-st-cnn-affine-s0-gpu", model="st-cnn", seed=0, val=[0.1, 0.05], test=0.1, steps=16000,
         device_kind="NVIDIA H200")
    fig = headline_figure.draw(summarize.group_cells(summarize.load_runs()), recipe="adam", architecture="paper")
    curves = [line for line in fig.axes[0].get_lines() if len(line.get_xdata()) == 2 and line.get_linestyle() != "-."]
    assert [(int(c.get_xdata()[-1]) // 128, c.get_linestyle()) for c in curves] == [
        (8000, "-"), (4000, "--"), (2000, ":")]                     # the smallest budget and the GPU run left out
    assert "1× cpu" in fig._suptitle.get_text()
    gpu = headline_figure.draw(summarize.group_cells(summarize.load_runs()), recipe="adam", architecture="paper",
                               device="1× NVIDIA H200")
    markers = [line for line in gpu.axes[0].get_lines() if line.get_marker() == "o"]
    assert [float(m.get_ydata()[0]) for m in markers] == [0.1]
