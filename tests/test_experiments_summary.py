"""experiments/paper/summarize.py: RESULTS.md cells, headline and paper gaps from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.paper import summarize


def _write_run(root: Path, table: str, name: str, *, dataset: str, model: str, transform: str,
               seed: int, optimizer: str, error_pct: float, steps: int = 2000) -> None:
    run = root / table / name
    run.mkdir(parents=True)
    config = {"dataset": dataset, "model": model, "transform": transform, "seed": seed,
              "optimizer": optimizer, "identity_penalty": 0.01 if optimizer == "adam" else 0.0,
              "steps": steps, "batch_size": 64}
    results = {"test_error_pct": error_pct, "test_error": error_pct / 100, "steps": steps,
               "batch_size": 64, "devices": 1, "device_kind": "cpu", "wall_time_s": 120.0,
               "images_per_s": 1000.0, "data": {"is_sample": False}, "config": config}
    (run / "results.json").write_text(json.dumps(results))
    rows = [{"step": 1000, "split": "val", "error": 2 * error_pct / 100},
            {"step": 2000, "split": "val", "error": error_pct / 100}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture
def runs(tmp_path, monkeypatch):
    monkeypatch.setattr(summarize, "RUNS_DIR", tmp_path)
    for seed, (cnn, st) in enumerate([(6.0, 4.0), (7.0, 5.0), (8.0, 3.0)]):
        _write_run(tmp_path, "table1", f"rts-cnn-s{seed}-adam", dataset="rts", model="cnn",
                   transform="affine", seed=seed, optimizer="adam", error_pct=cnn)
        _write_run(tmp_path, "table1", f"rts-st-cnn-affine-s{seed}-adam", dataset="rts", model="st-cnn",
                   transform="affine", seed=seed, optimizer="adam", error_pct=st)
    _write_run(tmp_path, "table1", "rts-fcn-s0", dataset="rts", model="fcn", transform="affine",
               seed=0, optimizer="sgd", error_pct=61.78)
    return tmp_path


def test_cells_group_seeds_and_recipes(runs):
    cells = summarize.group_cells(summarize.load_runs())
    budget = (2000, 64)
    assert len(cells[("table1", "rts", "cnn", None, "adam", budget)]) == 3
    assert len(cells[("table1", "rts", "st-cnn", "affine", "adam", budget)]) == 3
    assert [r["seed"] for r in cells[("table1", "rts", "fcn", None, "paper", budget)]] == [0]


def test_budgets_are_separate_cells_and_headline_rows(runs):
    for model, err in (("cnn", 3.0), ("st-cnn", 2.0)):
        _write_run(runs, "table1", f"rts-{model}-s0-adam-8k", dataset="rts", model=model, transform="affine",
                   seed=0, optimizer="adam", error_pct=err, steps=8000)
    cells = summarize.group_cells(summarize.load_runs())
    assert len(cells[("table1", "rts", "cnn", None, "adam", (8000, 64))]) == 1
    assert len(cells[("table1", "rts", "cnn", None, "adam", (2000, 64))]) == 3
    text = summarize.build()
    assert "| Table 1 RTS | adam | 3.00 (3.00) | 2.00 (2.00) | 0.8 / 0.5 | 8,000 × 64 |" in text
    assert "| RTS | CNN | adam | 3.00 | 0.8 | +2.20 |" in text


def test_results_markdown_has_mean_spread_paper_and_gap(runs):
    text = summarize.build()
    # CNN RTS: mean 7.00, sample std 1.00 over 3 seeds; paper 0.8 -> gap +6.20
    assert "| RTS | CNN | adam | 7.00 ± 1.00 (n=3) | 0.8 | +6.20 | 14.0 → 7.0 | 2,000 × 64 | 0,1,2 |" in text
    assert "| RTS | FCN | paper | 61.78 | 5.2 | +56.58 | 123.6 → 61.8 |" in text
    # headline row: CNN vs ST-CNN with per-seed values and the paper's pair
    assert "| Table 1 RTS | adam | 7.00 ± 1.00 (n=3) (6.00, 7.00, 8.00) | 4.00 ± 1.00 (n=3) (4.00, 5.00, 3.00) | 0.8 / 0.5 |" in text


def test_headline_omitted_without_a_cnn_partner(runs):
    for seed in range(3):
        for f in (runs / "table1" / f"rts-cnn-s{seed}-adam").iterdir():
            f.unlink()
        (runs / "table1" / f"rts-cnn-s{seed}-adam").rmdir()
    assert "## Headline" not in summarize.build()


def test_readme_section_is_generated_from_the_runs(runs, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- section:results -->\nold text\n<!-- /section:results -->\nrest\n")
    monkeypatch.setattr(summarize, "ROOT", tmp_path)
    summarize.update_readme(summarize.readme_section(summarize.group_cells(summarize.load_runs())))
    text = readme.read_text()
    assert "old text" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "| Table 1 RTS | adam | 7.00 ± 1.00 (n=3)" in text
    assert "2,000 steps × batch 64 on cpu" in text


def test_recipe_of_config():
    assert summarize.recipe_of({"optimizer": "sgd", "identity_penalty": 0.0}) == "paper"
    assert summarize.recipe_of({"optimizer": "adam", "identity_penalty": 0.01}) == "adam"
    assert summarize.recipe_of({"optimizer": "adam", "identity_penalty": 0.0}) == "adam-nopen"
    assert summarize.recipe_of({"optimizer": "adam", "identity_penalty": 0.01, "padding_mode": "border"}) == "adam-border"
    assert summarize.recipe_of({"optimizer": "adam", "identity_penalty": 0.01, "st_pool": 1}) == "adam-fullres"
