"""experiments/paper/summarize.py: RESULTS.md cells, headline and paper gaps from run directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.paper import summarize

CPU = "1× cpu"


def _write_run(root: Path, table: str, name: str, *, dataset: str, model: str, transform: str,
               seed: int, optimizer: str, error_pct: float, steps: int = 2000, batch: int = 64,
               half_ratio: float = 2.0, architecture: str | None = None, recipe: str | None = None,
               device_kind: str = "cpu", distortion: str = "") -> None:
    """One run directory; its validation error at half the budget is `half_ratio` x the final one.
    Its recipe is `recipe`, else ``adam`` or ``paper`` by `optimizer`."""
    run = root / table / name
    run.mkdir(parents=True)
    config = {"dataset": dataset, "model": model, "transform": transform, "seed": seed,
              **summarize.recipe_settings(recipe or ("adam" if optimizer == "adam" else "paper")),
              "steps": steps, "batch_size": batch, "distortion": distortion}
    if architecture is not None:
        config["architecture"] = architecture
    results = {"test_error_pct": error_pct, "test_error": error_pct / 100, "steps": steps,
               "batch_size": batch, "devices": 1, "device_kind": device_kind,
               "platform": "cpu" if device_kind == "cpu" else "gpu", "machine": "x86_64", "cpu_count": 2, "wall_time_s": 120.0,
               "images_per_s": 1000.0, "data": {"is_sample": False}, "config": config}
    (run / "results.json").write_text(json.dumps(results))
    rows = [{"step": steps // 2, "split": "val", "error": half_ratio * error_pct / 100},
            {"step": steps, "split": "val", "error": error_pct / 100}]
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
    assert len(cells[("table1", "rts", "cnn", None, "adam", budget, "padded", CPU)]) == 3
    assert len(cells[("table1", "rts", "st-cnn", "affine", "adam", budget, "padded", CPU)]) == 3
    assert [r["seed"] for r in cells[("table1", "rts", "fcn", None, "paper", budget, "", CPU)]] == [0]


def test_budgets_are_separate_cells_and_only_converged_pairs_make_the_headline(runs):
    for model, err in (("cnn", 3.0), ("st-cnn", 2.0)):
        _write_run(runs, "table1", f"rts-{model}-s0-adam-8k", dataset="rts", model=model, transform="affine",
                   seed=0, optimizer="adam", error_pct=err, steps=8000, batch=256, half_ratio=1.02,
                   architecture="paper")
    cells = summarize.group_cells(summarize.load_runs())
    assert len(cells[("table1", "rts", "cnn", None, "adam", (8000, 256), "paper", CPU)]) == 1
    assert len(cells[("table1", "rts", "cnn", None, "adam", (2000, 64), "padded", CPU)]) == 3
    text = summarize.build()
    headline = text.split("## Headline")[1].split("\n## ")[0]
    assert ("| Table 1 RTS | adam | 3.00 (3.00) | 2.00 (2.00) | -1.00 | 0.8 / 0.5 | 8,000 × 256 / 8,000 × 256 | 0 / 0 |"
            in headline)
    assert "2,000 × 64" not in headline  # the 2k runs are not converged
    main, budget = text.split("## Budget runs (not converged)")
    assert "| RTS | CNN | adam | 3.00 | 0.8 | +2.20 | 3.1 → 3.0 | yes | 8,000 × 256 (2.05M) |" in main
    assert "| RTS | CNN (padded) | adam | 7.00 ± 1.00 (n=3) |" in budget


def test_results_markdown_has_mean_spread_paper_and_gap(runs):
    text = summarize.build()
    # CNN RTS: mean 7.00, sample std 1.00 over 3 seeds; paper 0.8 -> gap +6.20
    assert ("| RTS | CNN (padded) | adam | 7.00 ± 1.00 (n=3) | 0.8 | +6.20 | 14.0 → 7.0 | no | 2,000 × 64 (0.13M) "
            "| 0,1,2 |") in text
    assert "| RTS | FCN | paper | 61.78 | 5.2 | +56.58 | 123.6 → 61.8 | no |" in text
    assert "No converged pair of CNN and ST-CNN cells" in text


def test_headline_row_has_seeds_and_the_papers_pair(runs):
    for seed, (cnn, st) in enumerate([(6.0, 4.0), (7.0, 5.0), (8.0, 3.0)]):
        for model, err in (("cnn", cnn), ("st-cnn", st)):
            name = f"rts-{model}{'-affine' if model == 'st-cnn' else ''}-s{seed}-adam-long"
            _write_run(runs, "table1", name, dataset="rts", model=model, transform="affine", seed=seed,
                       optimizer="adam", error_pct=err, steps=4000, batch=256, half_ratio=1.01,
                       architecture="paper")
    text = summarize.build()
    assert ("| Table 1 RTS | adam | 7.00 ± 1.00 (n=3) (6.00, 7.00, 8.00) | 4.00 ± 1.00 (n=3) (4.00, 5.00, 3.00) "
            "| -3.00 | 0.8 / 0.5 | 4,000 × 256 / 4,000 × 256 | 0,1,2 / 0,1,2 | 1× cpu |") in text


def test_headline_shows_each_seeds_longest_converged_run(runs):
    """The CNN converged at 4k steps, the ST-CNN needs 8k; seed 0 of the CNN also converged at 8k,
    which replaces its 4k run, and the unconverged 2k x 64 cells never appear."""
    common = dict(transform="affine", optimizer="adam", batch=256, half_ratio=1.01, architecture="paper")
    for seed in range(3):
        _write_run(runs, "table1", f"rts-cnn-s{seed}-adam-4k", dataset="rts", model="cnn", seed=seed,
                   error_pct=2.0 + seed / 10, steps=4000, **common)
        _write_run(runs, "table1", f"rts-st-cnn-affine-s{seed}-adam-8k", dataset="rts", model="st-cnn",
                   seed=seed, error_pct=1.5, steps=8000, **common)
    _write_run(runs, "table1", "rts-cnn-s0-adam-8k", dataset="rts", model="cnn", seed=0, error_pct=1.95,
               steps=8000, **common)   # level with 4k (within 5%): else it would refute seed 0's 4k run
    headline = summarize.build().split("## Headline")[1].split("\n## ")[0]
    rows = [line for line in headline.splitlines() if line.startswith("| Table 1")]
    assert rows == ["| Table 1 RTS | adam | 2.08 ± 0.13 (n=3) (1.95, 2.10, 2.20) | 1.50 ± 0.00 (n=3) (1.50, 1.50, 1.50) "
                    "| -0.58 | 0.8 / 0.5 | 4,000 × 256 (seeds 1,2), 8,000 × 256 (seed 0) / 8,000 × 256 "
                    "| 0,1,2 / 0,1,2 | 1× cpu |"]
    readme = summarize.readme_section(summarize.group_cells(summarize.load_runs()))
    assert readme.count(summarize.HEADLINE_HEADER[0]) == 1 and rows[0] in readme


def test_headline_names_seeds_that_have_not_converged(runs):
    """A seed whose only run is still improving is left out of the mean and named; once a longer run
    of it converges, that run joins the cell."""
    common = dict(transform="affine", optimizer="adam", batch=256, architecture="paper")
    for seed in range(3):
        _write_run(runs, "table1", f"rts-cnn-s{seed}-adam-4k", dataset="rts", model="cnn", seed=seed,
                   error_pct=2.0, steps=4000, half_ratio=1.01, **common)
        _write_run(runs, "table1", f"rts-st-cnn-affine-s{seed}-adam-4k", dataset="rts", model="st-cnn",
                   seed=seed, error_pct=1.0 + seed / 10, steps=4000, half_ratio=1.01 if seed != 1 else 1.5,
                   **common)
    headline = summarize.build().split("## Headline")[1].split("\n## ")[0]
    rows = [line for line in headline.splitlines() if line.startswith("| Table 1")]
    assert rows == ["| Table 1 RTS | adam | 2.00 ± 0.00 (n=3) (2.00, 2.00, 2.00) | 1.10 ± 0.14 (n=2) (1.00, 1.20) "
                    "| -0.90 | 0.8 / 0.5 | 4,000 × 256 / 4,000 × 256 "
                    "| 0,1,2 / 0,2 (not converged yet: seed 1) | 1× cpu |"]
    readme = summarize.readme_section(summarize.group_cells(summarize.load_runs()))
    assert ("| RTS | ST-CNN Aff | adam | 1.10 ± 0.14 (n=2) | 0.5 | +0.60 | 4,000 × 256 | 0,2 (not yet: seed 1) "
            "| 1× cpu |") in readme   # the README's table shows the converged runs the headline shows
    _write_run(runs, "table1", "rts-st-cnn-affine-s1-adam-8k", dataset="rts", model="st-cnn", seed=1,
               error_pct=0.9, steps=8000, half_ratio=1.2, **common)   # (b): 1.10 -> 0.90, still improving
    headline = summarize.build().split("## Headline")[1].split("\n## ")[0]
    assert "| 0,1,2 / 0,2 (not converged yet: seed 1) |" in headline
    _write_run(runs, "table1", "rts-st-cnn-affine-s1-adam-16k", dataset="rts", model="st-cnn", seed=1,
               error_pct=0.88, steps=16000, half_ratio=1.2, **common)  # (b): 0.90 -> 0.88, converged
    headline = summarize.build().split("## Headline")[1].split("\n## ")[0]
    assert ("| 1.03 ± 0.16 (n=3) (1.00, 0.88, 1.20) | -0.97 | 0.8 / 0.5 | 4,000 × 256 / "
            "4,000 × 256 (seeds 0,2), 16,000 × 256 (seed 1) | 0,1,2 / 0,1,2 | 1× cpu |") in headline
    readme = summarize.readme_section(summarize.group_cells(summarize.load_runs()))
    assert ("| RTS | ST-CNN Aff | adam | 1.03 ± 0.16 (n=3) | 0.5 | +0.53 | 4,000 × 256 (seeds 0,2), "
            "16,000 × 256 (seed 1) | 0,1,2 | 1× cpu |") in readme


def test_headline_pairs_an_st_recipe_with_the_cnn_recipe_it_is_compared_with(runs):
    """``adam-border`` changes only the sampler's padding, so its ST-CNN is compared with the ``adam`` CNN
    and the row names both recipes; a recipe without a CNN partner makes no row."""
    common = dict(transform="affine", optimizer="adam", batch=256, half_ratio=1.01, architecture="paper")
    for seed in range(3):
        _write_run(runs, "table1", f"rts-cnn-s{seed}-adam-4k", dataset="rts", model="cnn", seed=seed,
                   error_pct=2.0, steps=4000, **common)
        _write_run(runs, "table1", f"rts-st-cnn-affine-s{seed}-adam-border-4k", dataset="rts", model="st-cnn",
                   seed=seed, error_pct=1.0, steps=4000, recipe="adam-border", **common)
        _write_run(runs, "table1", f"rts-st-cnn-affine-s{seed}-adam-tuned-4k", dataset="rts", model="st-cnn",
                   seed=seed, error_pct=0.5, steps=4000, recipe="adam-tuned", **common)
    assert summarize.cnn_recipe("adam-border") == "adam" and summarize.cnn_recipe("adam-tuned") == "adam-tuned"
    headline = summarize.build().split("## Headline")[1].split("\n## ")[0]
    rows = [line for line in headline.splitlines() if line.startswith("| Table 1")]
    assert rows == ["| Table 1 RTS | adam / adam-border | 2.00 ± 0.00 (n=3) (2.00, 2.00, 2.00) | 1.00 ± 0.00 (n=3) "
                    "(1.00, 1.00, 1.00) | -1.00 | 0.8 / 0.5 | 4,000 × 256 / 4,000 × 256 | 0,1,2 / 0,1,2 | 1× cpu |"]


def test_convergence_rule(runs):
    def run(steps, batch, half, end):
        d = runs / "x" / f"r{steps}-{batch}-{half}"
        d.mkdir(parents=True)
        rows = [{"step": steps // 4, "split": "val", "error": 0.5}, {"step": steps // 2, "split": "val", "error": half},
                {"step": steps, "split": "val", "error": end}]
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return {"dir": d, "results": {"steps": steps, "batch_size": batch}}

    assert summarize.converged(run(2000, 256, 0.0204, 0.02))        # 2% over the second half, 512k images
    assert not summarize.converged(run(2000, 256, 0.0260, 0.02))    # 30%, 3 standard errors: still improving
    assert not summarize.converged(run(2000, 64, 0.0200, 0.02))     # flat, but only 128k images
    # Within one standard error of 5,000 validation images (0.14 points at 1%): noise, not progress.
    assert summarize.converged(run(2000, 256, 0.0110, 0.01))
    assert not summarize.converged(run(2000, 256, 0.0116, 0.01))
    # Above 50% error the tolerance is 5% of the accuracy: 84.3 -> 80.2 is 4.1 points, within 5% of
    # the error (4.2) but five times 5% of the accuracy (0.8): still learning.
    assert not summarize.converged(run(2000, 256, 0.843, 0.802))
    assert summarize.converged(run(2000, 256, 0.8435, 0.839))


def test_convergence_across_budgets_compares_final_validation_errors(runs):
    """Part (b): a cosine run still falling within itself is converged when the same cell and seed at
    a quarter to half the images ended less than 5% / one standard error above it, or below it;
    never below 500k images."""
    common = dict(dataset="rts", model="cnn", transform="affine", optimizer="adam", architecture="paper")
    _write_run(runs, "table1", "rts-cnn-s0-adam-4k", seed=0, error_pct=2.00, steps=4000, batch=128, **common)
    _write_run(runs, "table1", "rts-cnn-s0-adam-8k", seed=0, error_pct=1.95, steps=8000, batch=128, **common)
    _write_run(runs, "table1", "rts-cnn-s1-adam-4k", seed=1, error_pct=2.00, steps=4000, batch=128, **common)
    _write_run(runs, "table1", "rts-cnn-s1-adam-8k", seed=1, error_pct=1.60, steps=8000, batch=128, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    long0, long1, short0 = by_name["rts-cnn-s0-adam-8k"], by_name["rts-cnn-s1-adam-8k"], by_name["rts-cnn-s0-adam-4k"]
    assert long0["half_budget_run"]["name"] == "rts-cnn-s0-adam-4k"   # same seed, not seed 1's
    assert short0["half_budget_run"] is None                           # 2k x 64 = 128k is padded-architecture
    assert not summarize.converged_within_run(long0)                   # 2x over its second half
    assert summarize.converged_across_budgets(long0) and summarize.converged(long0)   # 2.00 -> 1.95: 2.5%
    assert not summarize.converged_across_budgets(long1) and not summarize.converged(long1)  # 2.00 -> 1.60: 20%
    cell = summarize.group_cells(list(by_name.values()))[("table1", "rts", "cnn", None, "adam", (8000, 128), "paper", CPU)]
    assert summarize._convergence_flag(cell) == "no (after 0.51M images: 2.00 → 1.77)"
    assert summarize._convergence_flag([long0]) == "yes (after 0.51M images: 2.00 → 1.95)"
    # The shorter run below 500k images may be the reference, but a long run needs 500k itself.
    _write_run(runs, "table1", "rts-cnn-s0-adam-1k", seed=0, error_pct=2.00, steps=1000, batch=128, **common)
    _write_run(runs, "table1", "rts-cnn-s0-adam-2k", seed=0, error_pct=2.00, steps=2000, batch=128, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    assert summarize.converged_across_budgets(by_name["rts-cnn-s0-adam-2k"])
    assert not summarize.converged(by_name["rts-cnn-s0-adam-2k"])                # 256k images
    assert by_name["rts-cnn-s0-adam-8k"]["half_budget_run"]["name"] == "rts-cnn-s0-adam-4k"  # the longest one
    _write_run(runs, "table1", "rts-cnn-s3-adam-4k", seed=3, error_pct=1.60, steps=4000, batch=128, **common)
    _write_run(runs, "table1", "rts-cnn-s3-adam-8k", seed=3, error_pct=2.00, steps=8000, batch=128, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    assert summarize.converged_across_budgets(by_name["rts-cnn-s3-adam-8k"])   # 1.60 -> 2.00: no progress
    _write_run(runs, "table1", "rts-cnn-s2-adam-1k", seed=2, error_pct=2.00, steps=1000, batch=128, **common)
    _write_run(runs, "table1", "rts-cnn-s2-adam-8k", seed=2, error_pct=2.00, steps=8000, batch=128, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    assert by_name["rts-cnn-s2-adam-8k"]["half_budget_run"] is None    # 1/8 of the images: too far apart



def test_a_longer_run_that_improves_on_a_run_refutes_its_convergence(runs):
    """Part (c): whatever (a) and (b) say, a run is not converged when a longer run of the same
    cell and seed ended lower by the tolerance or more; a longer run that ends level or higher,
    another seed's or another recipe's run, changes nothing."""
    common = dict(dataset="addition", model="fcn", transform="affine", architecture="paper")
    # 84.3 -> 83.9 over the second half: within 5% of the accuracy (0.8 points), so (a) passes on its own.
    _write_run(runs, "addition", "addition-fcn-s0-1m", seed=0, optimizer="adam", error_pct=83.9, steps=8000,
               batch=128, half_ratio=84.3 / 83.9, **common)
    _write_run(runs, "addition", "addition-fcn-s1-1m", seed=1, optimizer="adam", error_pct=83.9, steps=8000,
               batch=128, half_ratio=84.3 / 83.9, **common)
    _write_run(runs, "addition", "addition-fcn-s1-4m", seed=1, optimizer="adam", error_pct=83.5, steps=32000,
               batch=128, half_ratio=1.5, **common)
    _write_run(runs, "addition", "addition-fcn-s0-paper-4m", seed=0, optimizer="sgd", error_pct=60.0,
               steps=32000, batch=128, half_ratio=1.5, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    assert summarize.converged(by_name["addition-fcn-s0-1m"])            # no longer adam run of seed 0
    assert summarize.converged(by_name["addition-fcn-s1-1m"])            # 83.9 -> 83.5: within 5% of the accuracy
    _write_run(runs, "addition", "addition-fcn-s0-4m", seed=0, optimizer="adam", error_pct=69.0, steps=32000,
               batch=128, half_ratio=1.5, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    short = by_name["addition-fcn-s0-1m"]
    assert summarize.converged_within_run(short)
    assert summarize.improved_by_longer_run(short)["name"] == "addition-fcn-s0-4m"
    assert not summarize.converged(short)
    assert summarize.converged(by_name["addition-fcn-s1-1m"])            # seed 0's run is no evidence for seed 1
    assert summarize._convergence_flag([short]) == \
        "no (a longer run improved on it: 83.90 → 69.00 at 4.10M images)"
    _write_run(runs, "addition", "addition-fcn-s0-8m", seed=0, optimizer="adam", error_pct=90.0, steps=64000,
               batch=128, half_ratio=1.0, **common)
    by_name = {run["name"]: run for run in summarize.load_runs()}
    assert [r["name"] for r in by_name["addition-fcn-s0-1m"]["longer_runs"]] == [
        "addition-fcn-s0-4m", "addition-fcn-s0-8m"]                       # shortest first
    assert summarize.improved_by_longer_run(by_name["addition-fcn-s0-4m"]) is None   # 8M ended higher

def test_fcn_width_runs_are_their_own_cells(runs):
    _write_run(runs, "table1", "rts-fcn-s0-adam-w1024", dataset="rts", model="fcn", transform="affine",
               seed=0, optimizer="adam", error_pct=4.0)
    path = runs / "table1" / "rts-fcn-s0-adam-w1024" / "results.json"
    results = json.loads(path.read_text())
    results["config"]["fcn_width"] = 1024
    path.write_text(json.dumps(results))
    _write_run(runs, "table1", "rts-fcn-s0-adam", dataset="rts", model="fcn", transform="affine",
               seed=0, optimizer="adam", error_pct=9.0)
    cells = summarize.group_cells(summarize.load_runs())
    assert [r["name"] for r in cells[("table1", "rts", "fcn", None, "adam", (2000, 64), "width 1024", CPU)]] == \
        ["rts-fcn-s0-adam-w1024"]
    assert [r["name"] for r in cells[("table1", "rts", "fcn", None, "adam", (2000, 64), "", CPU)]] == ["rts-fcn-s0-adam"]
    text = summarize.build()
    assert "| RTS | FCN (2×1024) | adam | 4.00 |" in text and "| RTS | FCN | adam | 9.00 |" in text


def test_headline_omitted_without_a_cnn_partner(runs):
    _write_run(runs, "table1", "rts-st-cnn-affine-s0-adam-long", dataset="rts", model="st-cnn", transform="affine",
               seed=0, optimizer="adam", error_pct=1.0, steps=4000, batch=256, half_ratio=1.01, architecture="paper")
    assert "No converged pair of CNN and ST-CNN cells" in summarize.build()


def test_readme_section_is_generated_from_the_runs(runs, tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- section:results -->\nold text\n<!-- /section:results -->\nrest\n")
    monkeypatch.setattr(summarize, "ROOT", tmp_path)
    summarize.update_readme(summarize.readme_section(summarize.group_cells(summarize.load_runs())))
    text = readme.read_text()
    assert "old text" not in text and text.startswith("intro\n") and text.endswith("rest\n")
    assert "No converged pair" in text


def test_recipe_of_config():
    adam = {"optimizer": "adam", "lr": 0.001, "schedule": "cosine", "clip_norm": 1.0, "identity_penalty": 0.01}
    assert summarize.recipe_of({"optimizer": "sgd", "identity_penalty": 0.0}) == "paper"
    assert summarize.recipe_of(adam) == "adam"
    assert summarize.recipe_of({**adam, "identity_penalty": 0.0}) == "adam-nopen"
    assert summarize.recipe_of({**adam, "padding_mode": "border"}) == "adam-border"
    assert summarize.recipe_of({**adam, "st_pool": 1}) == "adam-fullres"
    # Any option off its recipe makes the run "custom", never a recipe it does not follow.
    assert summarize.recipe_of({**adam, "lr": 0.003}) == "custom"
    assert summarize.recipe_of({"optimizer": "sgd", "lr": 0.1}) == "custom"
    for name in summarize._RECIPES:
        assert summarize.recipe_of(summarize.recipe_settings(name)) == name

def test_runs_on_another_device_are_their_own_cells_and_headline_rows(runs):
    for seed, (cnn, st) in enumerate([(2.0, 1.0), (2.2, 1.1), (2.4, 0.9)]):
        for model, transform, err in (("cnn", None, cnn), ("st-cnn", "affine", st)):
            name = f"rts-{model}{'-affine' if transform else ''}-s{seed}-adam-h200"
            _write_run(runs, "table1", name, dataset="rts", model=model, transform=transform or "affine",
                       seed=seed, optimizer="adam", error_pct=err, half_ratio=1.0, device_kind="NVIDIA H200",
                       steps=8000)
    all_runs = summarize.load_runs()
    cells = summarize.group_cells(all_runs)
    budget = (2000, 64)
    assert len(cells[("table1", "rts", "cnn", None, "adam", budget, "padded", CPU)]) == 3
    gpu = cells[("table1", "rts", "cnn", None, "adam", (8000, 64), "padded", "1× NVIDIA H200")]
    assert [r["seed"] for r in gpu] == [0, 1, 2]
    rows = [line for line in summarize.headline(cells) if line.startswith("| Table 1 RTS")]
    assert len(rows) == 1 and rows[0].endswith("| 1× NVIDIA H200 |")  # the CPU cells never converged
    assert "2-core x86_64 with 1× NVIDIA H200" in summarize.build(all_runs)


def test_distortion_studies_are_listed_apart_from_the_cells(runs):
    for steps, err in ((4000, 5.0), (8000, 4.9)):
        _write_run(runs, "table1", f"p-fcn-s0-sigma3-{steps}", dataset="p", model="fcn", transform="affine", seed=0,
                   optimizer="adam", error_pct=err, steps=steps, batch=128, distortion="sigma=3")
    _write_run(runs, "table1", "p-fcn-s0-4000", dataset="p", model="fcn", transform="affine", seed=0,
               optimizer="adam", error_pct=9.0, steps=4000, batch=128)
    all_runs = summarize.load_runs()
    long = next(r for r in all_runs if r["name"] == "p-fcn-s0-sigma3-8000")
    assert long["half_budget_run"]["name"] == "p-fcn-s0-sigma3-4000"   # never the paper-distortion run
    text = summarize.build(all_runs)
    studies = text.split("## Distortion studies")[1]
    rows = [line for line in studies.splitlines() if line.startswith("| P ")]
    assert rows == [
        "| P | FCN | `sigma=3` | adam | 5.00 | 10.0 → 5.0 | no | 4,000 × 128 (0.51M) | 1× cpu | `table1/p-fcn-s0-sigma3-4000` |",
        "| P | FCN | `sigma=3` | adam | 4.90 | 9.8 → 4.9 | yes | 8,000 × 128 (1.02M) | 1× cpu | `table1/p-fcn-s0-sigma3-8000` |"]
    cells = text.split("## Distortion studies")[0]
    assert "sigma" not in cells and "| P | FCN | adam | 9.00 |" in cells


def _load(name: str) -> dict:
    return {r["name"]: r for r in summarize.load_runs()}[name]


def test_train_time_of_a_resumed_run_sums_its_segments(runs):
    """A run continued twice with --resume: its time is the last segment's wall time plus the span of
    each earlier segment's records (split at the steps train.log names); a run that records its
    total keeps that; a resumed run without train.log has no known time."""
    _write_run(runs, "table1", "rts-cnn-s0-adam-long", dataset="rts", model="cnn", transform="affine", seed=0,
               optimizer="adam", error_pct=2.0, steps=9000, batch=64, half_ratio=1.01)
    run_dir = runs / "table1" / "rts-cnn-s0-adam-long"
    results = json.loads((run_dir / "results.json").read_text())
    (run_dir / "results.json").write_text(json.dumps({**results, "start_step": 6000, "wall_time_s": 100.0}))
    # segment 1: steps 1-3000 over 600 s; segment 2: 3001-6000 over 300 s (a 5-hour pause between)
    rows = [{"step": 1000, "split": "train", "time": 0.0}, {"step": 3000, "split": "val", "error": 0.03, "time": 600.0},
            {"step": 4000, "split": "train", "time": 18600.0}, {"step": 6000, "split": "train", "time": 18900.0},
            {"step": 9000, "split": "val", "error": 0.02, "time": 30000.0}]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "train.log").write_text("interrupted\nresuming from ck/3000 (step 3000)\n"
                                       "resuming from ck/6000 (step 6000)\ntest error: 2.00%\n")
    assert summarize.run_wall_time_s(_load(run_dir.name)) == pytest.approx(100.0 + 600.0 + 300.0)
    assert "| 0 | 1× cpu | 16.7 min | 1,000 |" in summarize.build()
    (run_dir / "train.log").unlink()
    assert summarize.run_wall_time_s(_load(run_dir.name)) is None
    (run_dir / "results.json").write_text(json.dumps({**results, "start_step": 6000, "wall_time_s": 100.0,
                                                      "total_wall_time_s": 1234.0}))
    assert summarize.run_wall_time_s(_load(run_dir.name)) == 1234.0
    assert summarize.run_wall_time_s(_load("rts-fcn-s0")) == 120.0   # one segment: its wall time
